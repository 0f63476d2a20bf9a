// End-to-end: three real headless Chromium clients in one room on a real switchyard server.
//
//   cd web/e2e && npm ci && node --test
//
// Environment:
//   SWITCHYARD_BIN  server binary (default: <repo>/target/debug/switchyard)
//   CHROMIUM_PATH   browser binary (default: /usr/bin/chromium)
//   E2E_HEADFUL=1   show the browsers (needs a display)
//   E2E_SCREENSHOT_DIR  save each page's screenshot there once media flows
//   E2E_DEBUG=1     the pages log every signaling message (shown in failure diagnostics)
//
// Everything stays on 127.0.0.1: the server binds there, and Chromium is told to expose its
// loopback candidates instead of mDNS names.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');
const SERVER_BIN = process.env.SWITCHYARD_BIN
  ? path.resolve(process.env.SWITCHYARD_BIN)
  : path.join(REPO_ROOT, 'target', 'debug', 'switchyard');
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const SERVER_START_TIMEOUT_MS = 20_000;
const MEDIA_DEADLINE_MS = 20_000;
const MUTE_DEADLINE_MS = 5_000;
const LEAVE_DEADLINE_MS = 5_000;

// See shared notes "testing with real clients": these work as root in a sandbox, and the last
// two make Chromium use plain loopback/host candidates.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

const NAMES = ['alice', 'bob', 'carol'];

// ------------------------------------------------------------------------------------------
// Server

class Server {
  constructor(bin) {
    this.bin = bin;
    this.stdout = '';
    this.stderr = '';
    this.proc = null;
    this.url = null;
    this.exit = null; // {code, signal} once exited
  }

  start() {
    return new Promise((resolve, reject) => {
      const proc = spawn(this.bin, ['--bind', '127.0.0.1:0', '--udp-port', '0'], {
        cwd: REPO_ROOT,
        env: process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.proc = proc;
      const timer = setTimeout(() => {
        reject(new Error(`server printed no http://127.0.0.1:<port>/ line within ${SERVER_START_TIMEOUT_MS / 1000} s`));
      }, SERVER_START_TIMEOUT_MS);
      proc.stdout.setEncoding('utf8');
      proc.stderr.setEncoding('utf8');
      proc.stdout.on('data', (chunk) => {
        this.stdout = cap(this.stdout + chunk);
        const m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(this.stdout);
        if (m && !this.url) {
          this.url = `http://127.0.0.1:${m[1]}/`;
          clearTimeout(timer);
          resolve(this.url);
        }
      });
      proc.stderr.on('data', (chunk) => {
        this.stderr = cap(this.stderr + chunk);
      });
      proc.on('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not start ${this.bin}: ${err.message}`));
      });
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        clearTimeout(timer);
        if (!this.url) reject(new Error(`server exited before it was ready (code ${code}, signal ${signal})`));
      });
    });
  }

  /** Waits until the server answers HTTP on its URL (the embedded web client). */
  async waitReady(deadlineMs = SERVER_START_TIMEOUT_MS) {
    const deadline = Date.now() + deadlineMs;
    let lastError = null;
    while (Date.now() < deadline) {
      if (this.exit) throw new Error(`server exited (code ${this.exit.code}, signal ${this.exit.signal})`);
      try {
        const res = await fetch(this.url);
        const body = await res.text();
        if (res.ok && body.includes('app.js')) return;
        lastError = new Error(`GET / answered ${res.status} without the web client`);
      } catch (err) {
        lastError = err;
      }
      await sleep(100);
    }
    throw new Error(`server not ready: ${lastError?.message}`);
  }

  async stop() {
    const proc = this.proc;
    if (!proc || this.exit) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    const timedOut = await Promise.race([exited.then(() => false), sleep(5_000).then(() => true)]);
    if (timedOut) {
      process.stderr.write('server ignored SIGTERM for 5 s; killing it\n');
      proc.kill('SIGKILL');
      await exited;
    }
  }
}

