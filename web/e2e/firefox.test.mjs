// End-to-end: a mixed meeting, Firefox ESR and Chromium, each publishing its camera as
// three simulcast layers through the web client: each decodes the other's video and hears
// its audio, the server sees three layers of each camera, and a mute on one shows on the
// other's tile.
//
//   cd web/e2e && npm ci && node --test firefox.test.mjs
//
// Environment: see helpers.mjs (FIREFOX_PATH).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Meeting, SERVER_BIN } from './helpers.mjs';

const MEDIA_DEADLINE_MS = 30_000;

const meeting = new Meeting(['fox', 'chrome'], {}, { fox: { browser: 'firefox' } });
const fox = meeting.byName('fox');
const chrome = meeting.byName('chrome');

before(() => meeting.start());
after(() => meeting.stop());

/** In `client`'s page: what it receives of `pid`'s camera and microphone. */
function inbound(client, pid) {
  return client.page.evaluate(async (pid) => {
    const c = window.switchyard;
    const report = await c.subscriberConnection?.getStats();
    if (!report) return null;
    const out = {};
    for (const t of c.remoteTracks().filter((x) => x.participantId === pid)) {
      const s = [...report.values()].find((r) => r.type === 'inbound-rtp' && r.kind === t.kind
        && (r.trackIdentifier === t.mediaTrackId || r.mid === t.mid));
      if (s) out[t.kind] = { packets: s.packetsReceived ?? 0, frames: s.framesDecoded ?? 0, width: s.frameWidth ?? 0 };
    }
    return out;
  }, pid);
}

/** In `client`'s page: its camera's outbound encodings by rid. */
function outboundRids(client) {
  return client.page.evaluate(async () => {
    const report = await window.switchyard.publisherConnection.getStats();
    return [...report.values()].filter((r) => r.type === 'outbound-rtp' && r.kind === 'video')
      .map((r) => ({ rid: r.rid, packets: r.packetsSent ?? 0 }))
      .sort((a, b) => a.rid.localeCompare(b.rid));
  });
}

test('Firefox and Chromium see and hear each other, each publishing three layers', async (t) => {
  await meeting.step(async () => {
    await fox.join();
    await chrome.join();
    for (const [viewer, publisher] of [[chrome, fox], [fox, chrome]]) {
      await meeting.eventually(`${viewer.name} decodes ${publisher.name}'s video and gets its audio`, MEDIA_DEADLINE_MS, async () => {
        const s = await inbound(viewer, publisher.participantId);
        return s?.video?.frames > 20 && s?.audio?.packets > 50 ? null : JSON.stringify(s);
      });
      t.diagnostic(`${viewer.name} gets ${publisher.name}: ${JSON.stringify(await inbound(viewer, publisher.participantId))}`);
    }
    for (const c of [fox, chrome]) {
      const rids = await outboundRids(c);
      assert.deepEqual(rids.map((r) => r.rid), ['f', 'h', 'q'], `${c.name} sends three encodings: ${JSON.stringify(rids)}`);
    }
    // The server's view: each camera as one track with three layers.
    const token = execFileSync(SERVER_BIN, ['token', 'create', '--admin', '--ttl', '10m'], { encoding: 'utf8' }).trim();
    const res = await fetch(new URL(`/api/v1/rooms/${meeting.room}/participants`, meeting.server.url), {
      headers: { authorization: `Bearer ${token}` },
    });
    const { participants } = await res.json();
    for (const c of [fox, chrome]) {
      const p = participants.find((x) => x.id === c.participantId);
      const camera = p.tracks.find((x) => x.kind === 'video');
      assert.deepEqual(camera.layers.map((l) => l.rid), ['q', 'h', 'f'], `${c.name}'s camera at the server`);
      assert.ok(camera.layers.some((l) => l.state === 'live'), `${c.name}: a layer is live ${JSON.stringify(camera.layers)}`);
    }
  });
});

test('a mute in Firefox shows on the Chromium tile', async () => {
  await meeting.step(async () => {
    await fox.page.click('#toggle-mic');
    await meeting.eventually('chrome sees fox muted', 10_000, async () => {
      const muted = await chrome.page.evaluate((pid) => document.querySelector(`.tile[data-participant-id="${pid}"]`)?.dataset.audioMuted, fox.participantId);
      return muted === 'true' ? null : `data-audio-muted=${muted}`;
    });
  });
});
