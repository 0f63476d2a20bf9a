// The meeting UI: join form, participant tiles, controls. All media and signaling logic lives
// in client.js; this file only renders what the client reports.

import { setupChat } from './chat.js';
import { SwitchyardClient } from './client.js';

const $ = (id) => document.getElementById(id);

const els = {
  joinView: $('join-view'),
  joinForm: $('join-form'),
  name: $('name'),
  room: $('room'),
  join: $('join'),
  meetingView: $('meeting-view'),
  tiles: $('tiles'),
  controls: $('controls'),
  toggleMic: $('toggle-mic'),
  toggleCamera: $('toggle-camera'),
  toggleScreen: $('toggle-screen'),
  gallery: $('gallery'),
  spotlight: $('spotlight'),
  spotlightLabel: $('spotlight-label'),
  leave: $('leave'),
  connectionState: $('connection-state'),
  roomInfo: $('room-info'),
  roomLabel: $('room-label'),
  participantCount: $('participant-count'),
  copyLink: $('copy-link'),
  status: $('status'),
};

const params = new URLSearchParams(location.search);
const client = new SwitchyardClient({
  debug: params.has('debug'),
  // ?simulcast=0 publishes the camera as one plain encoding.
  simulcast: !['0', 'false', 'off', 'no'].includes(params.get('simulcast') ?? ''),
});
// For the console and tests: the client, with setQuality(idOrParticipantId, quality),
// setAutoQuality(idOrParticipantId) and activeSpeakers() among its methods.
window.switchyard = client;

// The chat panel and file transfers (chat.js); `chat.reset()` when the meeting ends.
let chat = null;

// How long a tile's size must stay put before the server hears about it.
const SIZE_DEBOUNCE_MS = 300;

let localStream = null;
let localTile = null;
const tiles = new Map(); // participant id -> tile element (remote only)
// Participant id -> {name, trackId, track, audioTrack} of each remote screen share, oldest
// first: the newest is in the spotlight.
const screens = new Map();
let shownScreen = null; // the track id in the spotlight

// ------------------------------------------------------------------------------------------
// Icons (inline SVG, stroke style)

const ICONS = {
  mic: '<rect x="9" y="2" width="6" height="12" rx="3"/><path d="M5 10v1a7 7 0 0 0 14 0v-1"/><path d="M12 18v4"/>',
  micOff: '<path d="M15 9.3V5a3 3 0 0 0-5.7-1.3"/><path d="M9 9v2a3 3 0 0 0 5.1 2.1"/><path d="M19 10v1a7 7 0 0 1-.8 3.2"/><path d="M5 10v1a7 7 0 0 0 11.9 5"/><path d="M12 18v4"/><path d="M3 3l18 18"/>',
  cam: '<rect x="2" y="6" width="14" height="12" rx="2"/><path d="M16 10.5l6-3.5v10l-6-3.5z"/>',
  camOff: '<path d="M10.7 6H14a2 2 0 0 1 2 2v3.3l1 1 5-3.3v10"/><path d="M16 16v0a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h2"/><path d="M3 3l18 18"/>',
  screen: '<rect x="2" y="3" width="20" height="14" rx="2"/><path d="M8 21h8"/><path d="M12 17v4"/><path d="M9 10l3-3 3 3"/><path d="M12 7v6"/>',
  leave: '<path d="M10 17l5-5-5-5"/><path d="M15 12H3"/><path d="M14 3h5a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2h-5"/>',
};

function icon(name, cls = 'icon') {
  return `<svg class="${cls}" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${ICONS[name]}</svg>`;
}

// ------------------------------------------------------------------------------------------
// Status area: errors stay until dismissed, notices fade.

function showStatus(text, kind = 'info', timeoutMs = kind === 'error' ? 0 : 4000) {
  const item = document.createElement('div');
  item.className = `status-item ${kind}`;
  item.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const span = document.createElement('span');
  span.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'status-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => item.remove());
  item.append(span, close);
  els.status.append(item);
  while (els.status.children.length > 5) els.status.firstElementChild.remove();
  if (timeoutMs > 0) {
    setTimeout(() => {
      item.classList.add('fading');
      setTimeout(() => item.remove(), 400);
    }, timeoutMs);
  }
}

// ------------------------------------------------------------------------------------------
// Tiles

function initials(name) {
  const parts = (name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2);
  return letters.toUpperCase();
}