/** Log text without ANSI colour codes. */
function plain(text) {
  return text.replace(/\x1b\[[0-9;]*m/g, '');
}

function cap(text, max = 2_000_000) {
  return text.length > max ? text.slice(text.length - max) : text;
}

// ------------------------------------------------------------------------------------------
// Browsers

class Client {
  constructor(name) {
    this.name = name;
    this.context = null;
    this.page = null;
    this.profile = null;
    this.logs = [];
    this.closed = false;
    this.participantId = null;
  }

  async open(url) {
    this.profile = await mkdtemp(path.join(tmpdir(), `switchyard-e2e-${this.name}-`));
    this.context = await chromium.launchPersistentContext(this.profile, {
      executablePath: CHROMIUM_PATH,
      headless: !process.env.E2E_HEADFUL,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 720 },
    });
    this.page = this.context.pages()[0] ?? (await this.context.newPage());
    this.page.on('console', (msg) => this.log(`console.${msg.type()}: ${msg.text()}`));
    this.page.on('pageerror', (err) => this.log(`pageerror: ${err.stack ?? err.message}`));
    this.page.on('requestfailed', (req) => this.log(`requestfailed: ${req.url()} ${req.failure()?.errorText}`));
    await this.page.goto(url);
  }

  log(line) {
    this.logs.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    if (this.logs.length > 400) this.logs.splice(0, this.logs.length - 400);
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.context?.close();
    } catch (err) {
      process.stderr.write(`closing ${this.name}'s browser: ${err.message}\n`);
    }
    if (this.profile) await rm(this.profile, { recursive: true, force: true }).catch(() => {});
  }

  /** Everything worth printing about this client when an assertion fails. */
  summary() {
    return this.page.evaluate(summarize);
  }
}

// Runs in the page: the client's view of the session plus its media stats, condensed.
async function summarize() {
  const c = window.switchyard;
  const stats = await c.getStats();
  const tracks = c.remoteTracks();
  const byMediaTrack = new Map(tracks.map((t) => [t.mediaTrackId, t]));
  const byMid = new Map(tracks.map((t) => [t.mid, t]));
  const codecs = new Map(
    [...stats.publisher, ...stats.subscriber].filter((s) => s.type === 'codec').map((s) => [s.id, s.mimeType]),
  );
  const inbound = stats.subscriber
    .filter((s) => s.type === 'inbound-rtp')
    .map((s) => {
      const t = byMediaTrack.get(s.trackIdentifier) ?? byMid.get(s.mid);
      return {
        kind: s.kind,
        participantId: t?.participantId ?? null,
        trackId: t?.trackId ?? null,
        mid: s.mid,
        ssrc: s.ssrc,
        trackIdentifier: s.trackIdentifier,
        codec: codecs.get(s.codecId) ?? null,
        packetsReceived: s.packetsReceived ?? 0,
        packetsLost: s.packetsLost ?? 0,
        framesDecoded: s.framesDecoded,
        frameWidth: s.frameWidth,
        frameHeight: s.frameHeight,
      };
    });
  const outbound = stats.publisher
    .filter((s) => s.type === 'outbound-rtp')
    .map((s) => ({
      kind: s.kind,
      mid: s.mid,
      ssrc: s.ssrc,
      codec: codecs.get(s.codecId) ?? null,
      packetsSent: s.packetsSent,
      framesEncoded: s.framesEncoded,
      frameWidth: s.frameWidth,
    }));
  const pairs = (list) => list
    .filter((s) => s.type === 'candidate-pair' && s.nominated)
    .map((s) => ({ state: s.state, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived }));
  const errors = [...document.querySelectorAll('#status .status-item.error')].map((e) => e.textContent.replace(/×$/, ''));
  return {
    participantId: c.participantId,
    connectionState: document.getElementById('connection-state')?.textContent,
    publisherState: c.publisherConnection?.connectionState ?? null,
    subscriberState: c.subscriberConnection?.connectionState ?? null,
    subscriberSignaling: c.subscriberConnection?.signalingState ?? null,
    remoteParticipants: c.remoteParticipants().map((p) => ({
      id: p.id,
      name: p.name,
      audioMuted: p.audioMuted,
      videoMuted: p.videoMuted,
      tracks: p.tracks,
    })),
    remoteTracks: tracks,
    localTracks: c.localTracks(),
    tiles: [...document.querySelectorAll('.tile')].map((t) => ({ ...t.dataset })),
    inbound,
    outbound,
    publisherPairs: pairs(stats.publisher),
    subscriberPairs: pairs(stats.subscriber),
    statusErrors: errors,
  };
}

