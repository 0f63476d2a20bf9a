// Shared pieces of the end-to-end tests: a real switchyard server, real headless Chromium
// (and Firefox) clients driving the web client, and diagnostics for when an assertion fails.
//
// Environment (every test file):
//   SWITCHYARD_E2E_BIN or SWITCHYARD_BIN  server binary (default: <repo>/target/debug/switchyard)
//   CHROMIUM_PATH   browser binary (default: /usr/bin/chromium)
//   FIREFOX_PATH    Firefox binary for clients opened with {browser: 'firefox'}
//                   (default: /usr/bin/firefox-esr)
//   E2E_HEADFUL=1   show the browsers (needs a display)
//   E2E_SCREENSHOT_DIR  save the pages' screenshots there at points of interest
//   E2E_DEBUG=1     the pages log every signaling message (shown in failure diagnostics)
//
// Everything stays on 127.0.0.1: the server binds there, and the browsers are told to expose
// their loopback candidates instead of mDNS names.
//
// Chromium is driven by playwright-core (over CDP); stock Firefox only by WebDriver BiDi,
// which puppeteer-core speaks without a geckodriver download. Client hides the difference
// for what the tests use (evaluate, click, waitFor, screenshots, console logs).

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

export { sleep };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
const binFromEnv = process.env.SWITCHYARD_E2E_BIN || process.env.SWITCHYARD_BIN;
export const SERVER_BIN = binFromEnv
  ? path.resolve(binFromEnv)
  : path.join(REPO_ROOT, 'target', 'debug', 'switchyard');
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const FIREFOX_PATH = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

const SERVER_START_TIMEOUT_MS = 20_000;

// See shared notes "testing with real clients": these work as root in a sandbox, and the
// WebRtc ones make Chromium use plain loopback/host candidates. The fake devices: a 1280x720
// camera and a microphone that beeps.
export const CHROMIUM_ARGS = Object.freeze([
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
]);

// Firefox's equivalents (shared notes "testing with real clients"): fake camera and
// microphone without a prompt, loopback candidates with their real addresses, autoplay.
export const FIREFOX_PREFS = Object.freeze({
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
});

// Firefox gathers no loopback candidates (media.peerconnection.ice.loopback has no effect in
// ESR 140 and later), and no candidate at all without a default route. In a namespace whose
// only interface is loopback (scripts/test runs the suite in one) it would never connect, so
// a meeting with a Firefox client first gives the namespace an address of its own on a veth
// pair, with a default route through it. Packets between the namespace's own addresses
// still travel over `lo`. On a machine with a real interface nothing is changed: Firefox
// and the server both use its address.
const FIREFOX_VETH = 'syff0';
const FIREFOX_ADDRESS = '10.99.0.1';
let firefoxNetworkAdded = false;

function hasOwnIpv4Address() {
  return Object.values(networkInterfaces()).flat().some((a) => a.family === 'IPv4' && !a.internal);
}

function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Makes Firefox able to gather a candidate here (see above); undone by removeFirefoxNetwork. */
export function ensureFirefoxNetwork() {
  if (firefoxNetworkAdded || hasOwnIpv4Address()) return;
  ip('link', 'add', FIREFOX_VETH, 'type', 'veth', 'peer', 'name', `${FIREFOX_VETH}p`);
  firefoxNetworkAdded = true;
  ip('addr', 'add', `${FIREFOX_ADDRESS}/24`, 'dev', FIREFOX_VETH);
  ip('link', 'set', FIREFOX_VETH, 'up');
  ip('link', 'set', `${FIREFOX_VETH}p`, 'up');
  ip('route', 'add', 'default', 'via', '10.99.0.2');
}

export function removeFirefoxNetwork() {
  if (!firefoxNetworkAdded) return;
  firefoxNetworkAdded = false;
  try {
    ip('link', 'del', FIREFOX_VETH); // takes its peer and the route with it
  } catch (err) {
    process.stderr.write(`removing ${FIREFOX_VETH}: ${err.message}\n`);
  }
}

process.on('exit', removeFirefoxNetwork);

