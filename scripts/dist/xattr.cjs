// @napi-rs/xattr inside the single executable (scripts/dist.sh aliases the package to this file). A SEA's main
// script can require only Node's built-in modules, so the native addon travels as a SEA asset: on the first call it
// is written to a private directory (mode 0700), loaded with process.dlopen, and the file removed at once (the
// mapping stays). Hosts that never stream a rootfs never pay for it. A temporary directory on a noexec mount
// cannot load it: /dev/shm and /run are tried next.
'use strict';
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

let binding;
function load() {
  if (binding) return binding;
  const sea = require('node:sea');
  const bytes = new Uint8Array(sea.getRawAsset('xattr.node'));
  const failures = [];
  for (const base of [tmpdir(), '/dev/shm', '/run']) {
    let dir;
    try {
      dir = mkdtempSync(join(base, 'ferry-native-'));
      const file = join(dir, 'xattr.node');
      writeFileSync(file, bytes, { mode: 0o500 });
      const m = { exports: {} };
      process.dlopen(m, file);
      binding = m.exports;
      return binding;
    } catch (err) {
      failures.push(`${base}: ${err.message}`);
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  }
  throw new Error(`cannot load the extended-attribute addon (${failures.join('; ')})`);
}

module.exports = {
  getAttributeSync: (...a) => load().getAttributeSync(...a),
  listAttributesSync: (...a) => load().listAttributesSync(...a),
  setAttributeSync: (...a) => load().setAttributeSync(...a),
};
