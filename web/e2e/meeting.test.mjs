// End-to-end: three real headless Chromium clients in one room on a real switchyard server.
//
//   cd web/e2e && npm ci && node --test
//
// Environment: see helpers.mjs (SWITCHYARD_E2E_BIN / SWITCHYARD_BIN, CHROMIUM_PATH,
// E2E_HEADFUL, E2E_SCREENSHOT_DIR, E2E_DEBUG).
//
// Everything stays on 127.0.0.1: the server binds there, and Chromium is told to expose its
// loopback candidates instead of mDNS names.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Meeting, sleep } from './helpers.mjs';

const MEDIA_DEADLINE_MS = 20_000;
const MUTE_DEADLINE_MS = 5_000;
const LEAVE_DEADLINE_MS = 5_000;

const NAMES = ['alice', 'bob', 'carol'];

const meeting = new Meeting(NAMES);
const { clients } = meeting;
let mediaFlowing = false;

const byName = (name) => meeting.byName(name);
const byId = (id) => meeting.nameOf(id);
const step = (body) => meeting.step(body);
const eventually = (what, deadlineMs, check) => meeting.eventually(what, deadlineMs, check);

// ------------------------------------------------------------------------------------------

before(() => meeting.start());

after(() => meeting.stop());

test('three participants join and exchange audio and video', { timeout: 90_000 }, async (t) => {
  await step(async () => {
    for (const c of clients) {
      await c.page.click('#join');
    }
    for (const c of clients) {
      await c.page.waitForFunction(() => window.switchyard?.participantId, null, { timeout: 10_000 });
      c.participantId = await c.page.evaluate(() => window.switchyard.participantId);
      assert.ok(c.participantId, `${c.name} got no participant id`);
    }
    const ids = new Set(clients.map((c) => c.participantId));
    assert.equal(ids.size, clients.length, 'participant ids are not distinct');

    await eventually('every client decodes video and receives audio from both others', MEDIA_DEADLINE_MS, async () => {
      const problems = [];
      for (const c of clients) {
        const s = await c.summary();
        const others = clients.filter((o) => o !== c);
        const videoFrom = new Set(
          s.inbound.filter((r) => r.kind === 'video' && r.framesDecoded > 0 && r.frameWidth > 0).map((r) => r.participantId),
        );
        const audioFrom = new Set(
          s.inbound.filter((r) => r.kind === 'audio' && r.packetsReceived > 0).map((r) => r.participantId),
        );
        for (const o of others) {
          if (!videoFrom.has(o.participantId)) problems.push(`${c.name} decodes no video from ${o.name}`);
          if (!audioFrom.has(o.participantId)) problems.push(`${c.name} receives no audio from ${o.name}`);
        }
        const decoding = s.inbound.filter((r) => r.kind === 'video' && r.framesDecoded > 0 && r.frameWidth > 0);
        const hearing = s.inbound.filter((r) => r.kind === 'audio' && r.packetsReceived > 0);
        if (decoding.length < 2) problems.push(`${c.name} has ${decoding.length} decoding video streams`);
        if (hearing.length < 2) problems.push(`${c.name} has ${hearing.length} audio streams with packets`);
        if (s.connectionState !== 'connected') problems.push(`${c.name} shows connection state "${s.connectionState}"`);
        const names = s.tiles.map((t) => t.name).sort().join(',');
        if (names !== [...NAMES].sort().join(',')) problems.push(`${c.name} shows tiles for [${names}]`);
      }
      return problems.length ? problems.join('; ') : null;
    });
    mediaFlowing = true;

    // Report what was negotiated, for the test log.
    for (const c of clients) {
      const s = await c.summary();
      const video = s.inbound.filter((r) => r.kind === 'video');
      const line = video.map((r) => `${byId(r.participantId)}:${r.codec} ${r.frameWidth}x${r.frameHeight} ${r.framesDecoded} frames`).join(', ');
      t.diagnostic(`${c.name} receives ${line}`);
      if (s.statusErrors.length) t.diagnostic(`${c.name} shows errors: ${s.statusErrors.join(' | ')}`);
      await c.screenshot();
    }
  });
});

