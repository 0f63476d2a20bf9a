// The data-message envelope (docs/protocol.md, "Data messages") and the file-transfer
// framing on top of it. Plain functions, no DOM: client.js sends and receives with them.

export const RELIABLE_LABEL = '_reliable';
export const LOSSY_LABEL = '_lossy';
const VERSION = 1;
const FLAG_TEXT = 0x01;
export const MAX_TOPIC_BYTES = 256;
export const MAX_DESTINATIONS = 64;

// Topics the client keeps for itself: files travel as a start, chunks and an end.
export const FILE_START = '_file.start';
export const FILE_CHUNK = '_file.chunk';
export const FILE_END = '_file.end';
export const FILE_ABORT = '_file.abort';
export const FILE_CHUNK_BYTES = 16 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function bytesOf(data) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('data must be a string, an ArrayBuffer or a typed array');
}

/**
 * A client's envelope: version, flags, topic, destination identities, payload.
 * `data` is a string (sent as text) or bytes.
 */
export function encodeClientData(data, { topic, destinations } = {}) {
  const text = typeof data === 'string';
  const payload = bytesOf(data);
  const topicBytes = encoder.encode(topic ?? '');
  if (topicBytes.length > MAX_TOPIC_BYTES) throw new RangeError(`topic longer than ${MAX_TOPIC_BYTES} bytes`);
  const dest = (destinations ?? []).map((d) => encoder.encode(String(d)));
  if (dest.length > MAX_DESTINATIONS) throw new RangeError(`more than ${MAX_DESTINATIONS} destinations`);
  if (dest.some((d) => d.length === 0 || d.length > 0xffff)) throw new RangeError('a destination identity is empty or too long');
  const size = 2 + 2 + topicBytes.length + 2 + dest.reduce((n, d) => n + 2 + d.length, 0) + payload.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  out[at++] = VERSION;
  out[at++] = text ? FLAG_TEXT : 0;
  view.setUint16(at, topicBytes.length); at += 2;
  out.set(topicBytes, at); at += topicBytes.length;
  view.setUint16(at, dest.length); at += 2;
  for (const d of dest) {
    view.setUint16(at, d.length); at += 2;
    out.set(d, at); at += d.length;
  }
  out.set(payload, at);
  return out;
}

/**
 * A relayed envelope as the server sends it: {participantId, identity, topic, data}, with
 * `data` a string for text, a Uint8Array otherwise. Throws on a malformed envelope.
 */
export function decodeRelayed(buffer) {
  const bytes = bytesOf(buffer);
  if (bytes.length < 8 || bytes[0] !== VERSION) throw new Error('not a version 1 relayed envelope');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = (bytes[1] & FLAG_TEXT) !== 0;
  let at = 2;
  const field = () => {
    if (at + 2 > bytes.length) throw new Error('envelope cut short');
    const len = view.getUint16(at); at += 2;
    if (at + len > bytes.length) throw new Error('envelope cut short');
    const s = decoder.decode(bytes.subarray(at, at + len)); at += len;
    return s;
  };
  const participantId = field();
  const identity = field();
  const topic = field() || null;
  const payload = bytes.subarray(at);
  return { participantId, identity, topic, data: text ? decoder.decode(payload) : payload };
}

/** A fresh id for one file transfer. */
export function transferId() {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}
