// End-to-end: retransmission to a browser on a lossy path. With 4 % of the server's media
// datagrams dropped on their way to the pages (nftables, inside the test's own network
// namespace), Chromium NACKs what it misses; the server resends on the RTX stream the page
// negotiated (RFC 4588), and Chromium takes those packets as retransmissions of the ones
// it lost (inbound-rtp `retransmittedPacketsReceived`), and keeps decoding.
//
//   cd web/e2e && npm ci && node --test retransmission.test.mjs   (as root: nft)
//
// Environment: see helpers.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Meeting, sleep } from './helpers.mjs';

const MEDIA_DEADLINE_MS = 30_000;
const LOSSY_MS = 8_000;
const TABLE = `switchyard_e2e_${process.pid}`;

const meeting = new Meeting(['publisher', 'subscriber'], { query: 'simulcast=0' });
const publisher = meeting.byName('publisher');
const subscriber = meeting.byName('subscriber');

function nft(...args) {
  execFileSync('nft', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

before(() => meeting.start());
after(async () => {
  try {
    nft('delete', 'table', 'inet', TABLE);
  } catch {
    // never added, or already gone
  }
  await meeting.stop();
});

/** The subscriber's inbound video stats, condensed. */
function inboundVideo() {
  return subscriber.page.evaluate(async () => {
    const pc = window.switchyard.subscriberConnection;
    if (!pc) return null;
    const report = await pc.getStats();
    const s = [...report.values()].find((r) => r.type === 'inbound-rtp' && r.kind === 'video');
    if (!s) return null;
    return {
      framesDecoded: s.framesDecoded ?? 0,
      packetsLost: s.packetsLost ?? 0,
      nackCount: s.nackCount ?? 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived,
      packetsReceived: s.packetsReceived ?? 0,
    };
  });
}

test('a browser on a lossy path gets its lost packets back on RTX and keeps decoding', async (t) => {
  await meeting.step(async () => {
    await publisher.join();
    await subscriber.join();
    await meeting.eventually('the subscriber decodes video', MEDIA_DEADLINE_MS, async () => {
      const s = await inboundVideo();
      return s && s.framesDecoded > 20 ? null : `inbound video: ${JSON.stringify(s)}`;
    });
    const offer = await subscriber.page.evaluate(() => window.switchyard.subscriberConnection.remoteDescription.sdp);
    assert.match(offer, /a=rtpmap:\d+ rtx\/90000/, 'the server offers RTX');
    assert.match(offer, /a=ssrc-group:FID \d+ \d+/, 'with an RTX stream for each video track');

    const port = /media on UDP [^\s)]*:(\d+)/.exec(meeting.server.stdout)?.[1];
    assert.ok(port, `the server's media port in: ${meeting.server.stdout}`);
    // Drop 4 % of what the server sends from its media port (to both pages).
    nft('add', 'table', 'inet', TABLE);
    nft('add', 'chain', 'inet', TABLE, 'out', '{ type filter hook output priority 0 ; }');
    nft('add', 'rule', 'inet', TABLE, 'out', 'udp', 'sport', port, 'numgen', 'random', 'mod', '100', '<', '4', 'drop');
    const before = await inboundVideo();
    await sleep(LOSSY_MS);
    const lossy = await inboundVideo();
    nft('delete', 'table', 'inet', TABLE);

    assert.ok(lossy.nackCount > before.nackCount, `the page NACKed: ${JSON.stringify({ before, lossy })}`);
    assert.ok(lossy.retransmittedPacketsReceived !== undefined,
      `Chromium reports retransmittedPacketsReceived: ${JSON.stringify(lossy)}`);
    assert.ok(lossy.retransmittedPacketsReceived > (before.retransmittedPacketsReceived ?? 0),
      `retransmissions arrived on RTX: ${JSON.stringify({ before, lossy })}`);
    // 8 s at 20 fps is 160 frames; what the repairs bring back keeps most of them.
    const decoded = lossy.framesDecoded - before.framesDecoded;
    t.diagnostic(`in ${LOSSY_MS} ms at 4 % loss: ${lossy.nackCount - before.nackCount} NACKs, `
      + `${lossy.retransmittedPacketsReceived - (before.retransmittedPacketsReceived ?? 0)} packets back on RTX, `
      + `${lossy.packetsLost - before.packetsLost} still lost, ${decoded} frames decoded`);
    assert.ok(decoded > 100, `frames kept decoding through the loss: ${decoded} in ${LOSSY_MS} ms`);
  });
});
