import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CRIU_FILE_DEFAULTS, criuConfigText } from './criu-config.ts';

describe('criuConfigText', () => {
  it('passes what CRIU needs by default: link-remap, external unix datagram sockets, ghost files to 64 MiB', () => {
    assert.deepEqual(CRIU_FILE_DEFAULTS, { linkRemap: true, extUnixSk: true, ghostLimitMiB: 64 });
    assert.equal(
      criuConfigText(),
      '# written by the ferry agent\nnetwork-lock skip\nghost-limit 64M\nlink-remap\next-unix-sk\n',
    );
  });

  it('leaves out what the configuration turns off, and keeps the network lock to ferry', () => {
    const text = criuConfigText({ linkRemap: false, extUnixSk: false, ghostLimitMiB: 1 });
    assert.equal(text, '# written by the ferry agent\nnetwork-lock skip\nghost-limit 1M\n');
  });

  it("names the host's cgroup mounts as CRIU's yard when the agent found them usable, and never a path with a space", () => {
    assert.match(criuConfigText({}, { cgroupYard: '/sys/fs/cgroup' }), /\ncgroup-yard \/sys\/fs\/cgroup\n$/);
    assert.doesNotMatch(criuConfigText({}, { cgroupYard: '/a b' }), /cgroup-yard/);
    assert.doesNotMatch(criuConfigText({}, {}), /cgroup-yard/);
  });
});
