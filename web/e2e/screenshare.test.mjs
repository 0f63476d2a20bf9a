// End-to-end: screen share through the meeting page. Ada (camera, microphone) shares her
// screen 20 times in a row with the Share screen button; each time both other pages show it
// in the spotlight, decoding its frames, with the camera tiles in a strip below, and when
// she stops (the button, or every fifth time the browser's own stop, which ends the track)
// it is gone from every page and from the server. After the twenty shares the server holds
// what it held after the first: Ada's two tracks, the same forwarded tracks, and about the
// same memory.
//
//   cd web/e2e && npm ci && node --test screenshare.test.mjs
//
// Chromium's fake capture (--use-fake-device-for-media-stream) answers getDisplayMedia with
// a 1280x720 test screen and a fake audio track, without a picker.
//
// Environment: see helpers.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Meeting, SERVER_BIN } from './helpers.mjs';

const SHARES = 20;
const WAIT_MS = 20_000;
/** Spotlight frames a viewer must present for a share to count as seen. */
const FRAMES_SEEN = 10;
/** How much the server's resident memory may grow from the second share to the last. */
const RSS_SLACK_BYTES = 24 * 1024 * 1024;

// The viewers join with their microphones only, to spare the machine's two cores.
const meeting = new Meeting(['ada', 'bob', 'cy'], {}, { bob: { audioOnly: true }, cy: { audioOnly: true } });
const ada = meeting.byName('ada');
const viewers = [meeting.byName('bob'), meeting.byName('cy')];
let adminToken = null;

async function admin(pathname) {
  const res = await fetch(new URL(pathname, meeting.server.url), { headers: { authorization: `Bearer ${adminToken}` } });
  assert.equal(res.status, 200, `GET ${pathname}`);
  return res.json();
}

/** Ada's tracks as the server has them: [source, ...] sorted. */
async function adaSources() {
  const { participants } = await admin(`/api/v1/rooms/${meeting.room}/participants`);
  const p = participants.find((x) => x.id === ada.participantId);
  return p.tracks.map((t) => t.source).sort();
}

async function metric(name) {
  const res = await fetch(new URL('/metrics', meeting.server.url), { headers: { authorization: `Bearer ${adminToken}` } });
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `/metrics has ${name}`);
  return Number(line.split(' ')[1]);
}

