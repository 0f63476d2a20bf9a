// Benchmark (not a test): from clicking Join to the first decoded frame of each other
// participant's camera, in a 3-page Chromium meeting on loopback. Two pages publish their
// cameras; a third joins, is measured, and leaves, TRIALS times. Prints each trial's
// breakdown (the client's timeline: WebSocket open, joined, subscribe_offer, subscriber
// connection up, first video track, first frame) and p50 / p90 / max of the first frame.
//
//   cd web/e2e && npm ci && node bench-first-frame.mjs            (TRIALS=20 by default)
//   unshare -n sh -c 'ip link set lo up && node web/e2e/bench-first-frame.mjs'
//
// Environment: see helpers.mjs; TRIALS.

import { Client, Meeting, sleep } from './helpers.mjs';

const TRIALS = Number(process.env.TRIALS || 20);
const FRAME_DEADLINE_MS = 15_000;

const meeting = new Meeting(['anna', 'ben']);
await meeting.start();
for (const c of meeting.clients) await c.join();
// The two publishers see each other before the first trial: their layers are up.
for (const c of meeting.clients) {
  await c.waitFor(() => window.switchyard.remoteTracks().filter((t) => t.kind === 'video').length >= 1, null, 30_000);
}
await sleep(3_000);

const url = (name) => `${meeting.server.url}?room=${meeting.room}&name=${name}`;
const results = [];
for (let i = 0; i < TRIALS; i++) {
  const c = new Client(`joiner${i}`);
  await c.open(url(`joiner${i}`));
  // Polls framesDecoded of every inbound video every 10 ms from the click on; records when
  // each first decoded a frame (performance.now(), the client timeline's clock).
  const trial = await c.page.evaluate(async (deadline) => {
    const firstFrame = new Map();
    const clicked = performance.now();
    document.getElementById('join').click();
    while (performance.now() - clicked < deadline) {
      const pc = window.switchyard?.subscriberConnection;
      if (pc) {
        const report = await pc.getStats();
        for (const s of report.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0 && !firstFrame.has(s.ssrc)) {
            firstFrame.set(s.ssrc, performance.now());
          }
        }
      }
      if (firstFrame.size >= 2) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const rel = (t) => Math.round(t - clicked);
    const seen = {};
    for (const { event, at } of window.switchyard.timeline) if (!(event in seen)) seen[event] = rel(at);
    return { frames: [...firstFrame.values()].map(rel).sort((a, b) => a - b), timeline: seen };
  }, FRAME_DEADLINE_MS);
  await c.close();
  results.push(trial);
  const t = trial.timeline;
  console.log(`trial ${String(i + 1).padStart(2)}: first frames ${trial.frames.join(' / ') || 'none'} ms | `
    + `ws ${t['websocket open']} joined ${t.joined} sub offer ${t['subscribe_offer received']} `
    + `sub answer ${t['subscribe_answer sent']} sub up ${t['subscriber connected']} pub up ${t['publisher connected']} `
    + `video track ${t['track video']}`);
  await sleep(1_000); // the server sees the joiner leave before the next one comes
}
await meeting.stop();

const firsts = results.map((r) => r.frames[0] ?? Infinity).sort((a, b) => a - b);
const lasts = results.map((r) => (r.frames.length >= 2 ? r.frames[1] : Infinity)).sort((a, b) => a - b);
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];
const median = (key) => {
  const xs = results.map((r) => r.timeline[key]).filter((x) => x != null).sort((a, b) => a - b);
  return xs.length ? pct(xs, 50) : '-';
};
console.log(`\n${TRIALS} trials, ms from clicking Join:`);
console.log(`  first remote frame:        p50 ${pct(firsts, 50)}  p90 ${pct(firsts, 90)}  max ${firsts.at(-1)}`);
console.log(`  both remote frames:        p50 ${pct(lasts, 50)}  p90 ${pct(lasts, 90)}  max ${lasts.at(-1)}`);
console.log('  median of each step:       '
  + ['websocket open', 'joined', 'subscribe_offer received', 'subscribe_answer sent', 'subscriber connected', 'publisher connected', 'track video']
    .map((k) => `${k} ${median(k)}`).join(', '));
process.exit(0);
