// End-to-end: simulcast. A publisher sends its fake 1280x720 camera as three layers (rid q,
// h, f = 320x180, 640x360, 1280x720); a subscriber pins it to low, high, low with
// window.switchyard.setQuality and must see the resolution it decodes follow within 2 s,
// without the video stopping; then hands it back to the tile size (setAutoQuality).
//
//   cd web/e2e && npm ci && node --test simulcast.test.mjs
//
// Environment: see helpers.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Meeting, inboundVideoOf, sleep } from './helpers.mjs';

const MEDIA_DEADLINE_MS = 30_000;
const SWITCH_DEADLINE_MS = 2_000; // strict: the figure under test
const SWITCH_POLL_MS = 200;
const HOLD_MS = 1_500; // after a switch: keep watching that video flows at the new layer
const MAX_STALL_MS = 1_000; // longest time without a newly decoded frame that counts as "rising"
// Frames a second each layer must encode before the tests pin layers: well above the
// server's live rule (3 frames within its 750 ms layer timeout).
const STEADY_FPS = 10;

// What the publisher's encodings give for the fake camera's 1280x720.
const LAYERS = { low: { rid: 'q', width: 320 }, medium: { rid: 'h', width: 640 }, high: { rid: 'f', width: 1280 } };

const meeting = new Meeting(['publisher', 'subscriber']);
const publisher = meeting.byName('publisher');
const subscriber = meeting.byName('subscriber');
let flowing = false;

before(() => meeting.start());
after(() => meeting.stop());

/** In the subscriber's page: the inbound video of participant `pid`, condensed. */
const inboundVideo = (pid) => inboundVideoOf(subscriber, pid);

/** In the publisher's page: its video outbound-rtp per rid. */
function outboundByRid() {
  return publisher.page.evaluate(async () => {
    const pc = window.switchyard.publisherConnection;
    const report = await pc.getStats();
    const out = {};
    for (const s of report.values()) {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') continue;
      out[s.rid ?? '-'] = {
        active: s.active,
        packetsSent: s.packetsSent ?? 0,
        framesEncoded: s.framesEncoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        qualityLimitationReason: s.qualityLimitationReason,
      };
    }
    return out;
  });
}

const fmtRids = (o) => Object.entries(o)
  .map(([rid, s]) => `${rid}:${s.frameWidth}x${s.frameHeight} ${s.framesEncoded} frames${s.qualityLimitationReason && s.qualityLimitationReason !== 'none' ? ` (limited: ${s.qualityLimitationReason})` : ''}`)
  .join(', ');

test('the publisher sends three simulcast layers and the subscriber decodes one', { timeout: 90_000 }, async (t) => {
  await meeting.step(async () => {
    await publisher.join();
    await subscriber.join();

    await meeting.eventually('the subscriber decodes the publisher\'s video', MEDIA_DEADLINE_MS, async () => {
      const v = await inboundVideo(publisher.participantId);
      if (!v) return 'no inbound video from the publisher yet';
      if (!(v.framesDecoded > 0 && v.frameWidth > 0)) return `framesDecoded=${v.framesDecoded} frameWidth=${v.frameWidth}`;
      return null;
    });

    // The room's view of the camera: three layers, lowest first.
    const view = await subscriber.page.evaluate((pid) => window.switchyard.getParticipant(pid)
      ?.tracks.filter((x) => x.kind === 'video'), publisher.participantId);
    assert.equal(view?.length, 1, `the subscriber sees video tracks ${JSON.stringify(view)}`);
    assert.deepEqual(view[0].layers, [
      { quality: 'low', rid: 'q' }, { quality: 'medium', rid: 'h' }, { quality: 'high', rid: 'f' },
    ], 'track_published layers');

    // The publisher sends all three rids steadily: each encodes at least STEADY_FPS frames a
    // second. Chrome turns the top layer on only once its bandwidth estimate (fed by the
    // server's transport-cc feedback) has ramped up past the lower layers' bitrates, a few
    // seconds after the start: until then rid f reports "limited: bandwidth" and sends
    // padding, or a frame now and then, which the server rightly counts as not live (a
    // subscriber pinned to it would get the best live layer instead).
    let previous = await outboundByRid();
    const rampMs = await meeting.eventually('the publisher sends all three rids', MEDIA_DEADLINE_MS, async () => {
      await sleep(1_000);
      const now = await outboundByRid();
      const problems = [];
      for (const rid of ['q', 'h', 'f']) {
        const [a, b] = [previous[rid], now[rid]];
        if (!a || !b) problems.push(`no outbound-rtp for rid ${rid}`);
        else if (!(b.packetsSent > a.packetsSent && b.framesEncoded - a.framesEncoded >= STEADY_FPS)) {
          problems.push(`rid ${rid} sent ${b.packetsSent - a.packetsSent} packets, ${b.framesEncoded - a.framesEncoded} frames in 1 s`);
        }
      }
      previous = now;
      return problems.length ? `${problems.join(', ')} (${fmtRids(now)})` : null;
    });
    t.diagnostic(`publisher sends ${fmtRids(previous)} (all three after ${rampMs} ms more)`);
    const v = await inboundVideo(publisher.participantId);
    t.diagnostic(`subscriber decodes ${v.frameWidth}x${v.frameHeight} before pinning (the first layer, or already the one its tile size asked for)`);
    flowing = true;
  });
});

