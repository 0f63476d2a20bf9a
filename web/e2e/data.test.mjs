// End-to-end: data channels through the server between three Chromium pages. Chat in
// order, stamped with the sender's identity; a message to one identity reaches only it;
// a 50 MB file arrives byte-identical (SHA-256) with progress on both ends; a flood on the
// lossy channel does not stall the reliable one; an oversized message is refused while
// the channel keeps working.
//
//   cd web/e2e && npm ci && node --test data.test.mjs
//
// Environment: see helpers.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Meeting } from './helpers.mjs';

const READY_MS = 20_000;
const CHAT_MS = 10_000;
const FILE_BYTES = 50 * 1024 * 1024;
const FILE_MS = 120_000;

// Microphones only: the test is about data, and three cameras would only cost CPU.
const meeting = new Meeting(['ada', 'bob', 'cy'], { audioOnly: true });
const [ada, bob, cy] = ['ada', 'bob', 'cy'].map((n) => meeting.byName(n));

before(async () => {
  await meeting.start();
  for (const c of [ada, bob, cy]) {
    await c.join();
    // Record what arrives, from the start.
    await c.page.evaluate(() => {
      window.__data = [];
      window.__files = [];
      window.__progress = [];
      window.__fileErrors = [];
      const sw = window.switchyard;
      sw.addEventListener('data', (e) => {
        const { participantId, identity, topic, data, reliable } = e.detail;
        window.__data.push({ participantId, identity, topic, reliable, text: typeof data === 'string' ? data : null, bytes: typeof data === 'string' ? null : data.length });
      });
      sw.addEventListener('fileprogress', (e) => window.__progress.push({ direction: e.detail.direction, bytes: e.detail.bytes, size: e.detail.size }));
      sw.addEventListener('fileerror', (e) => window.__fileErrors.push(e.detail));
      sw.addEventListener('file', async (e) => {
        const { transferId, identity, name, size, blob } = e.detail;
        const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
        const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
        window.__files.push({ transferId, identity, name, size, blobSize: blob.size, sha256: hex });
      });
    });
  }
  // Everyone's channels are open both ways: each has sent a hello that both others got.
  await meeting.step(async () => {
    for (const c of [ada, bob, cy]) await c.page.evaluate(() => window.switchyard.sendData('hello', { topic: 'hello' }));
    await meeting.eventually('every page hears both others', READY_MS, async () => {
      for (const c of [ada, bob, cy]) {
        const n = await c.page.evaluate(() => window.__data.filter((d) => d.topic === 'hello').length);
        if (n < 2) return `${c.name} heard ${n} hellos`;
      }
      return null;
    });
  });
});
after(() => meeting.stop());

const identityOf = (c) => c.page.evaluate(() => window.switchyard._self.identity);
const received = (c, topic) => c.page.evaluate((t) => window.__data.filter((d) => d.topic === t), topic);

test('chat arrives in order at the others, stamped with the sender\'s identity', async () => {
  await meeting.step(async () => {
    await ada.page.evaluate(async () => {
      for (let i = 0; i < 100; i++) await window.switchyard.sendData(`message ${i} ✓`, { topic: 'chat' });
    });
    const identity = await identityOf(ada);
    const expected = Array.from({ length: 100 }, (_, i) => `message ${i} ✓`);
    for (const c of [bob, cy]) {
      await meeting.eventually(`${c.name} gets 100 messages`, CHAT_MS, async () => {
        const n = (await received(c, 'chat')).length;
        return n >= 100 ? null : `${n} so far`;
      });
      const chat = await received(c, 'chat');
      assert.deepEqual(chat.map((d) => d.text), expected, `${c.name}: in order, each once`);
      assert.ok(chat.every((d) => d.identity === identity && d.participantId === ada.participantId && d.reliable),
        `${c.name}: stamped ${JSON.stringify(chat[0])}`);
    }
    assert.equal((await received(ada, 'chat')).length, 0, 'nothing comes back to its sender');
  });
});

test('a message to one identity reaches only it', async () => {
  await meeting.step(async () => {
    const cyIdentity = await identityOf(cy);
    await ada.page.evaluate(async (to) => {
      await window.switchyard.sendData('just for cy', { topic: 'dm', destinations: [to] });
      await window.switchyard.sendData('for everyone', { topic: 'dm' });
    }, cyIdentity);
    await meeting.eventually('cy gets both, bob the public one', CHAT_MS, async () => {
      const [c, b] = [(await received(cy, 'dm')).map((d) => d.text), (await received(bob, 'dm')).map((d) => d.text)];
      return c.length === 2 && b.length === 1 ? null : `cy ${JSON.stringify(c)}, bob ${JSON.stringify(b)}`;
    });
    assert.deepEqual((await received(cy, 'dm')).map((d) => d.text), ['just for cy', 'for everyone']);
    // bob got the later message, so the earlier private one really passed him by.
    assert.deepEqual((await received(bob, 'dm')).map((d) => d.text), ['for everyone']);
  });
});

