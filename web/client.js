// SwitchyardClient: the signaling WebSocket plus the two RTCPeerConnections of one participant.
//
// No DOM here: the meeting UI (app.js) drives this class and listens to its events. The wire
// protocol is the one in crates/signal/src/protocol.rs (JSON objects tagged by `type`,
// snake_case fields).
//
// Two peer connections per participant:
//   * publisher  - we create it, add our microphone and camera, offer (`publish_offer`) and
//                  apply the server's `publish_answer`;
//   * subscriber - created lazily on the first `subscribe_offer`; the server re-offers on it
//                  whenever the set of forwarded tracks changes, we answer each time.
// Every forwarded track carries `a=msid:<participant_id> <track_id>`, which is how a received
// track is bound to the participant who publishes it.
//
// Simulcast: the camera is published as three encodings (rid q = 1/4, h = 1/2, f = full
// resolution); the server forwards one of them to each subscriber. Which one is chosen per
// received video track with `update_subscription`: either automatically from the size of
// the tile it is shown in (setVideoSize, driven by the UI), or pinned to a quality
// (setQuality) until setAutoQuality() hands it back to the tile size.
//
// Events (CustomEvent, payload in `event.detail`):
//   statechange        {state}              aggregated WS + peer-connection state
//   joined             {room, participantId, name}
//   participantjoined  {participant}        also fired for those already in the room on join
//   participantupdated {participant}        name, track list or mute state changed
//   participantleft    {participantId, participant}
//   trackadded         {participantId, trackId, kind, track, mid}
//   trackremoved       {participantId, trackId, kind, track, mid}
//   localmute          {kind, muted}
//   localscreen        {sharing, stream}    our screen share started or stopped
//   activespeakers     {speakers}           [{participantId, level}] loudest first (server's view)
//   servererror        {code, message}      an `error` message from the server
//   roomupdated        {metadata}           the operator changed the room's metadata
//   disconnected       {reason}             the server ends the session: removed | room_deleted
//   error              {error}              a local failure (SDP, ICE, WebSocket)
//   closed             {reason}             the session ended (leave, socket closed)
//   data               {participantId, identity, topic, data, reliable}  a data message from
//                      another participant (data: a string if sent as text, else a Uint8Array)
//   fileprogress       {direction, transferId, participantId, identity, name, size, bytes}
//                      a file being sent ('send', with its destinations) or received
//                      ('receive'): bytes so far
//   file               {transferId, participantId, identity, name, size, type, blob}  a file
//                      received whole
//   fileerror          {direction, transferId, name, reason}  a transfer that broke off
//
// Screen share: startScreenShare() adds the display's video (source `screen`) and its audio
// (`screen_audio`) to the publisher connection and re-offers it; stopScreenShare() sets
// those sections inactive and re-offers. The next share reuses them (replaceTrack). Others
// see it in the participant snapshot as screenTrack / screenAudioTrack, apart from the
// camera's videoTrack and the microphone's audioTrack.
//
// Data: the publisher connection carries two data channels, `_reliable` (ordered) and
// `_lossy` (unordered, no retransmits); the server relays each message to the others on
// their subscriber connections, stamped with the sender's participant id and identity
// (sendData, the `data` event). Files go over `_reliable` in 16 KiB chunks (sendFile).

import {
  FILE_ABORT, FILE_CHUNK, FILE_CHUNK_BYTES, FILE_END, FILE_START, LOSSY_LABEL, RELIABLE_LABEL,
  decodeRelayed, encodeClientData, transferId,
} from './data.js';

const PING_INTERVAL_MS = 10_000;
const JOIN_TIMEOUT_MS = 15_000;
/** How long sendData waits for our data channels to open (right after joining). */
const DATA_OPEN_TIMEOUT_MS = 15_000;
/** A file transfer keeps at most this much in the channel's send buffer, and resumes below
 * the low mark (`bufferedAmountLowThreshold`), so a large file never sits in memory twice. */
const FILE_HIGH_WATER = 1 << 20;
const FILE_LOW_WATER = 256 * 1024;
/** What the server takes when its SDP does not say (it does: a=max-message-size). */
const DEFAULT_MAX_MESSAGE_SIZE = 65_535;
/** How long a publish_offer waits for the server's answer. */
const ANSWER_TIMEOUT_MS = 15_000;
/** Errors with which the server refuses a publish_offer (docs/protocol.md). */
const REFUSED_OFFER_CODES = Object.freeze(['invalid_sdp', 'rate_limited', 'internal']);
/** A publish_offer refused for its rate is tried again after 1, 2, 4 s. */
const OFFER_RETRIES = 3;
const OFFER_RETRY_MS = 1_000;
/** A shared screen's one encoding. */
const SCREEN_MAX_BITRATE = 2_500_000;

/** The camera's simulcast encodings, lowest first (the server names them low/medium/high). */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', maxBitrate: 1_500_000 }),
]);

export const QUALITIES = Object.freeze(['low', 'medium', 'high', 'off']);

/** Track sources of a shared screen (docs/protocol.md). */
export const SCREEN_SOURCES = Object.freeze(['screen', 'screen_audio']);