/** Counts, in the page, the frames the spotlight's <video> presents (requestVideoFrameCallback). */
function countSpotlightFrames(client) {
  return client.page.evaluate(() => {
    const video = document.querySelector('#spotlight video');
    window.__spotlightFrames = 0;
    const onFrame = () => {
      window.__spotlightFrames += 1;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

/** What `client`'s page shows of `pid`'s screen share. */
function screenView(client, pid) {
  return client.page.evaluate((pid) => {
    const c = window.switchyard;
    const p = c.getParticipant(pid);
    const spotlight = document.querySelector('#spotlight');
    const video = spotlight.querySelector('video');
    const strip = [...document.querySelectorAll('#tiles .tile')];
    const tileVideo = document.querySelector(`.tile[data-participant-id="${pid}"] video`);
    return {
      screenTrackId: p?.screenTrackId ?? null,
      sources: p?.tracks.map((t) => t.source).sort() ?? null,
      shown: !spotlight.hidden,
      mode: document.querySelector('#gallery').classList.contains('spotlight-mode'),
      label: document.querySelector('#spotlight-label').textContent,
      spotlightOf: spotlight.dataset.participantId ?? null,
      spotlightTrack: video.srcObject?.getVideoTracks()[0]?.id ?? null,
      cameraTrack: tileVideo?.srcObject?.getVideoTracks()[0]?.id ?? null,
      spotlightScreenAudio: !!spotlight.querySelector('audio').srcObject,
      frames: window.__spotlightFrames ?? 0,
      width: video.videoWidth,
      spotlightHeight: Math.round(spotlight.getBoundingClientRect().height),
      tileHeights: strip.map((t) => Math.round(t.getBoundingClientRect().height)),
    };
  }, pid);
}

before(async () => {
  adminToken = execFileSync(SERVER_BIN, ['token', 'create', '--admin', '--ttl', '10m'], { encoding: 'utf8' }).trim();
  await meeting.start();
  for (const c of [ada, ...viewers]) await c.join();
  await meeting.step(() => meeting.eventually('the viewers receive ada\'s camera', WAIT_MS, async () => {
    for (const v of viewers) {
      const p = await v.page.evaluate((pid) => window.switchyard.getParticipant(pid), ada.participantId);
      if (!p?.videoTrackId) return `${v.name} has no video of ada`;
    }
    return null;
  }));
});
after(() => meeting.stop());

test(`a screen shared ${SHARES} times reaches everyone each time and leaves nothing behind`, async (t) => {
  await meeting.step(async () => {
    let baseline = null;
    const times = [];
    for (let share = 1; share <= SHARES; share++) {
      for (const v of viewers) await countSpotlightFrames(v);
      const started = Date.now();
      await ada.page.click('#toggle-screen');
      await ada.waitFor(() => window.switchyard.isScreenSharing(), null, WAIT_MS);
      for (const v of viewers) {
        await meeting.eventually(`share ${share}: ${v.name} shows ada's screen in the spotlight`, WAIT_MS, async () => {
          const s = await screenView(v, ada.participantId);
          if (!s.screenTrackId || !s.shown || !s.mode) return JSON.stringify(s);
          if (s.spotlightOf !== ada.participantId || s.spotlightTrack === s.cameraTrack) return `the spotlight shows something else: ${JSON.stringify(s)}`;
          if (s.frames < FRAMES_SEEN || s.width === 0) return `frames ${s.frames}, width ${s.width}`;
          return null;
        }, 100);
      }
      times.push(Date.now() - started);
      const view = await screenView(viewers[0], ada.participantId);
      assert.deepEqual(view.sources, ['camera', 'microphone', 'screen', 'screen_audio'], `share ${share}: what ${viewers[0].name} lists of ada`);
      assert.match(view.label, /ada is sharing/);
      assert.ok(view.spotlightScreenAudio, 'the screen\'s audio plays with it');
      // Spotlight layout: the screen large, the three tiles in a strip.
      assert.equal(view.tileHeights.length, 3);
      assert.ok(view.tileHeights.every((h) => h > 0 && h * 3 < view.spotlightHeight), `spotlight ${view.spotlightHeight} px over tiles ${view.tileHeights}`);
      assert.deepEqual(await adaSources(), ['camera', 'microphone', 'screen', 'screen_audio'], `share ${share}: ada's tracks at the server`);

      // Stop: the button, or (every fifth time) the browser's own stop, which ends the
      // captured track and fires its `ended`.
      if (share % 5 === 0) {
        await ada.page.evaluate(() => window.switchyard.screenStream.getVideoTracks()[0].dispatchEvent(new Event('ended')));
      } else {
        await ada.page.click('#toggle-screen');
      }
      await ada.waitFor(() => !window.switchyard.isScreenSharing(), null, WAIT_MS);
      for (const v of viewers) {
        await meeting.eventually(`share ${share}: ${v.name} no longer shows a screen`, WAIT_MS, async () => {
          const s = await screenView(v, ada.participantId);
          return !s.screenTrackId && !s.shown && !s.mode && s.sources.join() === 'camera,microphone' ? null : JSON.stringify(s);
        }, 100);
      }
      await meeting.eventually(`share ${share}: the server unpublished ada's screen`, WAIT_MS, async () => {
        const sources = await adaSources();
        return sources.join() === 'camera,microphone' ? null : JSON.stringify(sources);
      }, 100);
      if (share === 2) {
        baseline = { rss: await metric('switchyard_process_resident_memory_bytes'), subscriptions: await metric('switchyard_subscriptions') };
      }
    }
    // Nothing stays behind: the same forwarded tracks as after the second share, and memory
    // at its level (a share's uptrack and its packet caches are several MiB per viewer).
    await meeting.eventually('the forwarded tracks are back to their number', WAIT_MS, async () => {
      const n = await metric('switchyard_subscriptions');
      return n === baseline.subscriptions ? null : `${n} subscriptions, ${baseline.subscriptions} after share 2`;
    });
    const rss = await metric('switchyard_process_resident_memory_bytes');
    const mib = (b) => (b / 1024 / 1024).toFixed(1);
    t.diagnostic(`server RSS after share 2: ${mib(baseline.rss)} MiB, after share ${SHARES}: ${mib(rss)} MiB`);
    const sorted = [...times].sort((a, b) => a - b);
    t.diagnostic(`click to both viewers presenting ${FRAMES_SEEN} frames: median ${sorted[sorted.length >> 1]} ms, max ${sorted.at(-1)} ms`);
    assert.ok(rss - baseline.rss < RSS_SLACK_BYTES, `server RSS grew from ${mib(baseline.rss)} to ${mib(rss)} MiB over ${SHARES - 2} shares`);
    // The publisher connection reuses its screen sections: 2 (camera, microphone) + 2.
    const sections = await ada.page.evaluate(() => window.switchyard.publisherConnection.getTransceivers().length);
    assert.equal(sections, 4, 'ada\'s publisher connection has four media sections');
  });
});
