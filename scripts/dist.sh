#!/usr/bin/env bash
# make dist: dist/ferry-linux-x64, one executable file with Node and ferry inside (Node's single executable
# applications), for hosts without Node. Steps: esbuild bundles src/cli/main.ts into one CommonJS file (a SEA's
# main script must be CommonJS); Node writes the SEA blob (with a code cache, the native xattr addon as an asset:
# scripts/dist/xattr.cjs loads it, and etcd's .proto files: scripts/dist/proto-loader.cjs reads them); postject
# injects the blob into a copy of Node 24.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
node=${FERRY_NODE:-/opt/ferry/node/bin/node}
[[ -x $node ]] || node=$(command -v node)
out=${1:-dist/ferry-linux-x64}
build="$out.build" # intermediate files, beside the output
mkdir -p "$build"

version=$("$node" -p 'require("./package.json").version')
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || commit="$commit+dirty"

# import.meta.url has no CommonJS equivalent: in the bundle it is the file URL of the executable itself.
node_modules/.bin/esbuild src/cli/main.ts --bundle --platform=node --format=cjs --target=node24 \
  --outfile="$build/ferry.cjs" --log-level=warning --legal-comments=none \
  --define:import.meta.url=__ferryMainUrl \
  --banner:js='var __ferryMainUrl = require("node:url").pathToFileURL(__filename).href;' \
  --define:FERRY_BUILD="{\"version\":\"$version\",\"commit\":\"$commit\"}" \
  --alias:@napi-rs/xattr=./scripts/dist/xattr.cjs \
  --alias:@grpc/proto-loader=./scripts/dist/proto-loader.cjs

cat > "$build/sea-config.json" <<JSON
{
  "main": "$build/ferry.cjs",
  "output": "$build/ferry.blob",
  "disableExperimentalSEAWarning": true,
  "useCodeCache": true,
  "assets": {
    "xattr.node": "node_modules/@napi-rs/xattr-linux-x64-gnu/xattr.linux-x64-gnu.node",
    "etcd3/rpc.proto": "node_modules/etcd3/proto/rpc.proto",
    "etcd3/kv.proto": "node_modules/etcd3/proto/kv.proto",
    "etcd3/auth.proto": "node_modules/etcd3/proto/auth.proto"
  }
}
JSON
# quiet unless a step fails (postject warns about ELF notes it does not need)
quiet() { "$@" >"$build/step.log" 2>&1 || { cat "$build/step.log" >&2; exit 1; }; }
quiet "$node" --experimental-sea-config "$build/sea-config.json"

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
cp "$(readlink -f "$node")" "$tmp"
chmod u+w "$tmp"
quiet node_modules/.bin/postject "$tmp" NODE_SEA_BLOB "$build/ferry.blob" \
  --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2
chmod 0755 "$tmp"
mv "$tmp" "$out"
trap - EXIT
printf 'dist: %s (%s MiB, ferry %s, commit %s)\n' "$out" "$(( $(stat -c %s "$out") / 1048576 ))" "$version" "$commit"