// ------------------------------------------------------------------------------------------
// Test state and diagnostics

const server = new Server(SERVER_BIN);
const clients = NAMES.map((n) => new Client(n));
const room = `e2e-${randomUUID().slice(0, 8)}`;
let failed = false;
let mediaFlowing = false;

function byName(name) {
  return clients.find((c) => c.name === name);
}

async function diagnostics(which = clients) {
  const parts = [];
  for (const c of which) {
    if (c.closed) continue;
    let summary;
    try {
      summary = await c.summary();
    } catch (err) {
      summary = `unavailable: ${err.message}`;
    }
    parts.push(`---- ${c.name} (${c.participantId}) ----\n${JSON.stringify(summary, null, 2)}`);
    const lines = process.env.E2E_DEBUG ? 400 : 60;
    parts.push(`---- ${c.name}: last console lines ----\n${c.logs.slice(-lines).join('\n')}`);
  }
  return parts.join('\n');
}

/** Runs `body`; on failure records it and attaches page diagnostics to the error message. */
async function step(body) {
  try {
    await body();
  } catch (err) {
    failed = true;
    const diag = await diagnostics().catch((e) => `diagnostics failed: ${e.message}`);
    err.message = `${err.message}\n\n${diag}`;
    throw err;
  }
}

/** Polls `check` (which returns null when satisfied, or a reason) until it passes or the deadline. */
async function eventually(what, deadlineMs, check) {
  const deadline = Date.now() + deadlineMs;
  let reason = 'never checked';
  while (Date.now() < deadline) {
    try {
      reason = await check();
    } catch (err) {
      reason = `check threw: ${err.message}`;
    }
    if (reason == null) return;
    if (server.exit) throw new Error(`${what}: server exited (code ${server.exit.code}, signal ${server.exit.signal})`);
    await sleep(250);
  }
  throw new Error(`${what}: not within ${deadlineMs / 1000} s: ${reason}`);
}

// ------------------------------------------------------------------------------------------

before(async () => {
  assert.ok(existsSync(SERVER_BIN), `server binary ${SERVER_BIN} not found (build it, or set SWITCHYARD_BIN)`);
  assert.ok(existsSync(CHROMIUM_PATH), `Chromium ${CHROMIUM_PATH} not found (scripts/install-test-deps, or set CHROMIUM_PATH)`);
  try {
    await server.start();
    await server.waitReady();
    const debug = process.env.E2E_DEBUG ? '&debug' : '';
    await Promise.all(clients.map((c) => c.open(`${server.url}?room=${room}&name=${c.name}${debug}`)));
  } catch (err) {
    failed = true;
    throw err;
  }
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.stop();
  if (failed) {
    process.stderr.write(`\n==== server ${SERVER_BIN} (exit: ${JSON.stringify(server.exit)}) ====\n`);
    process.stderr.write(`---- stdout ----\n${plain(server.stdout).slice(-20_000)}\n`);
    process.stderr.write(`---- stderr ----\n${plain(server.stderr).slice(-200_000)}\n`);
  }
});

process.on('exit', () => {
  if (server.proc && !server.exit) server.proc.kill('SIGKILL');
});

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
      if (process.env.E2E_SCREENSHOT_DIR) {
        await c.page.screenshot({ path: path.join(process.env.E2E_SCREENSHOT_DIR, `${c.name}.png`) });
      }
    }
  });
});

function byId(id) {
  return clients.find((c) => c.participantId === id)?.name ?? id;
}

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