function hueFor(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function createTile({ id, name, local }) {
  const tile = document.createElement('div');
  tile.className = local ? 'tile local' : 'tile';
  tile.dataset.participantId = id ?? '';
  tile.innerHTML = `
    <video playsinline autoplay muted></video>
    <div class="avatar"><span class="avatar-circle"></span></div>
    <div class="tile-label">
      <span class="badge mic-off" title="Microphone muted">${icon('micOff')}</span>
      <span class="badge cam-off" title="Camera off">${icon('camOff')}</span>
      <span class="tile-name"></span>
    </div>
    <div class="tile-state"></div>`;
  if (!local) {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    tile.append(audio);
  }
  setTileName(tile, name, local);
  setTileMuted(tile, true, true);
  setTileSpeaking(tile, null);
  return tile;
}

function setTileName(tile, name, local) {
  const display = name || 'Guest';
  tile.dataset.name = name ?? '';
  tile.querySelector('.tile-name').textContent = local ? `${display} (you)` : display;
  const circle = tile.querySelector('.avatar-circle');
  circle.textContent = initials(display);
  circle.style.setProperty('--hue', hueFor(display));
}

function setTileMuted(tile, audioMuted, videoMuted) {
  tile.dataset.audioMuted = String(!!audioMuted);
  tile.dataset.videoMuted = String(!!videoMuted);
}

// ------------------------------------------------------------------------------------------
// Active speakers: the server's view (`active_speakers`), nothing measured locally. The own
// tile is highlighted when the server counts us as a speaker too.

function setTileSpeaking(tile, speaker) {
  tile.dataset.speaking = String(!!speaker);
  if (speaker) tile.style.setProperty('--level', String(Math.min(1, Math.max(0, speaker.level))));
  else tile.style.removeProperty('--level');
}

function renderSpeakers() {
  const speaking = new Map(client.activeSpeakers().map((s) => [s.participantId, s]));
  for (const [id, tile] of tiles) setTileSpeaking(tile, speaking.get(id));
  if (localTile) setTileSpeaking(localTile, client.participantId ? speaking.get(client.participantId) : null);
}

// ------------------------------------------------------------------------------------------
// Tile sizes -> simulcast layer: each remote tile reports the size its video is shown at
// (CSS pixels x devicePixelRatio), once it has been stable for SIZE_DEBOUNCE_MS. The client
// sends only actual changes, and nothing for a track pinned with setQuality().

const sizeTimers = new Map(); // tile -> timeout

function scheduleSizeReport(tile, delay = SIZE_DEBOUNCE_MS) {
  clearTimeout(sizeTimers.get(tile));
  sizeTimers.set(tile, setTimeout(() => {
    sizeTimers.delete(tile);
    reportSize(tile);
  }, delay));
}

function reportSize(tile) {
  const trackId = tile.dataset.videoTrackId;
  if (!trackId || !tile.isConnected || !client.joined) return;
  const rect = tile.querySelector('video').getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  try {
    // A hidden (0-size) tile asks for nothing of the track.
    client.setVideoSize(trackId, Math.round(rect.width * dpr), Math.round(rect.height * dpr));
  } catch (err) {
    console.debug('[switchyard] no size report:', err.message);
  }
}

const sizeObserver = new ResizeObserver((entries) => {
  for (const entry of entries) scheduleSizeReport(entry.target);
});

function attach(el, track) {
  const current = el.srcObject?.getTracks?.()[0] ?? null;
  if (current === track) return;
  el.srcObject = track ? new MediaStream([track]) : null;
  if (track) {
    el.play().catch((err) => {
      if (err.name === 'NotAllowedError') askForAudioGesture(el);
    });
  }
}

let gesturePending = false;
function askForAudioGesture(el) {
  if (gesturePending) return;
  gesturePending = true;
  showStatus('Click anywhere to enable sound.', 'warn', 8000);
  document.addEventListener('click', () => {
    gesturePending = false;
    for (const media of document.querySelectorAll('.tile audio')) media.play().catch(() => {});
    el.play().catch(() => {});
  }, { once: true });
}

function renderRemote(p) {
  let tile = tiles.get(p.id);
  if (!tile) {
    tile = createTile({ id: p.id, name: p.name, local: false });
    tiles.set(p.id, tile);
    els.tiles.append(tile);
    sizeObserver.observe(tile);
    layout();
    renderSpeakers();
  }
  setTileName(tile, p.name, false);
  setTileMuted(tile, p.audioMuted, p.videoMuted);
  attach(tile.querySelector('video'), p.videoTrack);
  attach(tile.querySelector('audio'), p.audioTrack);
  tile.classList.toggle('has-video', !!p.videoTrack && !p.videoMuted);
  setScreen(p);
  const videoTrackId = p.videoTrackId ?? '';
  if (tile.dataset.videoTrackId !== videoTrackId) {
    tile.dataset.videoTrackId = videoTrackId;
    // A newly received video: tell the server its tile size right away.
    if (videoTrackId) scheduleSizeReport(tile, 0);
  }
  updateCount();
}

function removeRemote(id) {
  const tile = tiles.get(id);
  if (!tile) return;
  tiles.delete(id);
  sizeObserver.unobserve(tile);
  clearTimeout(sizeTimers.get(tile));
  sizeTimers.delete(tile);
  for (const media of tile.querySelectorAll('video, audio')) media.srcObject = null;
  tile.remove();
  if (screens.delete(id)) renderSpotlight();
  layout();
  updateCount();
}

// ------------------------------------------------------------------------------------------
// Screen share: the newest remote share fills the spotlight above a strip of the tiles;
// our own share shows there (as a preview) only while nobody else shares.

function setScreen(p) {
  const had = screens.get(p.id);
  if (p.screenTrack) {
    if (had?.track === p.screenTrack && had.audioTrack === p.screenAudioTrack) return;
    if (had?.track !== p.screenTrack) screens.delete(p.id); // a new share goes to the front
    screens.set(p.id, { name: p.name, trackId: p.screenTrackId, track: p.screenTrack, audioTrack: p.screenAudioTrack });
  } else if (!had) {
    return;
  } else {
    screens.delete(p.id);
  }
  renderSpotlight();
}

function renderSpotlight() {
  const remote = [...screens.values()].at(-1) ?? null;
  const local = client.screenStream;
  const video = els.spotlight.querySelector('video');
  const audio = els.spotlight.querySelector('audio');
  // Screens we do not show are not forwarded to us.
  for (const s of screens.values()) {
    if (s === remote) continue;
    try { client.setVideoSize(s.trackId, 0, 0); } catch { /* gone */ }
  }
  if (remote) {
    attach(video, remote.track);
    attach(audio, remote.audioTrack);
    els.spotlightLabel.textContent = `${remote.name || 'Guest'} is sharing their screen`;
    els.spotlight.dataset.videoTrackId = remote.trackId;
    els.spotlight.dataset.participantId = [...screens.entries()].find(([, s]) => s === remote)[0];
    if (shownScreen !== remote.trackId) scheduleSizeReport(els.spotlight, 0);
    shownScreen = remote.trackId;
  } else {
    shownScreen = null;
    delete els.spotlight.dataset.videoTrackId;
    els.spotlight.dataset.participantId = local ? (client.participantId ?? '') : '';
    attach(video, local?.getVideoTracks()[0] ?? null);
    attach(audio, null);
    els.spotlightLabel.textContent = local ? 'You are sharing your screen' : '';
  }
  const on = !!(remote || local);
  els.spotlight.hidden = !on;
  els.gallery.classList.toggle('spotlight-mode', on);
  layout();
}

sizeObserver.observe(els.spotlight);

async function toggleScreenShare() {
  els.toggleScreen.disabled = true;
  try {
    if (client.isScreenSharing()) await client.stopScreenShare();
    else await client.startScreenShare();
  } catch (err) {
    // Closing the browser's picker is a choice, not an error.
    if (err.name === 'NotAllowedError' || err.name === 'AbortError') showStatus('Screen share cancelled.');
    else showStatus(`Screen share failed: ${err.message}`, 'error');
  } finally {
    renderLocal();
  }
}

function renderLocal() {
  if (!localTile) return;
  localTile.dataset.participantId = client.participantId ?? '';
  const audioMuted = !client.isMicrophoneEnabled();
  const videoMuted = !client.isCameraEnabled();
  setTileMuted(localTile, audioMuted, videoMuted);
  localTile.classList.toggle('has-video', !videoMuted);
  setControl(els.toggleMic, client.hasLocal('audio'), !audioMuted,
    ['mic', 'Mute'], ['micOff', 'Unmute']);
  setControl(els.toggleCamera, client.hasLocal('video'), !videoMuted,
    ['cam', 'Stop video'], ['camOff', 'Start video']);
  const sharing = client.isScreenSharing();
  const canShare = client.joined && !!navigator.mediaDevices?.getDisplayMedia;
  els.toggleScreen.disabled = !canShare;
  els.toggleScreen.classList.toggle('active', sharing);
  els.toggleScreen.setAttribute('aria-pressed', String(sharing));
  els.toggleScreen.innerHTML = `${icon('screen')}<span class="label">${sharing ? 'Stop sharing' : 'Share screen'}</span>`;
  els.toggleScreen.title = canShare ? (sharing ? 'Stop sharing your screen' : 'Share your screen') : 'Screen sharing is not available';
  renderSpeakers();
}

function setControl(button, available, on, [onIcon, onLabel], [offIcon, offLabel]) {
  button.disabled = !available;
  button.setAttribute('aria-pressed', String(!on));
  button.classList.toggle('off', !on || !available);
  button.innerHTML = `${icon(on ? onIcon : offIcon)}<span class="label">${on ? onLabel : offLabel}</span>`;
  button.title = available ? (on ? onLabel : offLabel) : 'No device';
}

function updateCount() {
  const n = tiles.size + (localTile ? 1 : 0);
  els.participantCount.textContent = `${n} ${n === 1 ? 'participant' : 'participants'}`;
}

// Gallery layout: the tile width that fits every tile at 16:9 into the available area (in
// spotlight mode the strip's CSS sets it).
function layout() {
  const n = els.tiles.children.length;
  if (n === 0) return;
  if (els.gallery.classList.contains('spotlight-mode')) {
    els.tiles.style.removeProperty('--tile-w');
    return;
  }
  const style = getComputedStyle(els.tiles);
  const gap = parseFloat(style.columnGap) || 12;
  const width = els.tiles.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const height = els.tiles.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  if (width <= 0 || height <= 0) return;
  let best = 0;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * 16 / 9);
    if (w > best) best = w;
  }
  els.tiles.style.setProperty('--tile-w', `${Math.floor(best)}px`);
}
new ResizeObserver(layout).observe(els.tiles);

