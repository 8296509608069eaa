// @grpc/proto-loader inside the single executable (scripts/dist.sh aliases the package to this file). The etcd
// client (etcd3) loads etcd's API from its .proto files next to its own code, which a single executable does not
// have: they travel as SEA assets instead, and loadSync of etcd's rpc.proto reads them from a private directory
// (mode 0700) that is removed as soon as they are parsed. Everything else is the real package, untouched.
'use strict';
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { basename, join } = require('node:path');
const real = require('../../node_modules/@grpc/proto-loader/build/src/index.js');

/** The .proto files of etcd's API, as dist.sh lists them among the SEA's assets. */
const ETCD_PROTOS = ['rpc.proto', 'kv.proto', 'auth.proto'];

function loadSync(filename, options) {
  const sea = require('node:sea');
  if (!sea.isSea() || typeof filename !== 'string' || basename(filename) !== 'rpc.proto')
    return real.loadSync(filename, options);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-etcd-proto-'));
  try {
    for (const f of ETCD_PROTOS) writeFileSync(join(dir, f), Buffer.from(sea.getRawAsset(`etcd3/${f}`)));
    return real.loadSync(join(dir, 'rpc.proto'), options);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { ...real, loadSync };
