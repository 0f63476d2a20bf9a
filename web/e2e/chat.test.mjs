// End-to-end: the meeting page's chat panel and file transfer, between a Chromium page and
// a Firefox page, through the server's data channels. A message shows with its sender's
// name and time, raises the unread badge while the panel is closed, and a reply comes
// back; a private message says so; a file sent from the panel shows progress on both ends
// and is offered for download, byte-identical, with its name and size.
//
//   cd web/e2e && npm ci && node --test chat.test.mjs
//
// Environment: see helpers.mjs (FIREFOX_PATH for the Firefox page).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Meeting } from './helpers.mjs';

const WAIT_MS = 20_000;
const FILE_BYTES = 3 * 1024 * 1024;

const meeting = new Meeting(['ada', 'bob'], { audioOnly: true }, { bob: { browser: 'firefox' } });
const ada = meeting.byName('ada'); // Chromium
const bob = meeting.byName('bob'); // Firefox
let dir = null;

/** Types into a field as a user would (playwright fills, puppeteer types). */
async function typeInto(client, selector, text) {
  if (client.firefox) await client.page.type(selector, text);
  else await client.page.fill(selector, text);
}

/** The chat log as its reader sees it. */
const chatLog = (client) => client.page.evaluate(() => [...document.querySelectorAll('#chat-log .chat-item')].map((li) => ({
  kind: li.classList.contains('chat-file') ? 'file' : 'message',
  mine: li.classList.contains('mine'),
  who: li.querySelector('.chat-who')?.textContent,
  time: li.querySelector('time')?.textContent,
  private: li.querySelector('.chat-private')?.textContent ?? null,
  text: li.querySelector('.chat-text')?.textContent ?? null,
  file: li.querySelector('.file-name')?.textContent ?? null,
  progress: li.querySelector('progress') ? [li.querySelector('progress').value, li.querySelector('progress').max] : null,
  state: li.querySelector('.file-state')?.textContent ?? null,
  download: li.querySelector('a.file-download') ? { name: li.querySelector('a.file-download').download, href: li.querySelector('a.file-download').href } : null,
})));

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'switchyard-chat-'));
  await meeting.start();
  await ada.join();
  await bob.join();
  // Each page knows the other (it is offered as a recipient).
  await meeting.step(() => meeting.eventually('both pages list the other as a recipient', WAIT_MS, async () => {
    for (const c of [ada, bob]) {
      const options = await c.page.evaluate(() => [...document.querySelectorAll('#chat-to option')].map((o) => o.textContent));
      if (options.length < 2) return `${c.name} offers ${JSON.stringify(options)}`;
    }
    return null;
  }));
});
after(async () => {
  await meeting.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('a message shows with name and time, raises the unread badge, and a reply comes back', async () => {
  await meeting.step(async () => {
    await ada.page.click('#toggle-chat');
    await typeInto(ada, '#chat-input', 'Hello from Chromium');
    await ada.page.click('#chat-send');

    await meeting.eventually('bob\'s unread badge shows 1', WAIT_MS, async () => {
      const badge = await bob.page.evaluate(() => {
        const b = document.getElementById('chat-unread');
        return { hidden: b.hidden, text: b.textContent };
      });
      return !badge.hidden && badge.text === '1' ? null : JSON.stringify(badge);
    });
    await bob.page.click('#toggle-chat');
    assert.equal(await bob.page.evaluate(() => document.getElementById('chat-unread').hidden), true, 'opening the panel reads them');
    const [got] = await chatLog(bob);
    assert.equal(got.who, 'ada');
    assert.equal(got.text, 'Hello from Chromium');
    assert.match(got.time ?? '', /\d{1,2}.\d{2}/, 'with the time it arrived');
    assert.equal(got.mine, false);

    await typeInto(bob, '#chat-input', 'Hi from Firefox ✓');
    await bob.page.click('#chat-send');
    await meeting.eventually('ada gets the reply', WAIT_MS, async () => {
      const log = await chatLog(ada);
      return log.some((m) => m.who === 'bob' && m.text === 'Hi from Firefox ✓') ? null : JSON.stringify(log);
    });
    const mine = (await chatLog(ada)).find((m) => m.mine);
    assert.equal(mine?.text, 'Hello from Chromium', 'one\'s own message shows too');
  });
});

test('a private message says so on both ends', async () => {
  await meeting.step(async () => {
    const bobIdentity = await bob.page.evaluate(() => window.switchyard.identity);
    await ada.page.selectOption('#chat-to', bobIdentity);
    await typeInto(ada, '#chat-input', 'just between us');
    await ada.page.click('#chat-send');
    await meeting.eventually('bob sees it as private', WAIT_MS, async () => {
      const m = (await chatLog(bob)).find((x) => x.text === 'just between us');
      return m?.private === 'privately' ? null : `the message: ${JSON.stringify(m ?? 'none yet')}`;
    });
    const sent = (await chatLog(ada)).find((x) => x.text === 'just between us');
    assert.equal(sent.private, 'to bob');
    await ada.page.selectOption('#chat-to', '');
  });
});

test('a file sent from the panel shows progress on both ends and downloads byte-identical', async (t) => {
  await meeting.step(async () => {
    const content = randomBytes(FILE_BYTES);
    const sha256 = createHash('sha256').update(content).digest('hex');
    const file = path.join(dir, 'notes.bin');
    await writeFile(file, content);
    // Watch the progress bars move on both pages while it goes.
    for (const c of [ada, bob]) {
      await c.page.evaluate(() => {
        window.__bars = [];
        new MutationObserver(() => {
          const bar = document.querySelector('#chat-log .chat-file progress');
          if (bar) window.__bars.push(bar.value);
        }).observe(document.getElementById('chat-log'), { subtree: true, attributes: true, childList: true });
      });
    }
    await ada.page.setInputFiles('#file-input', file);

    await meeting.eventually('bob is offered the download', WAIT_MS, async () => {
      const f = (await chatLog(bob)).find((x) => x.kind === 'file');
      return f?.download ? null : `the file's item: ${JSON.stringify(f ?? 'none yet')}`;
    });
    const received = (await chatLog(bob)).find((x) => x.kind === 'file');
    assert.equal(received.who, 'ada');
    assert.equal(received.download.name, 'notes.bin');
    assert.equal(received.file, 'notes.bin (3.0 MB)', 'name and size');
    const digest = await bob.page.evaluate(async (href) => {
      const bytes = await (await fetch(href)).arrayBuffer();
      const d = await crypto.subtle.digest('SHA-256', bytes);
      return { size: bytes.byteLength, hex: [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('') };
    }, received.download.href);
    assert.deepEqual(digest, { size: FILE_BYTES, hex: sha256 }, 'the download is the file, byte for byte');

    await meeting.eventually('ada\'s side says sent', WAIT_MS, async () => {
      const f = (await chatLog(ada)).find((x) => x.kind === 'file');
      return f?.state === 'Sent' ? null : `the file's item: ${JSON.stringify(f ?? 'none yet')}`;
    });
    for (const c of [ada, bob]) {
      const bars = await c.page.evaluate(() => window.__bars);
      const distinct = new Set(bars).size;
      t.diagnostic(`${c.name}: progress bar took ${distinct} values`);
      assert.ok(distinct > 3, `${c.name}: the progress bar moved (${distinct} values)`);
    }
    await ada.screenshot('chat-file-sent');
    await bob.screenshot('chat-file-received');
  });
});