// ------------------------------------------------------------------------------------------
// Connection state

function renderState(state) {
  els.connectionState.textContent = state;
  els.connectionState.dataset.state = state;
}

client.addEventListener('statechange', (ev) => renderState(ev.detail.state));
client.addEventListener('participantjoined', (ev) => {
  renderRemote(ev.detail.participant);
  if (client.joined && ev.detail.participant.name && joinedAnnounced) {
    showStatus(`${ev.detail.participant.name} joined`);
  }
});
client.addEventListener('participantupdated', (ev) => renderRemote(ev.detail.participant));
client.addEventListener('participantleft', (ev) => {
  removeRemote(ev.detail.participantId);
  const name = ev.detail.participant?.name;
  if (name && client.joined) showStatus(`${name} left`);
});
client.addEventListener('localmute', renderLocal);
client.addEventListener('localscreen', () => {
  renderSpotlight();
  renderLocal();
});
client.addEventListener('activespeakers', renderSpeakers);
client.addEventListener('servererror', (ev) => {
  showStatus(`Server error (${ev.detail.code}): ${ev.detail.message}`, 'error');
});
client.addEventListener('error', (ev) => {
  showStatus(ev.detail.error?.message ?? String(ev.detail.error), 'error');
});
client.addEventListener('closed', (ev) => {
  // A failed join is reported by join() itself; this is for a session that ends on its own.
  if (ev.detail.reason !== 'left' && joinedAnnounced) {
    showStatus(`Disconnected: ${ev.detail.reason}`, 'error');
    endMeeting(false);
  }
});