test('muting the microphone shows on the other participants\' tiles', { timeout: 60_000 }, async (t) => {
  assert.ok(mediaFlowing, 'media never flowed (see the first test): nothing to check');
  await step(async () => {
    const alice = byName('alice');
    const tile = `.tile[data-participant-id="${alice.participantId}"]`;
    for (const c of clients.filter((o) => o !== alice)) {
      assert.equal(await c.page.getAttribute(tile, 'data-audio-muted'), 'false',
        `${c.name} shows alice muted before she muted`);
      assert.equal(await c.page.getAttribute(tile, 'data-name'), 'alice');
    }
    await alice.page.click('#toggle-mic');
    assert.equal(await alice.page.getAttribute('.tile.local', 'data-audio-muted'), 'true', 'alice\'s own tile');
    assert.equal(await alice.page.evaluate(() => window.switchyard.isMicrophoneEnabled()), false);

    await eventually('bob and carol see alice muted', MUTE_DEADLINE_MS, async () => {
      const problems = [];
      for (const c of clients.filter((o) => o !== alice)) {
        const value = await c.page.getAttribute(tile, 'data-audio-muted');
        if (value !== 'true') problems.push(`${c.name}: data-audio-muted=${value}`);
      }
      return problems.length ? problems.join('; ') : null;
    });
    // Video was not touched.
    for (const c of clients.filter((o) => o !== alice)) {
      assert.equal(await c.page.getAttribute(tile, 'data-video-muted'), 'false', `${c.name}: alice's video`);
    }

    // A muted track is not forwarded: bob's count of alice's audio packets stands still
    // (a packet or two may still be in flight), and moves again once she unmutes.
    const bob = byName('bob');
    const aliceAudio = async () => {
      const s = await bob.summary();
      return Math.max(0, ...s.inbound
        .filter((r) => r.participantId === alice.participantId && r.kind === 'audio')
        .map((r) => r.packetsReceived));
    };
    await sleep(500);
    const mutedAt = await aliceAudio();
    await sleep(1_500);
    const stillMuted = await aliceAudio();
    assert.ok(stillMuted - mutedAt <= 3, `bob kept receiving alice's muted audio: ${mutedAt} -> ${stillMuted} packets`);

    await alice.page.click('#toggle-mic');
    await eventually('bob and carol see alice unmuted and hear her again', MUTE_DEADLINE_MS, async () => {
      const problems = [];
      for (const c of clients.filter((o) => o !== alice)) {
        const value = await c.page.getAttribute(tile, 'data-audio-muted');
        if (value !== 'false') problems.push(`${c.name}: data-audio-muted=${value}`);
      }
      const packets = await aliceAudio();
      if (!(packets > stillMuted + 10)) problems.push(`bob: alice's audio packets ${stillMuted} -> ${packets}`);
      return problems.length ? problems.join('; ') : null;
    });
  });
});

test('a participant who closes the browser disappears for the others', { timeout: 60_000 }, async (t) => {
  assert.ok(mediaFlowing, 'media never flowed (see the first test): nothing to check');
  await step(async () => {
    const carol = byName('carol');
    await carol.close();
    const tile = `.tile[data-participant-id="${carol.participantId}"]`;
    await eventually('alice and bob drop carol\'s tile', LEAVE_DEADLINE_MS, async () => {
      const problems = [];
      for (const c of clients.filter((o) => !o.closed)) {
        if ((await c.page.$(tile)) != null) problems.push(`${c.name} still shows carol's tile`);
        const remote = await c.page.evaluate(() => window.switchyard.remoteParticipants().map((p) => p.name));
        if (remote.includes('carol')) problems.push(`${c.name} still lists carol`);
      }
      return problems.length ? problems.join('; ') : null;
    });
  });
});

test('the remaining participants keep receiving each other after the departure', { timeout: 60_000 }, async (t) => {
  assert.ok(mediaFlowing, 'media never flowed (see the first test): nothing to check');
  await step(async () => {
    const remaining = clients.filter((c) => !c.closed);
    const counters = async () => {
      const out = new Map();
      for (const c of remaining) {
        const s = await c.summary();
        for (const o of remaining.filter((x) => x !== c)) {
          const mine = s.inbound.filter((r) => r.participantId === o.participantId);
          out.set(`${c.name}<-${o.name}`, {
            frames: Math.max(0, ...mine.filter((r) => r.kind === 'video').map((r) => r.framesDecoded ?? 0)),
            audio: Math.max(0, ...mine.filter((r) => r.kind === 'audio').map((r) => r.packetsReceived)),
          });
        }
      }
      return out;
    };
    const start = await counters();
    await eventually('video frames and audio packets keep arriving', 10_000, async () => {
      const now = await counters();
      const problems = [];
      for (const [link, s] of start) {
        const n = now.get(link);
        if (!(n.frames > s.frames + 10)) problems.push(`${link}: frames ${s.frames} -> ${n.frames}`);
        if (!(n.audio > s.audio + 10)) problems.push(`${link}: audio packets ${s.audio} -> ${n.audio}`);
      }
      return problems.length ? problems.join('; ') : null;
    });
  });
});