/** The default signaling URL for a page served by the Switchyard server itself. */
export function defaultSignalUrl(loc = globalThis.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/rtc`;
}

/**
 * Splits an SDP into its media sections and extracts, per mid, what we need to bind received
 * tracks to participants: kind, direction, port and msid (stream id + track id).
 */
export function parseMediaSections(sdp) {
  const sections = new Map();
  let current = null;
  let sessionDirection = null;
  for (const rawLine of sdp.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line.startsWith('m=')) {
      const [kind, port] = line.slice(2).split(' ');
      current = { kind, port: Number(port), mid: null, direction: null, msid: null, ssrcMsid: null };
      sections.set(Symbol('pending'), current);
      continue;
    }
    if (!line.startsWith('a=')) continue;
    const attr = line.slice(2);
    if (/^(sendrecv|sendonly|recvonly|inactive)$/.test(attr)) {
      if (current) current.direction = attr;
      else sessionDirection = attr;
      continue;
    }
    if (!current) continue;
    if (attr.startsWith('mid:')) {
      current.mid = attr.slice(4);
    } else if (attr.startsWith('msid:')) {
      const [streamId, trackId] = attr.slice(5).split(' ');
      current.msid ??= { streamId, trackId };
    } else if (attr.startsWith('ssrc:')) {
      // Legacy form: a=ssrc:<ssrc> msid:<stream> <track>
      const m = /^ssrc:\d+ msid:(\S+)(?: (\S+))?/.exec(attr);
      if (m) current.ssrcMsid ??= { streamId: m[1], trackId: m[2] };
    }
  }
  const byMid = new Map();
  for (const section of sections.values()) {
    section.direction ??= sessionDirection ?? 'sendrecv';
    section.msid ??= section.ssrcMsid;
    delete section.ssrcMsid;
    if (section.mid != null) byMid.set(section.mid, section);
  }
  return byMid;
}

/** Resolves once `channel` has sent down to its bufferedAmountLowThreshold (or closed). */
function drained(channel) {
  return new Promise((resolve) => {
    const done = () => {
      channel.removeEventListener('bufferedamountlow', done);
      channel.removeEventListener('close', done);
      resolve();
    };
    channel.addEventListener('bufferedamountlow', done);
    channel.addEventListener('close', done);
  });
}

function toRtcIceServers(iceServers) {
  return (iceServers ?? []).map((s) => {
    const out = { urls: s.urls };
    if (s.username != null) out.username = s.username;
    if (s.credential != null) out.credential = s.credential;
    return out;
  });
}

function toWireCandidate(c) {
  const out = { candidate: c.candidate };
  if (c.sdpMid != null) out.sdp_mid = c.sdpMid;
  if (c.sdpMLineIndex != null) out.sdp_mline_index = c.sdpMLineIndex;
  if (c.usernameFragment != null) out.username_fragment = c.usernameFragment;
  return out;
}

function fromWireCandidate(c) {
  const out = { candidate: c.candidate ?? '' };
  if (c.sdp_mid != null) out.sdpMid = c.sdp_mid;
  if (c.sdp_mline_index != null) out.sdpMLineIndex = c.sdp_mline_index;
  if (out.sdpMid == null && out.sdpMLineIndex == null) out.sdpMLineIndex = 0;
  if (c.username_fragment != null) out.usernameFragment = c.username_fragment;
  return out;
}

function sourceFor(kind) {
  return kind === 'audio' ? 'microphone' : 'camera';
}

/** One side (publisher or subscriber) of the session: a peer connection and its ICE queues. */
class PeerSide {
  constructor(target, pc) {
    this.target = target;
    this.pc = pc;
    this.remoteDescriptionSet = false;
    this.localSdpSent = false;
    this.pendingRemoteCandidates = []; // server candidates waiting for a remote description
    this.pendingLocalCandidates = []; // our candidates waiting for our offer/answer to be sent
    this.queue = Promise.resolve(); // serializes SDP operations
    this.answering = false; // subscriber: between applying an offer and sending our answer
    this.answerWaiter = null; // publisher: {resolve, reject} while our offer awaits its answer
  }
}

export class SwitchyardClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] signaling URL, default `ws(s)://<page host>/rtc`
   * @param {number} [options.pingIntervalMs]
   * @param {boolean} [options.debug] log every signaling message to the console
   * @param {boolean} [options.simulcast] publish the camera as three simulcast layers
   *   (default true); false sends one plain encoding
   */
  constructor(options = {}) {
    super();
    this.url = options.url ?? null;
    this.pingIntervalMs = options.pingIntervalMs ?? PING_INTERVAL_MS;
    this.debug = options.debug ?? false;
    this.simulcast = options.simulcast ?? true;
    this._reset();
    this._state = 'idle';
  }

  _reset() {
    this._ws = null;
    this._room = null;
    this._self = null; // {id, name}
    this._iceServers = [];
    this._pub = null;
    this._sub = null;
    this._pendingSubscriberCandidates = []; // server candidates before the subscriber PC exists
    this._remote = new Map(); // participantId -> participant record
    this._departed = new Set(); // ids that left: never resurrected by a stale offer
    // Track ids unpublished and not published again: an offer the server made before it
    // heard of the unpublish still lists them, and must not bring them back. (A screen
    // shared again in the same transceiver comes back under the same id.)
    this._unpublished = new Set();
    this._bindings = new Map(); // subscriber mid -> {mid, participantId, trackId, kind, track}
    this._local = new Map(); // kind -> {track, transceiver, wireTrackId, muted}: camera, microphone
    // The screen share: {stream, video, audio} (each {track, transceiver, wireTrackId, source}
    // or null) while sharing, else null. Its transceivers outlive a share and carry the next
    // one, so sharing twenty times does not grow the publisher connection by forty sections.
    this._screen = null;
    this._screenTransceivers = { video: null, audio: null };
    // Received video track id -> {pinned, size, sent}: what we want of it, and what the
    // server last heard (so an unchanged size is never sent twice).
    this._subscriptions = new Map();
    this._activeSpeakers = []; // [{participantId, level}], the last `active_speakers`
    this._pingTimer = null;
    this._lastPingSent = 0;
    this.rttMs = null;
    this._joinWaiter = null;
    this._closing = false;
    this._wsOpen = false;
    this._channels = { reliable: null, lossy: null }; // ours, on the publisher connection
    // [{event, at}] since join() (performance.now() ms): where the time to the first
    // frame goes (web/e2e/bench-first-frame.mjs reads it).
    this.timeline = [];
    this._incomingFiles = new Map(); // `${participantId}/${transferId}` -> transfer
  }

  // ---------------------------------------------------------------------------------------
  // Public API

  /** Aggregated connection state: idle, connecting, connected, disconnected, failed. */
  get state() {
    return this._state;
  }

  /** Our participant id, assigned by the server in `joined` (null before). */
  get participantId() {
    return this._self?.id ?? null;
  }

  get name() {
    return this._self?.name ?? null;
  }

  /** Our identity (from the join token): what others name in `destinations`. */
  get identity() {
    return this._self?.identity ?? null;
  }

  get room() {
    return this._room;
  }

  get joined() {
    return this._self != null;
  }

  /**
   * Connects, joins `room` as `name` and publishes the audio/video tracks of `stream` (if any).
   * Resolves once the server answered `joined` (media negotiation continues in the background).
   */
  async join({ room, name, token, stream } = {}) {
    if (this._ws) throw new Error('already joined; call leave() first');
    this._reset();
    this._closing = false;
    this._room = room;
    this._mark('join');
    this._setState('connecting');

    const url = this.url ?? defaultSignalUrl();
    const ws = new WebSocket(url);
    this._ws = ws;

    const joined = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no answer to join within ${JOIN_TIMEOUT_MS / 1000} s`));
      }, JOIN_TIMEOUT_MS);
      this._joinWaiter = {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });

    ws.addEventListener('open', () => {
      this._wsOpen = true;
      this._mark('websocket open');
      const msg = { type: 'join', room, name };
      if (token) msg.token = token;
      this._send(msg);
      this._startPing();
    });
    ws.addEventListener('message', (ev) => this._onMessage(ev.data));
    ws.addEventListener('error', () => {
      this._log('websocket error');
    });
    ws.addEventListener('close', (ev) => this._onSocketClose(ev));

    this._pendingStream = stream ?? null;
    try {
      await joined;
    } catch (err) {
      this._teardown(`join failed: ${err.message}`, 'failed');
      throw err;
    }
    return { participantId: this.participantId, room: this._room };
  }

  /**
   * Sends `data` (a string, an ArrayBuffer or a typed array) to the other participants, or
   * only to those whose identities `destinations` names. `reliable: false` sends it on the
   * lossy channel (unordered, never retransmitted). Resolves once it is handed to the
   * channel; throws a RangeError if it is larger than the channel takes.
   */
  async sendData(data, { reliable = true, topic, destinations } = {}) {
    if (typeof topic === 'string' && topic.startsWith('_file.')) {
      throw new RangeError('topics starting with `_file.` are the client\'s own (sendFile)');
    }
    this._sendEnvelope(await this._dataChannel(reliable), data, { topic, destinations });
  }

  /**
   * Sends a File (or Blob) to everyone, or to the identities in `destinations`, in 16 KiB
   * chunks over the reliable channel, never more than 1 MiB ahead of what the channel has
   * sent. Emits `fileprogress` as it goes; resolves with {transferId, name, size}.
   */
  async sendFile(file, { destinations } = {}) {
    const channel = await this._dataChannel(true);
    const id = transferId();
    const name = file.name ?? 'file';
    const size = file.size;
    const progress = (bytes) => this._emit('fileprogress', {
      direction: 'send', transferId: id, participantId: this.participantId, identity: this._self?.identity ?? null, name, size, bytes, destinations: destinations ?? [],
    });
    this._sendEnvelope(channel, JSON.stringify({ id, name, size, type: file.type ?? '' }), { topic: FILE_START, destinations });
    progress(0);
    const topic = `${FILE_CHUNK}:${id}`;
    let sent = 0;
    try {
      while (sent < size) {
        if (channel.bufferedAmount > FILE_HIGH_WATER) await drained(channel);
        if (channel.readyState !== 'open') throw new Error('the data channel closed during the transfer');
        const chunk = new Uint8Array(await file.slice(sent, sent + FILE_CHUNK_BYTES).arrayBuffer());
        this._sendEnvelope(channel, chunk, { topic, destinations });
        sent += chunk.length;
        progress(sent);
      }
      this._sendEnvelope(channel, JSON.stringify({ id }), { topic: FILE_END, destinations });
    } catch (err) {
      if (channel.readyState === 'open') {
        try { this._sendEnvelope(channel, JSON.stringify({ id }), { topic: FILE_ABORT, destinations }); } catch { /* closing */ }
      }
      this._emit('fileerror', { direction: 'send', transferId: id, name, reason: err.message });
      throw err;
    }
    return { transferId: id, name, size };
  }

  /** The largest message our channels take (the server's a=max-message-size). */
  get maxMessageSize() {
    return this._pub?.pc.sctp?.maxMessageSize || DEFAULT_MAX_MESSAGE_SIZE;
  }

  /** Leaves the room, closes both peer connections and the socket. Local tracks are not stopped. */
  leave() {
    if (!this._ws) return;
    if (this._wsOpen && this._self) this._send({ type: 'leave' });
    this._teardown('left', 'disconnected');
  }

  /** Enables or disables our microphone; tells the server via `mute`. */
  setMicrophoneEnabled(enabled) {
    return this._setLocalEnabled('audio', enabled);
  }

  /** Enables or disables our camera (the track keeps running, black frames); tells the server. */
  setCameraEnabled(enabled) {
    return this._setLocalEnabled('video', enabled);
  }

  isMicrophoneEnabled() {
    const l = this._local.get('audio');
    return !!l && !l.muted;
  }

  isCameraEnabled() {
    const l = this._local.get('video');
    return !!l && !l.muted;
  }

  hasLocal(kind) {
    return this._local.has(kind);
  }

  /** Whether we share a screen (or a window or tab) now. */
  isScreenSharing() {
    return this._screen != null;
  }

  /** The stream we share (for a local preview), or null. */
  get screenStream() {
    return this._screen?.stream ?? null;
  }

  /**
   * Shares a screen: `getDisplayMedia` (the browser asks which screen, window or tab; with
   * `audio`, its sound too when the browser offers it), published as a second video track
   * with source `screen` (its audio: `screen_audio`) by renegotiating the publisher
   * connection. `stream` shares a stream obtained elsewhere instead. Resolves once the
   * server accepted the new offer; stopping from the browser's own controls unpublishes it.
   */
  async startScreenShare({ audio = true, stream } = {}) {
    if (!this._pub) throw new Error('not joined');
    if (this._screen) return this._screen.stream;
    const display = stream ?? await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 15, max: 30 } },
      audio,
    });
    if (!this._pub || this._screen) {
      // Left, or another share started, while the browser asked.
      for (const t of display.getTracks()) t.stop();
      throw new Error(this._pub ? 'already sharing' : 'left the room while choosing a screen');
    }
    const video = display.getVideoTracks()[0];
    if (!video) throw new Error('the shared stream has no video');
    // Text and lines stay sharp: the encoder keeps resolution and gives up frame rate.
    if ('contentHint' in video) video.contentHint = 'detail';
    const screen = { stream: display, video: null, audio: null };
    screen.video = await this._screenSender('video', video, display);
    const sound = display.getAudioTracks()[0];
    if (sound) screen.audio = await this._screenSender('audio', sound, display);
    this._screen = screen;
    // The browser's own "Stop sharing" ends the track.
    video.addEventListener('ended', () => {
      if (this._screen === screen) this.stopScreenShare().catch((err) => this._emitError(err, 'stopping the screen share failed'));
    }, { once: true });
    this._emit('localscreen', { sharing: true, stream: display });
    try {
      await this._negotiatePublisher();
    } catch (err) {
      if (this._screen === screen) await this.stopScreenShare().catch(() => {});
      throw err;
    }
    return display;
  }

  /** Stops sharing: unpublishes the screen (and its audio) everywhere and stops capturing. */
  async stopScreenShare() {
    const screen = this._screen;
    if (!screen) return;
    this._screen = null;
    for (const entry of [screen.video, screen.audio]) {
      if (!entry) continue;
      // The section goes inactive and keeps its place for the next share.
      await entry.transceiver.sender.replaceTrack(null).catch(() => {});
      if (entry.transceiver.currentDirection !== 'stopped') entry.transceiver.direction = 'inactive';
    }
    for (const t of screen.stream.getTracks()) t.stop();
    this._emit('localscreen', { sharing: false, stream: null });
    if (this._pub) await this._negotiatePublisher();
  }

  /**
   * Plain-data snapshot of the other participants:
   * [{id, name, audioMuted, videoMuted, tracks: [{id, kind, source, muted, receiving}]}].
   */
  remoteParticipants() {
    return [...this._remote.values()].map((p) => {
      const { audioTrack, videoTrack, ...plain } = this._snapshot(p);
      return plain;
    });
  }

  /** Like remoteParticipants() for one id, plus its received `audioTrack` / `videoTrack`. */
  getParticipant(id) {
    const p = this._remote.get(id);
    return p ? this._snapshot(p) : null;
  }

  /**
   * The tracks currently received on the subscriber connection:
   * [{mid, participantId, trackId, kind, mediaTrackId}] where mediaTrackId is the local
   * MediaStreamTrack id (the `trackIdentifier` of inbound-rtp stats).
   */
  remoteTracks() {
    return [...this._bindings.values()].map((b) => ({
      mid: b.mid,
      participantId: b.participantId,
      trackId: b.trackId,
      kind: b.kind,
      mediaTrackId: b.track?.id ?? null,
    }));
  }

  /** Our published tracks: [{kind, localTrackId, trackId, muted}]. */
  localTracks() {
    return [...this._local.entries()].map(([kind, l]) => ({
      kind,
      localTrackId: l.track.id,
      trackId: l.wireTrackId,
      muted: l.muted,
    }));
  }

  /**
   * Pins the video track `id` (a remote track id, or a participant id for that participant's
   * camera) to `quality` ("low", "medium", "high" or "off"): sends `update_subscription`
   * and stops size-based updates for that track until setAutoQuality(). Returns the track id.
   */
  setQuality(id, quality) {
    if (!QUALITIES.includes(quality)) {
      throw new Error(`unknown quality ${JSON.stringify(quality)} (one of ${QUALITIES.join(', ')})`);
    }
    const trackId = this._videoTrackIdFor(id);
    const sub = this._subscription(trackId);
    sub.pinned = quality;
    this._syncSubscription(trackId, { force: true });
    return trackId;
  }

  /** Hands the video track `id` back to size-based selection (the last tile size reported). */
  setAutoQuality(id) {
    const trackId = this._videoTrackIdFor(id);
    const sub = this._subscription(trackId);
    sub.pinned = null;
    this._syncSubscription(trackId);
    return trackId;
  }

  /**
   * Reports the size, in device pixels, at which the video track `id` is shown; the server
   * forwards the smallest layer that covers it. 0 x 0 (a hidden tile) asks for nothing
   * ("off"). Only a change reaches the server, and nothing while the track is pinned.
   */
  setVideoSize(id, width, height) {
    const trackId = this._videoTrackIdFor(id);
    const w = Math.max(0, Math.round(Number(width) || 0));
    const h = Math.max(0, Math.round(Number(height) || 0));
    this._subscription(trackId).size = { width: w, height: h };
    this._syncSubscription(trackId);
    return trackId;
  }

  /** What we asked of each received video track: [{trackId, participantId, pinned, size, sent}]. */
  subscriptions() {
    return [...this._subscriptions.entries()].map(([trackId, s]) => ({
      trackId,
      participantId: this._ownerOfTrack(trackId),
      pinned: s.pinned,
      size: s.size && { ...s.size },
      sent: s.sent && JSON.parse(s.sent),
    }));
  }

  /** The server's last `active_speakers` list: [{participantId, level}], loudest first. */
  activeSpeakers() {
    return this._activeSpeakers.map((s) => ({ ...s }));
  }

  /** `{publisher: [...], subscriber: [...]}`: every stats object of each peer connection. */
  async getStats() {
    const collect = async (side) => {
      if (!side || side.pc.signalingState === 'closed') return [];
      const report = await side.pc.getStats();
      return [...report.values()].map((s) => ({ ...s }));
    };
    const [publisher, subscriber] = await Promise.all([collect(this._pub), collect(this._sub)]);
    return { publisher, subscriber };
  }

  /** The raw peer connections, for debugging. */
  get publisherConnection() {
    return this._pub?.pc ?? null;
  }

  get subscriberConnection() {
    return this._sub?.pc ?? null;
  }

  // ---------------------------------------------------------------------------------------
  // Signaling

  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    if (this.debug) this._log('->', JSON.stringify(msg));
    ws.send(JSON.stringify(msg));
    return true;
  }

  _onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._log('unparsable message', data);
      return;
    }
    if (this.debug) this._log('<-', typeof data === 'string' ? data : JSON.stringify(msg));
    try {
      switch (msg.type) {
        case 'joined': return this._onJoined(msg);
        case 'publish_answer': return this._onPublishAnswer(msg);
        case 'subscribe_offer': return this._onSubscribeOffer(msg);
        case 'candidate': return this._onRemoteCandidate(msg);
        case 'participant_joined': return this._onParticipantJoined(msg.participant);
        case 'participant_left': return this._onParticipantLeft(msg.participant_id);
        case 'track_published': return this._onTrackPublished(msg.participant_id, msg.track);
        case 'track_unpublished': return this._onTrackUnpublished(msg.participant_id, msg.track_id);
        case 'track_muted': return this._onTrackMuted(msg.participant_id, msg.track_id, msg.muted);
        case 'active_speakers': return this._onActiveSpeakers(msg.speakers);
        case 'room_updated':
          this.roomMetadata = msg.metadata ?? '';
          return this._emit('roomupdated', { metadata: this.roomMetadata });
        case 'disconnected':
          // The server ends the session (an operator removed us or deleted the room); the
          // socket closes right after, and `closed` carries this reason.
          this._serverReason = msg.reason === 'room_deleted' ? 'the room was closed' : 'removed from the room';
          return this._emit('disconnected', { reason: msg.reason });
        case 'error': return this._onServerError(msg);
        case 'pong':
          if (this._lastPingSent) this.rttMs = Math.round(performance.now() - this._lastPingSent);
          return;
        default:
          this._log('ignoring unknown message type', msg.type);
      }
    } catch (err) {
      this._emitError(err);
    }
  }

  _onJoined(msg) {
    if (this._self) {
      this._log('duplicate joined ignored');
      return;
    }
    this._self = { id: msg.participant.id, name: msg.participant.name, identity: msg.participant.identity };
    this._mark('joined');
    this._room = msg.room ?? this._room;
    this.roomMetadata = msg.room_metadata ?? '';
    this._iceServers = toRtcIceServers(msg.ice_servers);
    this._emit('joined', { room: this._room, participantId: this._self.id, name: this._self.name });
    for (const rp of msg.participants ?? []) {
      const p = this._ensureParticipant(rp.id, rp.name, rp.identity);
      for (const t of rp.tracks ?? []) p.tracks.set(t.id, { ...t });
      this._emit('participantjoined', { participant: this._snapshot(p) });
    }
    this._joinWaiter?.resolve();
    this._joinWaiter = null;

    // Published even without tracks: the publisher connection carries our data channels.
    const stream = this._pendingStream;
    this._pendingStream = null;
    this._publish(stream).catch((err) => this._emitError(err, 'publishing failed'));
    this._updateState();
  }

  _onServerError(msg) {
    if (msg.code === 'duplicate_identity') this._serverReason = 'you joined this room from another tab or device';
    // The server reset our reliable channel: what was arriving on it is incomplete.
    if (msg.code === 'data_overflow') this._abortIncomingFiles('the data channel was reset: this tab fell too far behind');
    // A refused publish_offer is answered with an error instead of publish_answer.
    const waiter = this._pub?.answerWaiter;
    if (waiter && (REFUSED_OFFER_CODES.includes(msg.code) || (msg.code === 'forbidden' && /publish/i.test(msg.message ?? '')))) {
      this._pub.answerWaiter = null;
      const err = new Error(`the server refused our offer: ${msg.code}: ${msg.message}`);
      err.code = msg.code;
      waiter.reject(err);
      // Its caller hears of it (startScreenShare throws); one refused for its rate is
      // retried first, and says nothing unless the retries fail too.
      if (msg.code === 'rate_limited') return;
    }
    this._emit('servererror', { code: msg.code, message: msg.message });
    if (this._joinWaiter) {
      const err = new Error(`${msg.code}: ${msg.message}`);
      err.code = msg.code;
      this._joinWaiter.reject(err);
      this._joinWaiter = null;
    }
  }

  _onSocketClose(ev) {
    this._wsOpen = false;
    if (this._closing) return;
    const reason = this._serverReason
      ?? `signaling connection closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ''})`;
    this._serverReason = null;
    this._joinWaiter?.reject(new Error(reason));
    this._joinWaiter = null;
    this._teardown(reason, 'disconnected');
  }

  _startPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => {
      this._lastPingSent = performance.now();
      this._send({ type: 'ping' });
    }, this.pingIntervalMs);
  }

  _teardown(reason, finalState) {
    this._closing = true;
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    for (const side of [this._pub, this._sub]) {
      if (side) {
        try { side.pc.close(); } catch { /* already closed */ }
      }
    }
    this._pub?.answerWaiter?.reject(new Error(reason));
    const ws = this._ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try { ws.close(1000, 'leaving'); } catch { /* ignore */ }
    }
    const departed = [...this._remote.values()];
    this._ws = null;
    this._self = null;
    this._pub = null;
    this._sub = null;
    this._bindings.clear();
    this._remote.clear();
    this._local.clear();
    if (this._screen) {
      for (const t of this._screen.stream.getTracks()) t.stop();
      this._screen = null;
      this._emit('localscreen', { sharing: false, stream: null });
    }
    this._screenTransceivers = { video: null, audio: null };
    this._subscriptions.clear();
    this._channels = { reliable: null, lossy: null };
    this._abortIncomingFiles('the session ended');
    if (this._activeSpeakers.length) {
      this._activeSpeakers = [];
      this._emit('activespeakers', { speakers: [] });
    }
    for (const p of departed) {
      this._emit('participantleft', { participantId: p.id, participant: this._snapshot(p) });
    }
    this._setState(finalState);
    this._emit('closed', { reason });
  }

  // ---------------------------------------------------------------------------------------
  // Data channels

  _openDataChannels(pc) {
    const reliable = pc.createDataChannel(RELIABLE_LABEL);
    const lossy = pc.createDataChannel(LOSSY_LABEL, { ordered: false, maxRetransmits: 0 });
    for (const channel of [reliable, lossy]) {
      channel.binaryType = 'arraybuffer';
      channel.bufferedAmountLowThreshold = FILE_LOW_WATER;
      channel.addEventListener('open', () => this._log(`data channel ${channel.label} open`));
      channel.addEventListener('close', () => this._log(`data channel ${channel.label} closed`));
    }
    this._channels = { reliable, lossy };
  }

  /** Our reliable or lossy channel once open (waits for it right after joining). */
  async _dataChannel(reliable) {
    const channel = reliable ? this._channels.reliable : this._channels.lossy;
    if (!channel) throw new Error('not joined: no data channel');
    if (channel.readyState === 'open') return channel;
    if (channel.readyState !== 'connecting') throw new Error(`the data channel is ${channel.readyState}`);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the data channel did not open in time')), DATA_OPEN_TIMEOUT_MS);
      channel.addEventListener('open', () => { clearTimeout(timer); resolve(); }, { once: true });
      channel.addEventListener('close', () => { clearTimeout(timer); reject(new Error('the data channel closed')); }, { once: true });
    });
    return channel;
  }

  _sendEnvelope(channel, data, { topic, destinations }) {
    const bytes = encodeClientData(data, { topic, destinations });
    const max = this.maxMessageSize;
    if (bytes.length > max) {
      throw new RangeError(`a data message of ${bytes.length} bytes with its envelope; the channel takes at most ${max}`);
    }
    channel.send(bytes);
  }

  _onDataMessage(label, raw) {
    let m;
    try {
      m = decodeRelayed(raw);
    } catch (err) {
      this._log(`data message dropped: ${err.message}`);
      return;
    }
    if (m.topic?.startsWith('_file.')) {
      this._onFileMessage(m);
      return;
    }
    this._emit('data', { ...m, reliable: label === RELIABLE_LABEL });
  }

  _onFileMessage(m) {
    const sender = { participantId: m.participantId, identity: m.identity };
    try {
      if (m.topic === FILE_START) {
        const meta = JSON.parse(m.data);
        const key = `${m.participantId}/${meta.id}`;
        this._incomingFiles.set(key, { ...sender, meta, chunks: [], bytes: 0 });
        this._emit('fileprogress', { direction: 'receive', transferId: meta.id, ...sender, name: meta.name, size: meta.size, bytes: 0 });
      } else if (m.topic.startsWith(`${FILE_CHUNK}:`)) {
        const id = m.topic.slice(FILE_CHUNK.length + 1);
        const t = this._incomingFiles.get(`${m.participantId}/${id}`);
        if (!t) return; // its start was lost (a reset channel) or it was aborted
        t.chunks.push(m.data);
        t.bytes += m.data.length;
        this._emit('fileprogress', { direction: 'receive', transferId: id, ...sender, name: t.meta.name, size: t.meta.size, bytes: t.bytes });
      } else if (m.topic === FILE_END || m.topic === FILE_ABORT) {
        const { id } = JSON.parse(m.data);
        const key = `${m.participantId}/${id}`;
        const t = this._incomingFiles.get(key);
        if (!t) return;
        this._incomingFiles.delete(key);
        if (m.topic === FILE_ABORT || t.bytes !== t.meta.size) {
          const reason = m.topic === FILE_ABORT ? 'the sender stopped' : `${t.bytes} of ${t.meta.size} bytes arrived`;
          this._emit('fileerror', { direction: 'receive', transferId: id, ...sender, name: t.meta.name, reason });
          return;
        }
        const blob = new Blob(t.chunks, { type: t.meta.type || 'application/octet-stream' });
        this._emit('file', { transferId: id, ...sender, name: t.meta.name, size: t.meta.size, type: t.meta.type, blob });
      }
    } catch (err) {
      this._log(`file message dropped: ${err.message}`);
    }
  }

  _abortIncomingFiles(reason) {
    for (const t of this._incomingFiles.values()) {
      this._emit('fileerror', { direction: 'receive', transferId: t.meta.id, participantId: t.participantId, identity: t.identity, name: t.meta.name, reason });
    }
    this._incomingFiles.clear();
  }

  // ---------------------------------------------------------------------------------------
  // Peer connections

  _createPeerConnection(target) {
    const pc = new RTCPeerConnection({
      iceServers: this._iceServers,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    const side = new PeerSide(target, pc);
    pc.addEventListener('icecandidate', (ev) => {
      // A null candidate (or an empty string) marks the end of gathering: nothing to send.
      if (!ev.candidate || !ev.candidate.candidate) return;
      const wire = toWireCandidate(ev.candidate);
      if (side.localSdpSent) this._send({ type: 'candidate', target, candidate: wire });
      else side.pendingLocalCandidates.push(wire);
    });
    pc.addEventListener('connectionstatechange', () => {
      this._log(`${target} connection: ${pc.connectionState}`);
      this._mark(`${target} ${pc.connectionState}`);
      this._updateState();
    });
    pc.addEventListener('iceconnectionstatechange', () => this._updateState());
    return side;
  }

  _flushLocalCandidates(side) {
    side.localSdpSent = true;
    for (const c of side.pendingLocalCandidates.splice(0)) {
      this._send({ type: 'candidate', target: side.target, candidate: c });
    }
  }

  async _flushRemoteCandidates(side) {
    side.remoteDescriptionSet = true;
    for (const c of side.pendingRemoteCandidates.splice(0)) {
      await this._addRemoteCandidate(side, c);
    }
  }

  async _addRemoteCandidate(side, wire) {
    try {
      await side.pc.addIceCandidate(fromWireCandidate(wire));
    } catch (err) {
      if (side.pc.signalingState !== 'closed') {
        this._emitError(err, `adding a ${side.target} candidate failed (${wire.candidate})`);
      }
    }
  }

  _onRemoteCandidate(msg) {
    const wire = msg.candidate;
    if (!wire) return;
    let side;
    if (msg.target === 'publisher') {
      side = this._pub;
      if (!side) {
        this._log('publisher candidate without a publisher connection, dropped');
        return;
      }
    } else if (msg.target === 'subscriber') {
      side = this._sub;
      if (!side) {
        this._pendingSubscriberCandidates.push(wire);
        return;
      }
    } else {
      this._log('candidate with unknown target', msg.target);
      return;
    }
    if (!side.remoteDescriptionSet) {
      side.pendingRemoteCandidates.push(wire);
      return;
    }
    // Run after any SDP operation in flight so a candidate never races a re-offer.
    side.queue = side.queue.then(() => this._addRemoteCandidate(side, wire));
  }

  /** The screen's sender of `kind`: its transceiver from an earlier share, or a new one. */
  async _screenSender(kind, track, stream) {
    let transceiver = this._screenTransceivers[kind];
    if (transceiver && transceiver.currentDirection !== 'stopped') {
      await transceiver.sender.replaceTrack(track);
      transceiver.direction = 'sendonly';
    } else {
      // One encoding, sharp rather than smooth: a screen is read, not watched.
      const init = { direction: 'sendonly', streams: [stream] };
      if (kind === 'video') init.sendEncodings = [{ maxBitrate: SCREEN_MAX_BITRATE }];
      transceiver = this._pub.pc.addTransceiver(track, init);
      this._screenTransceivers[kind] = transceiver;
    }
    return { track, transceiver, wireTrackId: track.id, source: kind === 'video' ? 'screen' : 'screen_audio' };
  }

  /** Every track we publish now: {track, transceiver, wireTrackId, source}. */
  _publishedEntries() {
    const entries = [...this._local.values()];
    for (const e of [this._screen?.video, this._screen?.audio]) if (e) entries.push(e);
    return entries;
  }

  /**
   * Offers the publisher connection's current shape and applies the server's answer, one
   * negotiation at a time (each waits for the one before it). `publish_offer` declares the
   * source of every track we publish, by the track id of its a=msid.
   */
  _negotiatePublisher() {
    const side = this._pub;
    if (!side) return Promise.reject(new Error('not joined'));
    const run = side.queue.then(async () => {
      // A refused offer is rolled back; one refused for its rate is tried again once the
      // server's budget allows (a screen shared and stopped in quick succession).
      for (let attempt = 0; ; attempt++) {
        try {
          return await this._offerPublisher(side);
        } catch (err) {
          if (err.code !== 'rate_limited' || attempt >= OFFER_RETRIES || this._pub !== side) throw err;
          this._log(`publish_offer refused for its rate; again in ${OFFER_RETRY_MS << attempt} ms`);
          await new Promise((resolve) => { setTimeout(resolve, OFFER_RETRY_MS << attempt); });
        }
      }
    });
    // The queue goes on after a failed negotiation; the caller hears of the failure.
    side.queue = run.catch(() => {});
    return run;
  }

  /** One publish_offer and its answer (or the server's refusal, as an error with its code). */
  async _offerPublisher(side) {
    if (this._pub !== side || side.pc.signalingState === 'closed') return;
    const pc = side.pc;
    await pc.setLocalDescription(await pc.createOffer());
    if (this._pub !== side) return; // left meanwhile
    // The server keys tracks by the id in each m-section's a=msid; read it back from the
    // SDP rather than assume it equals MediaStreamTrack.id.
    const sections = parseMediaSections(pc.localDescription.sdp);
    const meta = [];
    for (const entry of this._publishedEntries()) {
      const mid = entry.transceiver.mid;
      const sec = mid != null ? sections.get(mid) : null;
      if (sec?.msid?.trackId) entry.wireTrackId = sec.msid.trackId;
      meta.push({ track_id: entry.wireTrackId, source: entry.source });
    }
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no publish_answer within ${ANSWER_TIMEOUT_MS / 1000} s`)), ANSWER_TIMEOUT_MS);
      side.answerWaiter = {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
    this._send({ type: 'publish_offer', sdp: pc.localDescription.sdp, tracks: meta });
    this._mark('publish_offer sent');
    if (!side.localSdpSent) this._flushLocalCandidates(side);
    let msg;
    try {
      msg = await answer;
    } catch (err) {
      side.answerWaiter = null;
      // Back to the last agreed shape, so the next negotiation starts from a stable state.
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    this._mark('publish_answer applied');
    if (!side.remoteDescriptionSet) await this._flushRemoteCandidates(side);
    this._updateState();
  }

  async _publish(stream) {
    const side = this._createPeerConnection('publisher');
    this._pub = side;
    const pc = side.pc;
    this._openDataChannels(pc);
    const audio = stream?.getAudioTracks()[0];
    const video = stream?.getVideoTracks()[0];
    for (const track of [audio, video]) {
      if (!track) continue;
      const init = { direction: 'sendonly', streams: [stream] };
      // The camera goes out as three simulcast layers unless turned off; audio (and video
      // without simulcast) as one plain encoding.
      if (track.kind === 'video' && this.simulcast) {
        init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
      }
      const transceiver = pc.addTransceiver(track, init);
      this._local.set(track.kind, {
        track,
        transceiver,
        wireTrackId: track.id,
        source: sourceFor(track.kind),
        muted: !track.enabled,
      });
    }
    this._updateState();
    await this._negotiatePublisher();

    // Mute state chosen before joining (e.g. joined with the microphone off).
    for (const [kind, local] of this._local) {
      if (local.muted) this._send({ type: 'mute', track_id: local.wireTrackId, muted: true });
      this._emit('localmute', { kind, muted: local.muted });
    }
  }

  _onPublishAnswer(msg) {
    const waiter = this._pub?.answerWaiter;
    if (!waiter) {
      this._log('publish_answer with no offer out, ignored');
      return;
    }
    this._pub.answerWaiter = null;
    waiter.resolve(msg);
  }

  _onSubscribeOffer(msg) {
    this._mark('subscribe_offer received');
    let side = this._sub;
    if (!side) {
      side = this._createPeerConnection('subscriber');
      this._sub = side;
      side.pendingRemoteCandidates.push(...this._pendingSubscriberCandidates.splice(0));
      side.pc.addEventListener('track', (ev) => {
        this._mark(`track ${ev.track.kind}`);
        this._log(`ontrack mid=${ev.transceiver?.mid} kind=${ev.track.kind} stream=${ev.streams[0]?.id} track=${ev.track.id}`);
      });
      // The server's `_reliable` and `_lossy` channels: what the others send arrives here.
      side.pc.addEventListener('datachannel', (ev) => {
        const channel = ev.channel;
        channel.binaryType = 'arraybuffer';
        this._log(`server data channel ${channel.label}`);
        channel.addEventListener('message', (m) => this._onDataMessage(channel.label, m.data));
      });
      this._updateState();
    }
    side.queue = side.queue.then(async () => {
      const pc = side.pc;
      if (pc.signalingState === 'closed') return;
      // The server starts forwarding a newly offered track only once it has our answer, and
      // refuses `update_subscription` for it until then: hold those back meanwhile.
      side.answering = true;
      try {
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        if (!side.remoteDescriptionSet) await this._flushRemoteCandidates(side);
        this._reconcileRemoteTracks();
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        this._send({ type: 'subscribe_answer', sdp: pc.localDescription.sdp });
        this._mark('subscribe_answer sent');
        if (!side.localSdpSent) this._flushLocalCandidates(side);
      } catch (err) {
        this._emitError(err, 'handling subscribe_offer failed');
      } finally {
        side.answering = false;
      }
      for (const trackId of this._subscriptions.keys()) this._syncSubscription(trackId);
      this._updateState();
    });
  }

  /**
   * After each subscribe_offer: bind every active receiving m-section to the participant and
   * track named by its a=msid; unbind sections that went inactive or changed owner.
   */
  _reconcileRemoteTracks() {
    const pc = this._sub?.pc;
    if (!pc?.remoteDescription) return;
    const sections = parseMediaSections(pc.remoteDescription.sdp);
    const live = new Set();
    for (const t of pc.getTransceivers()) {
      const mid = t.mid;
      if (mid == null) continue;
      const sec = sections.get(mid);
      const prev = this._bindings.get(mid);
      let next = null;
      if (sec && sec.port !== 0 && (sec.direction === 'sendonly' || sec.direction === 'sendrecv')
          && (sec.kind === 'audio' || sec.kind === 'video')) {
        let participantId = sec.msid?.streamId;
        const trackId = sec.msid?.trackId ?? t.receiver.track.id;
        if (!participantId || participantId === '-') participantId = this._ownerOfTrack(trackId);
        if (participantId && participantId !== this.participantId) {
          next = { mid, participantId, trackId, kind: sec.kind, track: t.receiver.track };
        }
      }
      const same = prev && next && prev.participantId === next.participantId
        && prev.trackId === next.trackId && prev.track === next.track;
      if (same) {
        live.add(mid);
        continue;
      }
      if (prev) this._unbind(prev);
      if (next && !this._departed.has(next.participantId) && !this._unpublished.has(next.trackId)) {
        this._bind(next);
        live.add(mid);
      }
    }
    for (const [mid, b] of [...this._bindings]) {
      if (!live.has(mid)) this._unbind(b);
    }
  }

  _ownerOfTrack(trackId) {
    for (const p of this._remote.values()) if (p.tracks.has(trackId)) return p.id;
    return null;
  }

  _bind(b) {
    this._bindings.set(b.mid, b);
    const p = this._ensureParticipant(b.participantId, null);
    p.media.set(b.trackId, b);
    if (!p.tracks.has(b.trackId)) {
      // Forwarded before (or without) a track_published: assume defaults until it arrives.
      p.tracks.set(b.trackId, { id: b.trackId, kind: b.kind, source: sourceFor(b.kind), muted: false });
    }
    this._emit('trackadded', {
      participantId: b.participantId, trackId: b.trackId, kind: b.kind, track: b.track, mid: b.mid,
    });
    this._emit('participantupdated', { participant: this._snapshot(p) });
    // A pin or tile size set before the track arrived (or before a renegotiation that
    // rebound it) takes effect now that the server forwards it (after our answer).
    if (b.kind === 'video') this._syncSubscription(b.trackId);
  }

  _unbind(b) {
    if (this._bindings.get(b.mid) === b) this._bindings.delete(b.mid);
    const sub = this._subscriptions.get(b.trackId);
    if (sub) sub.sent = null;
    const p = this._remote.get(b.participantId);
    if (p && p.media.get(b.trackId) === b) p.media.delete(b.trackId);
    this._emit('trackremoved', {
      participantId: b.participantId, trackId: b.trackId, kind: b.kind, track: b.track, mid: b.mid,
    });
    if (p) this._emit('participantupdated', { participant: this._snapshot(p) });
  }

  // ---------------------------------------------------------------------------------------
  // Participants and tracks

  _ensureParticipant(id, name, identity) {
    let p = this._remote.get(id);
    if (!p) {
      p = { id, name: name ?? '', identity: identity ?? null, tracks: new Map(), media: new Map() };
      this._remote.set(id, p);
    } else {
      if (name != null) p.name = name;
      if (identity != null) p.identity = identity;
    }
    return p;
  }

  _snapshot(p) {
    const tracks = [...p.tracks.values()].map((t) => ({
      id: t.id,
      kind: t.kind,
      source: t.source,
      muted: !!t.muted,
      receiving: p.media.has(t.id),
      ...(t.layers?.length ? { layers: t.layers.map((l) => ({ ...l })) } : {}),
      ...(this._subscriptions.get(t.id)?.pinned ? { pinned: this._subscriptions.get(t.id).pinned } : {}),
    }));
    const media = [...p.media.values()];
    const video = pickVideo(p, media);
    const isScreen = (b) => SCREEN_SOURCES.includes(p.tracks.get(b.trackId)?.source);
    const screen = media.find((b) => b.kind === 'video' && isScreen(b));
    const screenAudio = media.find((b) => b.kind === 'audio' && isScreen(b));
    const own = (t) => !SCREEN_SOURCES.includes(t.source);
    const audioMuted = !tracks.some((t) => t.kind === 'audio' && own(t) && !t.muted);
    const videoMuted = !tracks.some((t) => t.kind === 'video' && own(t) && !t.muted);
    return {
      id: p.id,
      name: p.name,
      identity: p.identity,
      tracks,
      audioMuted,
      videoMuted,
      videoTrackId: video?.trackId ?? null,
      audioTrack: media.find((b) => b.kind === 'audio' && !isScreen(b))?.track ?? null,
      videoTrack: video?.track ?? null,
      // What they share, if anything: shown large (the spotlight), with its sound.
      screenTrackId: screen?.trackId ?? null,
      screenTrack: screen?.track ?? null,
      screenAudioTrack: screenAudio?.track ?? null,
    };
  }

  _onParticipantJoined(info) {
    if (!info || info.id === this.participantId) return;
    this._departed.delete(info.id);
    const known = this._remote.has(info.id);
    const p = this._ensureParticipant(info.id, info.name, info.identity);
    this._emit(known ? 'participantupdated' : 'participantjoined', { participant: this._snapshot(p) });
  }

  _onParticipantLeft(id) {
    if (id === this.participantId) return;
    this._departed.add(id);
    const p = this._remote.get(id);
    if (!p) return;
    for (const b of [...p.media.values()]) {
      if (this._bindings.get(b.mid) === b) this._bindings.delete(b.mid);
    }
    for (const trackId of p.tracks.keys()) this._subscriptions.delete(trackId);
    this._remote.delete(id);
    this._emit('participantleft', { participantId: id, participant: this._snapshot(p) });
  }

  _onTrackPublished(participantId, track) {
    if (!track) return;
    if (participantId === this.participantId) {
      // Our own track, as the server registered it: adopt the server's id for `mute`.
      const entries = this._publishedEntries();
      const local = entries.find((l) => l.wireTrackId === track.id)
        ?? entries.find((l) => l.source === track.source && l.track.kind === track.kind);
      if (local && local.wireTrackId !== track.id) {
        this._log(`server registered our ${track.source} track as ${track.id} (offered ${local.wireTrackId})`);
        local.wireTrackId = track.id;
      }
      return;
    }
    if (this._departed.has(participantId)) return;
    const republished = this._unpublished.delete(track.id);
    const p = this._ensureParticipant(participantId, null);
    const prev = p.tracks.get(track.id);
    p.tracks.set(track.id, { ...prev, ...track });
    this._emit('participantupdated', { participant: this._snapshot(p) });
    // Its section may have arrived first, while the id still counted as unpublished.
    if (republished) this._reconcileRemoteTracks();
  }

  _onTrackUnpublished(participantId, trackId) {
    if (participantId === this.participantId) return;
    this._unpublished.add(trackId);
    const p = this._remote.get(participantId);
    if (!p) return;
    p.tracks.delete(trackId);
    const b = p.media.get(trackId);
    if (b) this._unbind(b);
    this._subscriptions.delete(trackId);
    this._emit('participantupdated', { participant: this._snapshot(p) });
  }

  _onTrackMuted(participantId, trackId, muted) {
    if (participantId === this.participantId) return; // confirmation of our own mute
    const p = this._remote.get(participantId);
    if (!p) return;
    const t = p.tracks.get(trackId);
    if (t) {
      t.muted = !!muted;
    } else {
      const b = p.media.get(trackId);
      const kind = b?.kind ?? 'audio';
      p.tracks.set(trackId, { id: trackId, kind, source: sourceFor(kind), muted: !!muted });
    }
    this._emit('participantupdated', { participant: this._snapshot(p) });
  }

  _onActiveSpeakers(speakers) {
    const list = (Array.isArray(speakers) ? speakers : [])
      .filter((s) => s && typeof s.participant_id === 'string')
      .map((s) => ({ participantId: s.participant_id, level: Number(s.level) || 0 }));
    this._activeSpeakers = list;
    this._emit('activespeakers', { speakers: this.activeSpeakers() });
  }

  // ---------------------------------------------------------------------------------------
  // Subscriptions (simulcast layer selection)

  /** The remote video track meant by `id`: a track id, or a participant id (its camera). */
  _videoTrackIdFor(id) {
    for (const p of this._remote.values()) {
      const t = p.tracks.get(id);
      if (t?.kind === 'video') return id;
      const b = p.media.get(id);
      if (b?.kind === 'video') return id;
    }
    const p = this._remote.get(id);
    if (p) {
      const bound = pickVideo(p, [...p.media.values()]);
      if (bound) return bound.trackId;
      const videos = [...p.tracks.values()].filter((t) => t.kind === 'video' && t.source !== 'screen');
      const t = videos.find((v) => v.source === 'camera') ?? videos[0];
      if (t) return t.id;
      throw new Error(`participant ${id} publishes no video`);
    }
    throw new Error(`no remote video track or participant ${JSON.stringify(id)}`);
  }

  _subscription(trackId) {
    let sub = this._subscriptions.get(trackId);
    if (!sub) {
      sub = { pinned: null, size: null, sent: null };
      this._subscriptions.set(trackId, sub);
    }
    return sub;
  }

  _isReceiving(trackId) {
    for (const b of this._bindings.values()) if (b.trackId === trackId) return true;
    return false;
  }

  /**
   * Tells the server what we want of `trackId`, if that differs from what it last heard (or
   * always, with `force`). Only for a track we receive, and not while we answer an offer:
   * the server refuses those, and this runs again when the track arrives and after each
   * answer.
   */
  _syncSubscription(trackId, { force = false } = {}) {
    const sub = this._subscriptions.get(trackId);
    if (!sub || !this._isReceiving(trackId) || this._sub?.answering) return;
    let want;
    if (sub.pinned) want = { quality: sub.pinned };
    else if (sub.size) {
      want = sub.size.width > 0 && sub.size.height > 0
        ? { width: sub.size.width, height: sub.size.height }
        : { quality: 'off' };
    } else if (sub.sent) want = { quality: 'high' }; // unpinned, no size known: the default
    else return;
    const key = JSON.stringify(want);
    if (!force && key === sub.sent) return;
    if (!force && sub.sent == null && key === '{"quality":"high"}') return; // server default
    if (this._send({ type: 'update_subscription', track_id: trackId, ...want })) sub.sent = key;
  }

  _setLocalEnabled(kind, enabled) {
    const local = this._local.get(kind);
    if (!local) return false;
    local.track.enabled = !!enabled;
    local.muted = !enabled;
    if (this._pub?.localSdpSent) {
      this._send({ type: 'mute', track_id: local.wireTrackId, muted: local.muted });
    }
    this._emit('localmute', { kind, muted: local.muted });
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // State and events

  _updateState() {
    if (!this._ws) return;
    const ws = this._ws;
    if (ws.readyState === WebSocket.CONNECTING || !this._self) {
      this._setState(ws.readyState === WebSocket.CLOSED ? 'disconnected' : 'connecting');
      return;
    }
    if (ws.readyState !== WebSocket.OPEN) {
      this._setState('disconnected');
      return;
    }
    // A subscriber connection whose offer had no media yet has no transport: it stays "new"
    // and says nothing about connectivity.
    const sides = [this._pub, this._sub].filter((s) => s
      && !(s === this._sub && s.pc.connectionState === 'new' && s.pc.getTransceivers().length === 0));
    const states = sides.map((s) => s.pc.connectionState);
    if (states.includes('failed')) this._setState('failed');
    else if (states.includes('disconnected') || states.includes('closed')) this._setState('disconnected');
    else if (states.every((s) => s === 'connected')) this._setState('connected');
    else this._setState('connecting');
  }

  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this._emit('statechange', { state });
  }

  _mark(event) {
    if (this.timeline.length < 200) this.timeline.push({ event, at: Math.round(performance.now()) });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _emitError(err, context) {
    const error = context ? new Error(`${context}: ${err?.message ?? err}`) : err;
    console.error('[switchyard]', error);
    this._emit('error', { error });
  }

  _log(...args) {
    console.debug('[switchyard]', ...args);
  }
}

/** The camera among a participant's received videos (a shared screen never is one). */
function pickVideo(p, media) {
  const videos = media.filter((b) => b.kind === 'video' && !SCREEN_SOURCES.includes(p.tracks.get(b.trackId)?.source));
  return videos.find((b) => p.tracks.get(b.trackId)?.source === 'camera') ?? videos[0];
}
