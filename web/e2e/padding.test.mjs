// End-to-end: a publisher behind a capped uplink. With its upload to the server's media
// port held to 900 kbit/s (tc htb, inside the test's own network namespace), a simulcast
// publisher stops encoding its upper layers, or starves them to a frame now and then, and
// Firefox and Chromium both keep sending padding-only RTP on a layer they no longer encode.
// The server must treat a layer as live by its frames, never by its packets: a subscriber on
// automatic quality (its tile asks for a layer the capped publisher cannot keep up) must be
// moved to the best layer still carrying frames, and never go more than 1.5 s without a
// decoded frame while the publisher encodes any layer. Run with a Firefox publisher and
// with a Chromium publisher; the subscriber is Chromium.
//
//   cd web/e2e && npm ci && node --test padding.test.mjs   (as root: tc)
//
// Environment: see helpers.mjs.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Meeting, SERVER_BIN, inboundVideoOf, sleep } from './helpers.mjs';

const MEDIA_DEADLINE_MS = 30_000;
const CAP_KBIT = 900;
const CAPPED_MS = 20_000;
const POLL_MS = 100;
const MAX_GAP_MS = 1_500; // the figure under test
const LIVE_DEADLINE_MS = 5_000;

let shaped = false;

function tc(...args) {
  execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Holds UDP to `serverPort` on loopback to CAP_KBIT; the rest (the server's sending) is free. */
function capUplink(serverPort) {
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '20');
  shaped = true;
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${CAP_KBIT}kbit`, 'ceil', `${CAP_KBIT}kbit`);
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', '10gbit');
  tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'u32',
    'match', 'ip', 'protocol', '17', '0xff',
    'match', 'ip', 'dport', String(serverPort), '0xffff',
    'flowid', '1:10');
}

function uncap() {
  if (!shaped) return;
  shaped = false;
  try {
    tc('qdisc', 'del', 'dev', 'lo', 'root');
  } catch {
    // already gone
  }
}

after(uncap);

/** An admin token for every room, minted by the server binary (dev mode's `devkey`). */
function adminToken() {
  return execFileSync(SERVER_BIN, ['token', 'create', '--admin', '--ttl', '10m'], { encoding: 'utf8' }).trim();
}

/** The admin API's view of the publisher's camera track. */
async function cameraView(meeting, token, participantId) {
  const res = await fetch(new URL(`/api/v1/rooms/${meeting.room}/participants`, meeting.server.url), {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200, 'GET participants');
  const { participants } = await res.json();
  const p = participants.find((x) => x.id === participantId);
  return p?.tracks.find((t) => t.kind === 'video' && t.source === 'camera') ?? null;
}

async function metric(meeting, name) {
  const text = await (await fetch(new URL('/metrics', meeting.server.url))).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : null;
}

/** In the publisher's page: frames encoded per rid. */
function publisherSide(publisher) {
  return publisher.page.evaluate(async () => {
    const report = await window.switchyard.publisherConnection.getStats();
    const encoded = {};
    for (const s of report.values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'video') encoded[s.rid ?? '-'] = s.framesEncoded ?? 0;
    }
    return { encoded };
  });
}

const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);

for (const browser of ['firefox', 'chromium']) {
  test(`a ${browser} publisher behind a ${CAP_KBIT} kbit/s uplink: the subscriber never waits over ${MAX_GAP_MS / 1000} s for a frame`, async (t) => {
    const meeting = new Meeting(['publisher', 'subscriber'], {}, { publisher: { browser } });
    const publisher = meeting.byName('publisher');
    const subscriber = meeting.byName('subscriber');
    try {
      await meeting.start();
      await meeting.step(async () => {
        const serverPort = /media on UDP [^\s)]*:(\d+)/.exec(meeting.server.stdout)?.[1];
        assert.ok(serverPort, `the server's media port in: ${meeting.server.stdout}`);
        const token = adminToken();
        const paddingBefore = await metric(meeting, 'switchyard_received_padding_packets_total');
        // The cap is there from the start, as on a thin uplink: the publisher's encoder never
        // sees more, and starves (or drops) its upper layers from its first seconds.
        capUplink(serverPort);
        await publisher.join();
        await subscriber.join();
        await meeting.eventually('the subscriber decodes the publisher\'s camera', MEDIA_DEADLINE_MS, async () => {
          const s = await inboundVideoOf(subscriber, publisher.participantId);
          return s && s.framesDecoded > 0 ? null : `inbound video: ${JSON.stringify(s)}`;
        });
        const start = Date.now();
        let last = { at: start, decoded: (await inboundVideoOf(subscriber, publisher.participantId)).framesDecoded };
        let lastEncoded = sum((await publisherSide(publisher)).encoded);
        let maxGap = 0;
        let gapAt = null;
        let encodedTotal = 0;
        const widths = new Map();
        const samples = [];
        let nextSample = start;
        while (Date.now() - start < CAPPED_MS) {
          await sleep(POLL_MS);
          const now = Date.now();
          const [inbound, side] = await Promise.all([
            inboundVideoOf(subscriber, publisher.participantId),
            publisherSide(publisher),
          ]);
          const encoded = sum(side.encoded);
          encodedTotal += encoded - lastEncoded;
          lastEncoded = encoded;
          // The wait so far since the last poll that saw a new frame (at least one poll).
          if (now - last.at > maxGap) {
            maxGap = now - last.at;
            gapAt = now - start;
          }
          if (inbound.framesDecoded > last.decoded) {
            last = { at: now, decoded: inbound.framesDecoded };
            widths.set(inbound.frameWidth, (widths.get(inbound.frameWidth) ?? 0) + 1);
          }
          if (now >= nextSample) {
            nextSample += 4_000;
            const view = await cameraView(meeting, token, publisher.participantId);
            samples.push(`${((now - start) / 1000).toFixed(1)} s: encoded ${JSON.stringify(side.encoded)}, `
              + `decoded ${inbound.frameWidth} px; layers ${JSON.stringify(view?.layers?.map((l) => ({
                rid: l.rid, state: l.state, fps: l.frames_per_second, pad: l.padding_packets_per_second, subs: l.subscribers,
              })))}`);
          }
        }
        const paddingAfter = await metric(meeting, 'switchyard_received_padding_packets_total');
        for (const s of samples) t.diagnostic(s);
        t.diagnostic(`${CAPPED_MS / 1000} s capped: ${encodedTotal} frames encoded, longest wait for a decoded frame `
          + `${maxGap} ms (at ${gapAt ?? '-'} ms), decoded widths ${JSON.stringify(Object.fromEntries(widths))}, `
          + `padding packets received ${paddingAfter - paddingBefore}`);

        assert.ok(encodedTotal > CAPPED_MS / 1000 * 5, `the publisher kept encoding behind the cap: ${encodedTotal} frames`);
        assert.ok(maxGap <= MAX_GAP_MS,
          `the subscriber waited ${maxGap} ms for a frame (at ${gapAt} ms into the cap):\n${samples.join('\n')}`);

        // What the operator sees: every layer that has subscribers is live by its frames.
        await meeting.eventually('every layer the server forwards is live', LIVE_DEADLINE_MS, async () => {
          const view = await cameraView(meeting, token, publisher.participantId);
          const forwarded = view?.layers?.filter((l) => l.subscribers > 0) ?? [];
          if (forwarded.length === 0) return `no layer has subscribers: ${JSON.stringify(view?.layers)}`;
          return forwarded.every((l) => l.state === 'live') ? null : `layers: ${JSON.stringify(view.layers)}`;
        });
        uncap();
      });
    } finally {
      uncap();
      await meeting.stop();
    }
  });
}