test('an oversized message is refused and the channel keeps working', async () => {
  await meeting.step(async () => {
    const refused = await ada.page.evaluate(async () => {
      try {
        await window.switchyard.sendData(new Uint8Array(70_000), { topic: 'big' });
        return null;
      } catch (err) {
        return { name: err.name, message: err.message, max: window.switchyard.maxMessageSize };
      }
    });
    assert.ok(refused, 'a 70,000-byte message is refused');
    assert.equal(refused.name, 'RangeError');
    assert.equal(refused.max, 65535, 'the server\'s a=max-message-size');
    await ada.page.evaluate(() => window.switchyard.sendData('after the big one', { topic: 'big' }));
    await meeting.eventually('the channel still works', CHAT_MS, async () => {
      const got = (await received(bob, 'big')).map((d) => d.text);
      return got.length === 1 && got[0] === 'after the big one' ? null : JSON.stringify(got);
    });
  });
});

test('a flood on the lossy channel does not stall the reliable one', async (t) => {
  await meeting.step(async () => {
    const started = Date.now();
    await ada.page.evaluate(async () => {
      const sw = window.switchyard;
      const junk = new Uint8Array(1024);
      const flood = (async () => {
        for (let i = 0; i < 3000; i++) {
          await sw.sendData(junk, { reliable: false, topic: 'flood' });
          if (i % 100 === 0) await new Promise((r) => setTimeout(r, 0));
        }
      })();
      for (let i = 0; i < 20; i++) {
        await sw.sendData(`tick ${i}`, { topic: 'tick' });
        await new Promise((r) => setTimeout(r, 50));
      }
      await flood;
    });
    await meeting.eventually('bob gets every tick', CHAT_MS, async () => {
      const n = (await received(bob, 'tick')).length;
      return n >= 20 ? null : `${n} ticks`;
    });
    const ticks = (await received(bob, 'tick')).map((d) => d.text);
    assert.deepEqual(ticks, Array.from({ length: 20 }, (_, i) => `tick ${i}`));
    const flood = await received(bob, 'flood');
    assert.ok(flood.every((d) => !d.reliable && d.bytes === 1024), 'the flood came on the lossy channel');
    t.diagnostic(`20 reliable ticks through a flood of 3000 lossy messages in ${Date.now() - started} ms; `
      + `${flood.length} of the flood reached bob`);
  });
});

test('a 50 MB file arrives byte-identical at both others, with progress on both ends', async (t) => {
  await meeting.step(async () => {
    const started = Date.now();
    const sent = await ada.page.evaluate(async (size) => {
      // Pseudo-random content (no two chunks alike), hashed before it is sent.
      const parts = [];
      for (let at = 0; at < size; at += 65536) {
        parts.push(crypto.getRandomValues(new Uint8Array(Math.min(65536, size - at))));
      }
      const file = new File(parts, 'big.bin', { type: 'application/octet-stream' });
      const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
      const sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
      const result = await window.switchyard.sendFile(file);
      return { ...result, sha256 };
    }, FILE_BYTES);
    t.diagnostic(`sent in ${Date.now() - started} ms`);
    for (const c of [bob, cy]) {
      await meeting.eventually(`${c.name} gets the file`, FILE_MS, async () => {
        const [files, errors] = await c.page.evaluate(() => [window.__files, window.__fileErrors]);
        if (errors.length) throw new Error(`transfer failed: ${JSON.stringify(errors)}`);
        return files.length ? null : 'not yet';
      });
      const [file] = await c.page.evaluate(() => window.__files);
      assert.equal(file.name, 'big.bin');
      assert.equal(file.size, FILE_BYTES);
      assert.equal(file.blobSize, FILE_BYTES);
      assert.equal(file.sha256, sent.sha256, `${c.name}: byte-identical`);
      assert.equal(file.identity, await identityOf(ada));
      const progress = await c.page.evaluate(() => window.__progress.filter((p) => p.direction === 'receive'));
      assert.ok(progress.length > 100, `${c.name}: progress as it came (${progress.length} events)`);
      assert.equal(progress.at(-1).bytes, FILE_BYTES);
    }
    const sendProgress = await ada.page.evaluate(() => window.__progress.filter((p) => p.direction === 'send'));
    assert.ok(sendProgress.length > 100, `sender progress (${sendProgress.length} events)`);
    assert.equal(sendProgress.at(-1).bytes, FILE_BYTES);
    const seconds = (Date.now() - started) / 1000;
    t.diagnostic(`50 MB to two receivers in ${seconds.toFixed(1)} s (${(FILE_BYTES * 8 / seconds / 1e6).toFixed(0)} Mbit/s each)`);
  });
});