test('pinning low, high, low switches the forwarded layer within 2 s each', { timeout: 120_000 }, async (t) => {
  assert.ok(flowing, 'video never flowed (see the first test): nothing to switch');
  await meeting.step(async () => {
    const pid = publisher.participantId;
    const seen = {}; // quality -> width decoded
    const deviations = [];
    let totalStart = await inboundVideo(pid);

    for (const quality of ['low', 'high', 'low']) {
      const exact = LAYERS[quality].width;
      const rid = LAYERS[quality].rid;
      const before = await inboundVideo(pid);
      let lastFrames = before.framesDecoded;
      let lastFrameAt = Date.now();
      let maxStall = 0;
      const trace = [];

      // Watches one sample: tracks how long frames stopped coming.
      const observe = (v) => {
        const now = Date.now();
        if (v.framesDecoded > lastFrames) {
          lastFrames = v.framesDecoded;
          lastFrameAt = now;
        }
        maxStall = Math.max(maxStall, now - lastFrameAt);
      };

      const trackId = await subscriber.page.evaluate(([p, q]) => window.switchyard.setQuality(p, q), [pid, quality]);
      const start = Date.now();
      let elapsed = null;
      let matched = null;
      let publisherWidth = null;
      while (Date.now() - start <= SWITCH_DEADLINE_MS) {
        const v = await inboundVideo(pid);
        const at = Date.now() - start;
        observe(v);
        trace.push(`${at}ms:${v.frameWidth}`);
        if (v.frameWidth === exact) {
          elapsed = at;
          matched = v.frameWidth;
          break;
        }
        // The encoder may scale the camera down under CPU load (qualityLimitationReason
        // "cpu"); then the layer is smaller than the figures above, and what counts is
        // that the subscriber gets the layer the publisher sends for that rid right now.
        const out = (await outboundByRid())[rid];
        if (out && out.frameWidth > 0 && out.frameWidth !== exact && v.frameWidth === out.frameWidth) {
          elapsed = at;
          matched = v.frameWidth;
          publisherWidth = `${out.frameWidth}x${out.frameHeight} (${out.qualityLimitationReason})`;
          break;
        }
        await sleep(SWITCH_POLL_MS);
      }
      t.diagnostic(`switch to ${quality} (track ${trackId}): ${elapsed == null ? `not within ${SWITCH_DEADLINE_MS} ms` : `${elapsed} ms`}, `
        + `${before.frameWidth} -> ${matched ?? '?'} px wide [${trace.join(' ')}]`);
      assert.ok(elapsed != null,
        `after setQuality("${quality}") the subscriber did not decode ${exact} px wide frames within ${SWITCH_DEADLINE_MS} ms: ${trace.join(' ')}`
        + ` (publisher: ${fmtRids(await outboundByRid())})`);
      if (publisherWidth) deviations.push(`${quality}: publisher's rid ${rid} was ${publisherWidth}, not ${exact} wide`);
      seen[quality] = matched;

      // Stay a while: frames keep coming at the new layer.
      const holdStart = Date.now();
      while (Date.now() - holdStart < HOLD_MS) {
        await sleep(SWITCH_POLL_MS);
        const v = await inboundVideo(pid);
        observe(v);
        assert.equal(v.frameWidth, matched, `${quality}: the width changed back to ${v.frameWidth} after the switch`);
      }
      const after = await inboundVideo(pid);
      t.diagnostic(`  ${quality}: ${after.framesDecoded - before.framesDecoded} frames decoded over the switch, `
        + `longest stall ${maxStall} ms, freezes ${before.freezeCount} -> ${after.freezeCount}, `
        + `keyframes ${before.keyFramesDecoded} -> ${after.keyFramesDecoded}`);
      assert.ok(after.framesDecoded > before.framesDecoded, `${quality}: framesDecoded stuck at ${after.framesDecoded}`);
      assert.ok(maxStall < MAX_STALL_MS, `${quality}: no frame decoded for ${maxStall} ms around the switch`);
      assert.ok(after.freezeCount - before.freezeCount <= 1,
        `${quality}: freezeCount rose ${before.freezeCount} -> ${after.freezeCount} (more than one freeze per switch)`);
    }

    const end = await inboundVideo(pid);
    assert.ok(end.freezeCount - totalStart.freezeCount <= 3, `freezeCount over 3 switches: ${totalStart.freezeCount} -> ${end.freezeCount}`);
    if (deviations.length) {
      // The exact figures (320, 1280) were not what the encoder produced: at least the
      // layers must be distinct, the high one twice the low one's width or more.
      t.diagnostic(`encoder adapted resolution: ${deviations.join('; ')}; seen ${JSON.stringify(seen)}`);
      assert.ok(seen.high >= 2 * seen.low, `high layer ${seen.high} px is not at least twice the low layer's ${seen.low} px`);
    } else {
      assert.deepEqual(seen, { low: 320, high: 1280 });
    }
    await subscriber.screenshot('simulcast-subscriber');
  });
});

