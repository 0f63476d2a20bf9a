// The chat panel: messages (name, time, text), an unread badge while the panel is closed,
// and files to everyone or one participant with a progress bar on both ends and a download
// link once one has arrived. Everything travels through the client's data channels
// (sendData on topic `chat`, sendFile); this file only renders.

export const CHAT_TOPIC = 'chat';

const $ = (id) => document.getElementById(id);

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function formatTime(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function setupChat({ client, showStatus }) {
  const els = {
    panel: $('chat-panel'),
    toggle: $('toggle-chat'),
    unread: $('chat-unread'),
    close: $('chat-close'),
    log: $('chat-log'),
    form: $('chat-form'),
    to: $('chat-to'),
    input: $('chat-input'),
    sendFile: $('send-file'),
    fileInput: $('file-input'),
  };
  let unread = 0;
  const transfers = new Map(); // transfer id -> list item
  const downloads = []; // object URLs, revoked when the meeting ends

  const nameOf = (participantId, identity) => {
    if (participantId && participantId === client.participantId) return client.name ?? 'You';
    return client.getParticipant(participantId)?.name || identity || 'Someone';
  };
  const nameOfIdentity = (identity) => client.remoteParticipants().find((p) => p.identity === identity)?.name ?? identity;

  function isOpen() {
    return !els.panel.hidden;
  }

  function setUnread(n) {
    unread = n;
    els.unread.textContent = String(n);
    els.unread.hidden = n === 0;
    els.toggle.dataset.unread = String(n);
  }

  function open(show) {
    els.panel.hidden = !show;
    els.toggle.setAttribute('aria-pressed', String(show));
    document.body.classList.toggle('chat-open', show);
    if (show) {
      setUnread(0);
      els.input.focus();
      els.log.scrollTop = els.log.scrollHeight;
    }
    // The tiles' area changed size.
    window.dispatchEvent(new Event('resize'));
  }

  function item(kind, { from, to, mine }) {
    const li = document.createElement('li');
    li.className = `chat-item ${kind}${mine ? ' mine' : ''}`;
    const meta = document.createElement('div');
    meta.className = 'chat-meta';
    const who = document.createElement('span');
    who.className = 'chat-who';
    who.textContent = from;
    const when = document.createElement('time');
    const now = new Date();
    when.dateTime = now.toISOString();
    when.textContent = formatTime(now);
    meta.append(who);
    if (to) {
      const privately = document.createElement('span');
      privately.className = 'chat-private';
      privately.textContent = mine ? `to ${to}` : 'privately';
      meta.append(privately);
    }
    meta.append(when);
    li.append(meta);
    return li;
  }

  function append(li, counts) {
    const atBottom = els.log.scrollHeight - els.log.scrollTop - els.log.clientHeight < 40;
    els.log.append(li);
    if (atBottom || li.classList.contains('mine')) els.log.scrollTop = els.log.scrollHeight;
    if (counts && !isOpen()) setUnread(unread + 1);
  }

  function addMessage({ from, to, text, mine }) {
    const li = item('chat-message', { from, to, mine });
    const p = document.createElement('p');
    p.className = 'chat-text';
    p.textContent = text;
    li.append(p);
    append(li, !mine);
  }

  function fileItem(detail, mine, to) {
    let li = transfers.get(detail.transferId);
    if (li) return li;
    li = item('chat-file', { from: mine ? client.name ?? 'You' : nameOf(detail.participantId, detail.identity), to, mine });
    li.dataset.transferId = detail.transferId;
    const name = document.createElement('div');
    name.className = 'file-name';
    name.textContent = `${detail.name} (${formatSize(detail.size)})`;
    const bar = document.createElement('progress');
    bar.className = 'file-progress';
    bar.max = Math.max(1, detail.size);
    bar.value = 0;
    const state = document.createElement('div');
    state.className = 'file-state';
    state.textContent = mine ? 'Sending…' : 'Receiving…';
    li.append(name, bar, state);
    transfers.set(detail.transferId, li);
    append(li, !mine);
    return li;
  }

  // Incoming.
  client.addEventListener('data', (ev) => {
    const { participantId, identity, topic, data } = ev.detail;
    if (topic !== CHAT_TOPIC || typeof data !== 'string') return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof message?.text !== 'string') return;
    addMessage({ from: nameOf(participantId, identity), to: message.private ? 'you' : null, text: message.text, mine: false });
  });
  client.addEventListener('fileprogress', (ev) => {
    const d = ev.detail;
    const mine = d.direction === 'send';
    const to = mine && d.destinations?.length ? nameOfIdentity(d.destinations[0]) : null;
    const li = fileItem(d, mine, to);
    li.querySelector('.file-progress').value = d.bytes;
    li.dataset.bytes = String(d.bytes);
    if (mine && d.bytes >= d.size) li.querySelector('.file-state').textContent = 'Sent';
  });
  client.addEventListener('file', (ev) => {
    const d = ev.detail;
    const li = fileItem(d, false, null);
    li.querySelector('.file-progress').value = d.size;
    const url = URL.createObjectURL(d.blob);
    downloads.push(url);
    const a = document.createElement('a');
    a.className = 'file-download';
    a.href = url;
    a.download = d.name;
    a.textContent = `Download ${d.name} (${formatSize(d.size)})`;
    li.querySelector('.file-state').replaceChildren(a);
    li.dataset.complete = 'true';
  });
  client.addEventListener('fileerror', (ev) => {
    const li = transfers.get(ev.detail.transferId);
    if (li) {
      li.querySelector('.file-state').textContent = `Failed: ${ev.detail.reason}`;
      li.dataset.failed = 'true';
    }
  });

  // Who to send to: everyone, or one participant (by identity).
  function renderRecipients() {
    const selected = els.to.value;
    const options = [new Option('Everyone', '')];
    for (const p of client.remoteParticipants()) {
      if (p.identity) options.push(new Option(p.name || p.identity, p.identity));
    }
    els.to.replaceChildren(...options);
    els.to.value = options.some((o) => o.value === selected) ? selected : '';
  }
  for (const type of ['participantjoined', 'participantupdated', 'participantleft', 'joined']) {
    client.addEventListener(type, renderRecipients);
  }

  // Outgoing.
  els.form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = els.input.value.trim();
    if (!text) return;
    const to = els.to.value;
    const destinations = to ? [to] : undefined;
    try {
      await client.sendData(JSON.stringify({ text, private: !!to }), { topic: CHAT_TOPIC, destinations });
      addMessage({ from: client.name ?? 'You', to: to ? nameOfIdentity(to) : null, text, mine: true });
      els.input.value = '';
    } catch (err) {
      showStatus(`Message not sent: ${err.message}`, 'error');
    }
  });
  els.sendFile.addEventListener('click', () => els.fileInput.click());
  els.fileInput.addEventListener('change', async () => {
    const file = els.fileInput.files?.[0];
    els.fileInput.value = '';
    if (!file) return;
    const to = els.to.value;
    try {
      await client.sendFile(file, { destinations: to ? [to] : undefined });
    } catch (err) {
      showStatus(`File not sent: ${err.message}`, 'error');
    }
  });
  els.toggle.addEventListener('click', () => open(!isOpen()));
  els.close.addEventListener('click', () => open(false));

  return {
    reset() {
      open(false);
      setUnread(0);
      els.log.replaceChildren();
      transfers.clear();
      for (const url of downloads.splice(0)) URL.revokeObjectURL(url);
      renderRecipients();
    },
  };
}
