// The meeting UI: join form, participant tiles, controls. All media and signaling logic lives
// in client.js; this file only renders what the client reports.

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
  leave: $('leave'),
  connectionState: $('connection-state'),
  roomInfo: $('room-info'),
  roomLabel: $('room-label'),
  participantCount: $('participant-count'),
  copyLink: $('copy-link'),
  status: $('status'),
};

const params = new URLSearchParams(location.search);
const client = new SwitchyardClient({ debug: params.has('debug') });
window.switchyard = client;

let localStream = null;
let localTile = null;
const tiles = new Map(); // participant id -> tile element (remote only)
let levelTimer = null;

// ------------------------------------------------------------------------------------------
// Icons (inline SVG, stroke style)

const ICONS = {
  mic: '<rect x="9" y="2" width="6" height="12" rx="3"/><path d="M5 10v1a7 7 0 0 0 14 0v-1"/><path d="M12 18v4"/>',
  micOff: '<path d="M15 9.3V5a3 3 0 0 0-5.7-1.3"/><path d="M9 9v2a3 3 0 0 0 5.1 2.1"/><path d="M19 10v1a7 7 0 0 1-.8 3.2"/><path d="M5 10v1a7 7 0 0 0 11.9 5"/><path d="M12 18v4"/><path d="M3 3l18 18"/>',
  cam: '<rect x="2" y="6" width="14" height="12" rx="2"/><path d="M16 10.5l6-3.5v10l-6-3.5z"/>',
  camOff: '<path d="M10.7 6H14a2 2 0 0 1 2 2v3.3l1 1 5-3.3v10"/><path d="M16 16v0a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h2"/><path d="M3 3l18 18"/>',
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
    layout();
  }
  setTileName(tile, p.name, false);
  setTileMuted(tile, p.audioMuted, p.videoMuted);
  attach(tile.querySelector('video'), p.videoTrack);
  attach(tile.querySelector('audio'), p.audioTrack);
  tile.classList.toggle('has-video', !!p.videoTrack && !p.videoMuted);
  updateCount();
}

function removeRemote(id) {
  const tile = tiles.get(id);
  if (!tile) return;
  tiles.delete(id);
  for (const media of tile.querySelectorAll('video, audio')) media.srcObject = null;
  tile.remove();
  layout();
  updateCount();
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

// Gallery layout: the tile width that fits every tile at 16:9 into the available area.
function layout() {
  const n = els.tiles.children.length;
  if (n === 0) return;
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

// Speaking indicator from the audio levels in the stats (subscriber inbound-rtp, our own
// outbound media-source).
async function pollLevels() {
  if (!client.joined) return;
  let stats;
  try {
    stats = await client.getStats();
  } catch {
    return;
  }
  const byMediaTrack = new Map(client.remoteTracks().map((t) => [t.mediaTrackId, t.participantId]));
  const speaking = new Set();
  for (const s of stats.subscriber) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio' && (s.audioLevel ?? 0) > 0.02) {
      const id = byMediaTrack.get(s.trackIdentifier);
      if (id) speaking.add(id);
    }
  }
  for (const [id, tile] of tiles) {
    tile.classList.toggle('speaking', speaking.has(id) && tile.dataset.audioMuted !== 'true');
  }
  if (localTile) {
    const src = stats.publisher.find((s) => s.type === 'media-source' && s.kind === 'audio');
    localTile.classList.toggle('speaking', client.isMicrophoneEnabled() && (src?.audioLevel ?? 0) > 0.02);
  }
}

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

    await client.join({ room, name, stream: localStream });
    joinedAnnounced = true;
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    history.replaceState(null, '', url);
    renderLocal();
    updateCount();
    clearInterval(levelTimer);
    levelTimer = setInterval(pollLevels, 500);
  } catch (err) {
    showStatus(`Could not join: ${err.message}`, 'error');
    endMeeting(true);
  } finally {
    els.join.disabled = false;
    els.join.textContent = 'Join';
  }
}

function endMeeting(sendLeave) {
  if (sendLeave) client.leave();
  clearInterval(levelTimer);
  levelTimer = null;
  joinedAnnounced = false;
  for (const id of [...tiles.keys()]) removeRemote(id);
  localTile = null;
  els.tiles.replaceChildren();
  if (localStream) {
    for (const t of localStream.getTracks()) t.stop();
    localStream = null;
  }
  showMeeting(false);
}

els.joinForm.addEventListener('submit', join);
els.toggleMic.addEventListener('click', () => {
  client.setMicrophoneEnabled(!client.isMicrophoneEnabled());
});
els.toggleCamera.addEventListener('click', () => {
  client.setCameraEnabled(!client.isCameraEnabled());
});
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
  if (!client.joined || ev.target instanceof HTMLInputElement) return;
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