test('back on automatic quality, the layer follows the tile size', { timeout: 90_000 }, async (t) => {
  assert.ok(flowing, 'video never flowed (see the first test): nothing to switch');
  await meeting.step(async () => {
    const pid = publisher.participantId;
    // The layer the server should pick: the smallest whose size covers the tile (in device
    // pixels), else the largest.
    const expectedWidth = async () => {
      const tile = await subscriber.page.evaluate((p) => {
        const el = document.querySelector(`.tile[data-participant-id="${p}"] video`);
        const r = el.getBoundingClientRect();
        const dpr = window.devicePixelRatio || 1;
        return { width: Math.round(r.width * dpr), height: Math.round(r.height * dpr) };
      }, pid);
      const sizes = [[320, 180], [640, 360], [1280, 720]];
      const layer = sizes.find(([w, h]) => w >= tile.width && h >= tile.height) ?? sizes[sizes.length - 1];
      return { tile, width: layer[0] };
    };
    const waitFor = async (what) => {
      const want = await expectedWidth();
      const ms = await meeting.eventually(what, 10_000, async () => {
        const v = await inboundVideo(pid);
        return v.frameWidth === want.width ? null : `decoding ${v.frameWidth} px wide, want ${want.width} for a ${want.tile.width}x${want.tile.height} tile`;
      }, SWITCH_POLL_MS);
      t.diagnostic(`${what}: tile ${want.tile.width}x${want.tile.height} -> ${want.width} px wide layer in ${ms} ms`);
    };

    await subscriber.page.evaluate((p) => window.switchyard.setAutoQuality(p), pid);
    await waitFor('auto quality again');
    const pinned = await subscriber.page.evaluate(() => window.switchyard.subscriptions().filter((s) => s.pinned));
    assert.deepEqual(pinned, [], 'no track stays pinned after setAutoQuality');

    // Resizes the window and waits for the gallery to lay the tiles out again.
    const resize = async (viewport) => {
      const tileWidth = () => subscriber.page.evaluate((p) => document
        .querySelector(`.tile[data-participant-id="${p}"]`).getBoundingClientRect().width, pid);
      const before = await tileWidth();
      await subscriber.page.setViewportSize(viewport);
      await subscriber.page.waitForFunction(([p, w]) => document
        .querySelector(`.tile[data-participant-id="${p}"]`).getBoundingClientRect().width !== w, [pid, before],
      { timeout: 5_000 });
    };
    // A small window: small tiles, the low layer (after the resize debounce).
    await resize({ width: 640, height: 400 });
    await waitFor('small window');
    await subscriber.screenshot('simulcast-subscriber-small');
    await resize({ width: 1280, height: 720 });
    await waitFor('large window again');
  });
});