// ------------------------------------------------------------------------------------------
// Server

export class Server {
  constructor(bin = SERVER_BIN) {
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
export function plain(text) {
  return text.replace(/\x1b\[[0-9;]*m/g, '');
}

export function cap(text, max = 2_000_000) {
  return text.length > max ? text.slice(text.length - max) : text;
}

// ------------------------------------------------------------------------------------------
// Browsers

export class Client {
  /**
   * @param {string} name display name, also the page's label in diagnostics
   * @param {object} [options]
   * @param {string[]} [options.args] Chromium flags added to CHROMIUM_ARGS
   * @param {string} [options.query] added to the page URL (e.g. "simulcast=0")
   * @param {{width: number, height: number}} [options.viewport]
   * @param {boolean} [options.audioOnly] getUserMedia never returns a camera: the page
   *   joins with its microphone only (for tests about audio, to spare the CPU)
   * @param {'chromium'|'firefox'} [options.browser] which browser (default Chromium);
   *   `args` apply to Chromium only
   */
  constructor(name, options = {}) {
    this.name = name;
    this.browserName = options.browser ?? 'chromium';
    this.args = options.args ?? [];
    this.query = options.query ?? '';
    this.viewport = options.viewport ?? { width: 1280, height: 720 };
    this.audioOnly = options.audioOnly ?? false;
    this.context = null;
    this.page = null;
    this.profile = null;
    this.logs = [];
    this.closed = false;
    this.participantId = null;
  }

  get firefox() {
    return this.browserName === 'firefox';
  }

  async open(url) {
    this.profile = await mkdtemp(path.join(tmpdir(), `switchyard-e2e-${this.name}-`));
    if (this.firefox) {
      // A launched browser rather than a persistent context: puppeteer's BiDi Firefox
      // takes the profile as userDataDir.
      this.context = await puppeteer.launch({
        browser: 'firefox',
        executablePath: FIREFOX_PATH,
        headless: !process.env.E2E_HEADFUL,
        userDataDir: this.profile,
        extraPrefsFirefox: FIREFOX_PREFS,
        defaultViewport: this.viewport,
      });
      this.page = (await this.context.pages())[0] ?? (await this.context.newPage());
    } else {
      this.context = await chromium.launchPersistentContext(this.profile, {
        executablePath: CHROMIUM_PATH,
        headless: !process.env.E2E_HEADFUL,
        args: [...CHROMIUM_ARGS, ...this.args],
        viewport: this.viewport,
      });
      this.page = this.context.pages()[0] ?? (await this.context.newPage());
    }
    if (this.audioOnly) {
      const addInitScript = (this.firefox ? this.page.evaluateOnNewDocument : this.page.addInitScript).bind(this.page);
      await addInitScript(() => {
        const md = navigator.mediaDevices;
        if (!md) return; // a document without media devices (Firefox runs this on about:blank too)
        const getUserMedia = md.getUserMedia.bind(md);
        md.getUserMedia = (constraints = {}) => (constraints.audio
          ? getUserMedia({ ...constraints, video: false })
          : Promise.reject(new DOMException('no camera in this test', 'NotFoundError')));
      });
    }
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

  /**
   * Waits until `fn(arg)` is truthy in the page (playwright and puppeteer order the
   * arguments of waitForFunction differently).
   */
  waitFor(fn, arg, timeoutMs = 10_000) {
    return this.firefox
      ? this.page.waitForFunction(fn, { timeout: timeoutMs, polling: 100 }, arg)
      : this.page.waitForFunction(fn, arg, { timeout: timeoutMs });
  }

  /** Clicks Join and waits for the participant id the server assigned. */
  async join(timeoutMs = 10_000) {
    await this.page.click('#join');
    await this.waitFor(() => window.switchyard?.participantId, null, timeoutMs);
    this.participantId = await this.page.evaluate(() => window.switchyard.participantId);
    assert.ok(this.participantId, `${this.name} got no participant id`);
    return this.participantId;
  }

  /** Everything worth printing about this client when an assertion fails. */
  summary() {
    return this.page.evaluate(summarize);
  }

  async screenshot(label) {
    const dir = process.env.E2E_SCREENSHOT_DIR;
    if (!dir || this.closed) return;
    await this.page.screenshot({ path: path.join(dir, `${label ?? this.name}.png`) });
  }
}

/**
 * In `client`'s page: its inbound video from participant `pid` (the camera: the first
 * video track it receives of `pid`), condensed; null until there is one.
 */
export function inboundVideoOf(client, pid) {
  return client.page.evaluate(async (pid) => {
    const c = window.switchyard;
    const t = c.remoteTracks().find((x) => x.participantId === pid && x.kind === 'video');
    if (!t || !c.subscriberConnection) return null;
    const report = await c.subscriberConnection.getStats();
    const s = [...report.values()].find((r) => r.type === 'inbound-rtp' && r.kind === 'video'
      && (r.trackIdentifier === t.mediaTrackId || r.mid === t.mid));
    if (!s) return null;
    return {
      framesDecoded: s.framesDecoded ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      freezeCount: s.freezeCount ?? 0,
      totalFreezesDuration: s.totalFreezesDuration ?? 0,
      keyFramesDecoded: s.keyFramesDecoded ?? 0,
      packetsLost: s.packetsLost ?? 0,
    };
  }, pid);
}

// Runs in the page: the client's view of the session plus its media stats, condensed.
export async function summarize() {
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
        freezeCount: s.freezeCount,
        totalFreezesDuration: s.totalFreezesDuration,
        keyFramesDecoded: s.keyFramesDecoded,
        audioLevel: s.audioLevel,
      };
    });
  const outbound = stats.publisher
    .filter((s) => s.type === 'outbound-rtp')
    .map((s) => ({
      kind: s.kind,
      mid: s.mid,
      rid: s.rid,
      ssrc: s.ssrc,
      codec: codecs.get(s.codecId) ?? null,
      active: s.active,
      packetsSent: s.packetsSent,
      bytesSent: s.bytesSent,
      framesEncoded: s.framesEncoded,
      frameWidth: s.frameWidth,
      frameHeight: s.frameHeight,
      qualityLimitationReason: s.qualityLimitationReason,
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
    subscriptions: c.subscriptions?.() ?? [],
    activeSpeakers: c.activeSpeakers?.() ?? [],
    tiles: [...document.querySelectorAll('.tile')].map((t) => ({ ...t.dataset })),
    inbound,
    outbound,
    publisherPairs: pairs(stats.publisher),
    subscriberPairs: pairs(stats.subscriber),
    statusErrors: errors,
  };
}

// ------------------------------------------------------------------------------------------
// One test file's world: a server, some browsers in one room, and failure diagnostics.

export class Meeting {
  /**
   * @param {string[]} names one browser per name
   * @param {object} [clientOptions] passed to every Client (args, query, viewport)
   * @param {Object<string, object>} [overrides] per name, options that replace those
   */
  constructor(names, clientOptions = {}, overrides = {}) {
    this.server = new Server();
    this.clients = names.map((n) => new Client(n, { ...clientOptions, ...overrides[n] }));
    this.room = `e2e-${randomUUID().slice(0, 8)}`;
    this.failed = false;
    process.on('exit', () => {
      if (this.server.proc && !this.server.exit) this.server.proc.kill('SIGKILL');
    });
  }

  /** Starts the server and opens every page on the join form (not joined yet). */
  async start() {
    assert.ok(existsSync(SERVER_BIN), `server binary ${SERVER_BIN} not found (build it, or set SWITCHYARD_E2E_BIN)`);
    if (this.clients.some((c) => !c.firefox)) {
      assert.ok(existsSync(CHROMIUM_PATH), `Chromium ${CHROMIUM_PATH} not found (scripts/install-test-deps, or set CHROMIUM_PATH)`);
    }
    if (this.clients.some((c) => c.firefox)) {
      assert.ok(existsSync(FIREFOX_PATH), `Firefox ${FIREFOX_PATH} not found (scripts/install-test-deps, or set FIREFOX_PATH)`);
    }
    try {
      // Before the server starts: it announces the addresses its interfaces have then.
      if (this.clients.some((c) => c.firefox)) ensureFirefoxNetwork();
      await this.server.start();
      await this.server.waitReady();
      const debug = process.env.E2E_DEBUG ? '&debug' : '';
      await Promise.all(this.clients.map((c) => {
        const extra = c.query ? `&${c.query}` : '';
        return c.open(`${this.server.url}?room=${this.room}&name=${c.name}${debug}${extra}`);
      }));
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  /** Closes the browsers and the server; prints the server's log if anything failed. */
  async stop() {
    await Promise.all(this.clients.map((c) => c.close()));
    await this.server.stop();
    removeFirefoxNetwork();
    if (this.failed) {
      process.stderr.write(`\n==== server ${SERVER_BIN} (exit: ${JSON.stringify(this.server.exit)}) ====\n`);
      process.stderr.write(`---- stdout ----\n${plain(this.server.stdout).slice(-20_000)}\n`);
      process.stderr.write(`---- stderr ----\n${plain(this.server.stderr).slice(-200_000)}\n`);
    }
  }

  byName(name) {
    return this.clients.find((c) => c.name === name);
  }

  /** The name of the client with participant id `id` (or the id itself). */
  nameOf(id) {
    return this.clients.find((c) => c.participantId === id)?.name ?? id;
  }

  async diagnostics(which = this.clients) {
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
  async step(body) {
    try {
      return await body();
    } catch (err) {
      this.failed = true;
      const diag = await this.diagnostics().catch((e) => `diagnostics failed: ${e.message}`);
      err.message = `${err.message}\n\n${diag}`;
      throw err;
    }
  }

  /**
   * Polls `check` (which returns null when satisfied, or a reason) every `intervalMs` until
   * it passes or the deadline. Resolves to the time it took, in ms.
   */
  async eventually(what, deadlineMs, check, intervalMs = 250) {
    const start = Date.now();
    const deadline = start + deadlineMs;
    let reason = 'never checked';
    for (;;) {
      try {
        reason = await check();
      } catch (err) {
        reason = `check threw: ${err.message}`;
      }
      if (reason == null) return Date.now() - start;
      if (this.server.exit) {
        throw new Error(`${what}: server exited (code ${this.server.exit.code}, signal ${this.server.exit.signal})`);
      }
      if (Date.now() >= deadline) break;
      await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
    }
    throw new Error(`${what}: not within ${deadlineMs / 1000} s: ${reason}`);
  }
}

// ------------------------------------------------------------------------------------------
// Audio

/**
 * Writes a mono 16-bit PCM WAV file of `seconds` of `sample(t)` (t in seconds, -1..1), for
 * Chromium's --use-file-for-fake-audio-capture (which loops it).
 */
export function writeWav(file, seconds, sample, rate = 48_000) {
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVE', 8);
  buf.write('fmt ', 12);
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28); // bytes per second
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const v = Math.max(-1, Math.min(1, sample(i / rate)));
    buf.writeInt16LE(Math.round(v * 32767), 44 + i * 2);
  }
  writeFileSync(file, buf);
}

/**
 * A voice-like test signal: a pitch gliding between 150 and 350 Hz with two harmonics,
 * its loudness swinging at 4 Hz (about the rate of syllables). Unlike a steady tone, noise
 * suppression does not learn it as background noise and fade it out. Both modulations
 * repeat a whole number of times in 10 s, so a 10 s file loops without a seam.
 */
export function voiceLike(t, amplitude = 0.5) {
  const glide = 0.7; // Hz
  const phase = 2 * Math.PI * (250 * t - (100 / (2 * Math.PI * glide)) * Math.cos(2 * Math.PI * glide * t));
  const envelope = 0.6 + 0.4 * Math.sin(2 * Math.PI * 4 * t);
  return amplitude * envelope * (Math.sin(phase) + 0.5 * Math.sin(2 * phase) + 0.25 * Math.sin(3 * phase)) / 1.75;
}