// ------------------------------------------------------------------------------------------
// Join / leave

let joinedAnnounced = false;

async function getLocalMedia() {
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const attempts = [{ audio, video }, { audio }, { video }];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      lastError = err;
    }
  }
  showStatus(`No camera or microphone available (${lastError?.name ?? 'unsupported'}); joining without them.`, 'warn', 8000);
  return new MediaStream();
}

function showMeeting(show) {
  els.joinView.hidden = show;
  els.meetingView.hidden = !show;
  els.controls.hidden = !show;
  els.roomInfo.hidden = !show;
  document.body.classList.toggle('in-meeting', show);
}

async function join(ev) {
  ev.preventDefault();
  const name = els.name.value.trim();
  const room = els.room.value.trim();
  if (!name || !room) {
    showStatus('Enter your name and a room.', 'warn');
    return;
  }
  els.join.disabled = true;
  els.join.textContent = 'Joining…';
  try {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error('this page needs a secure context (https or localhost) for camera access');
    }
    localStream = await getLocalMedia();
    try { localStorage.setItem('switchyard.name', name); } catch { /* private mode */ }

    els.roomLabel.textContent = room;
    localTile = createTile({ id: '', name, local: true });
    els.tiles.replaceChildren(localTile);
    attach(localTile.querySelector('video'), localStream.getVideoTracks()[0] ?? null);
    showMeeting(true);
    layout();

    const token = await accessToken(room, name);
    await client.join({ room, name, token, stream: localStream });
    joinedAnnounced = true;
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    history.replaceState(null, '', url);
    renderLocal();
    updateCount();
  } catch (err) {
    showStatus(`Could not join: ${err.message}`, 'error');
    endMeeting(true);
  } finally {
    els.join.disabled = false;
    els.join.textContent = 'Join';
  }
}

