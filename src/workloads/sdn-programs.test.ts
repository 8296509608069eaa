import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { controllerArgs, LEARNING_SWITCH_PY, longestGap, lost, parseReceived } from './sdn-programs.ts';

describe('SDN experiment programs', () => {
  it('measures the longest gap inside a window, its edges included', () => {
    assert.equal(longestGap([100, 110, 400, 420], 100, 500), 290);
    assert.equal(longestGap([100, 110], 0, 1000), 890);
    assert.equal(longestGap([], 10, 20), 10);
  });

  it('counts the sequence numbers that never arrived, duplicates once', () => {
    assert.equal(lost([0, 1, 1, 3, 7], 5), 2);
    assert.equal(lost([], 3), 3);
  });

  it("reads the receiver's last line", () => {
    assert.deepEqual(parseReceived('noise\n{"t":[1.5],"seq":[0]}\n'), { t: [1.5], seq: [0] });
    assert.throws(() => parseReceived('{"x":1}'));
  });

  it('fits the app into one argument of a container command', () => {
    const argv = controllerArgs(6653);
    assert.equal(argv[0], '/usr/bin/python3');
    assert.ok(argv.every((a) => a.length <= 4096));
    assert.ok(argv.includes(LEARNING_SWITCH_PY));
  });
});
