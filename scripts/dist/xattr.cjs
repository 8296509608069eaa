// @napi-rs/xattr inside the single executable (scripts/dist.sh aliases the package to this file). A SEA's main
// script can require only Node's built-in modules, so the native addon travels as a SEA asset: on the first call it
// is written to a private directory (mode 0700), loaded with process.dlopen, and the file removed at once (the
// mapping stays). Hosts that never stream a rootfs never pay for it.
'use strict';
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

let binding;
function load() {
  if (binding) return binding;
  const sea = require('node:sea');
  const dir = mkdtempSync(join(tmpdir(), 'ferry-native-'));
  const file = join(dir, 'xattr.node');
  try {
    writeFileSync(file, new Uint8Array(sea.getRawAsset('xattr.node')), { mode: 0o500 });
    const m = { exports: {} };
    process.dlopen(m, file);
    binding = m.exports;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return binding;
}

module.exports = {
  getAttributeSync: (...a) => load().getAttributeSync(...a),
  listAttributesSync: (...a) => load().listAttributesSync(...a),
  setAttributeSync: (...a) => load().setAttributeSync(...a),
};