/** A stable identity for this tab: the same one again after a reload, so the new session
 * replaces the old one instead of showing the same person twice. */
function tabIdentity(name) {
  const key = 'switchyard.identity';
  let identity = null;
  try { identity = sessionStorage.getItem(key); } catch { /* private mode */ }
  if (!identity) {
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 24) || 'guest';
    const random = crypto.getRandomValues(new Uint8Array(4));
    identity = `${slug}-${[...random].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
    try { sessionStorage.setItem(key, identity); } catch { /* private mode */ }
  }
  return identity;
}

/**
 * The access token to join with: `?token=` when the page was opened with one (your backend
 * minted it), otherwise one from the server's development-mode route.
 */
async function accessToken(room, name) {
  const given = new URL(location.href).searchParams.get('token');
  if (given) return given;
  const query = new URLSearchParams({ room, identity: tabIdentity(name), name });
  const res = await fetch(`/dev/token?${query}`);
  if (res.status === 404) {
    throw new Error('this server needs an access token: open the page with ?token=<token from your backend>');
  }
  if (!res.ok) throw new Error(`could not get a development token (HTTP ${res.status})`);
  return (await res.json()).token;
}

function endMeeting(sendLeave) {
  if (sendLeave) client.leave();
  joinedAnnounced = false;
  chat.reset();
  for (const id of [...tiles.keys()]) removeRemote(id);
  screens.clear();
  renderSpotlight();
  localTile = null;
  els.tiles.replaceChildren();
  if (localStream) {
    for (const t of localStream.getTracks()) t.stop();
    localStream = null;
  }
  showMeeting(false);
}

chat = setupChat({ client, showStatus });
els.joinForm.addEventListener('submit', join);
els.toggleMic.addEventListener('click', () => {
  client.setMicrophoneEnabled(!client.isMicrophoneEnabled());
});
els.toggleCamera.addEventListener('click', () => {
  client.setCameraEnabled(!client.isCameraEnabled());
});
els.toggleScreen.addEventListener('click', toggleScreenShare);
els.leave.addEventListener('click', () => {
  endMeeting(true);
  showStatus('You left the meeting.');
});
els.copyLink.addEventListener('click', async () => {
  const url = new URL(location.href);
  url.search = '';
  url.searchParams.set('room', client.room ?? els.room.value);
  try {
    await navigator.clipboard.writeText(url.href);
    showStatus('Invite link copied.');
  } catch {
    showStatus(`Invite link: ${url.href}`, 'info', 10000);
  }
});
window.addEventListener('pagehide', () => client.leave());

document.addEventListener('keydown', (ev) => {
  if (!client.joined || ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
  if (ev.key === 'm' && !ev.ctrlKey && !ev.metaKey) els.toggleMic.click();
  if (ev.key === 'v' && !ev.ctrlKey && !ev.metaKey) els.toggleCamera.click();
});

// Prefill from ?room= and ?name= (never auto-join: the user, or a test, clicks Join).
function randomRoom() {
  const words = ['amber', 'birch', 'cedar', 'delta', 'ember', 'fjord', 'grove', 'harbor', 'iris', 'juniper'];
  const pick = () => words[Math.floor(Math.random() * words.length)];
  return `${pick()}-${pick()}-${Math.floor(Math.random() * 900 + 100)}`;
}

let savedName = '';
try { savedName = localStorage.getItem('switchyard.name') ?? ''; } catch { /* private mode */ }
els.name.value = params.get('name') ?? savedName;
els.room.value = params.get('room') ?? randomRoom();
renderState(client.state);
showMeeting(false);
els.join.disabled = false; // enabled only once this module runs
(els.name.value ? els.join : els.name).focus();
