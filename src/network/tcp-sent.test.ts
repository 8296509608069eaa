// ss -ti's output read for the acknowledged bytes of a server's connections (the format iproute2 prints).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBytesAcked } from './tcp-sent.ts';

test('bytes_acked summed over every connection ss lists; none listed: unknown', () => {
  const two = [
    '0      0      10.0.0.1:5123 10.0.0.2:40100',
    '\t bbr wscale:10,10 rto:204 rtt:0.086/0.13 mss:1448 cwnd:13 bytes_sent:100000 bytes_acked:99000 segs_out:3',
    '0      0      10.0.0.1:5123 10.0.0.2:40102',
    '\t cubic wscale:7,7 rto:201 bytes_sent:5000 bytes_retrans:100 bytes_acked:4097 bytes_received:120',
  ].join('\n');
  assert.equal(parseBytesAcked(two), 103_097);
  assert.equal(parseBytesAcked(''), undefined);
  assert.equal(parseBytesAcked('0 0 10.0.0.1:5123 10.0.0.2:40100\n\t cubic bytes_sent:10'), undefined);
});
