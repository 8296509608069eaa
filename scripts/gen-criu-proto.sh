#!/usr/bin/env bash
# Generates src/images/gen/ (JavaScript + type declarations, @bufbuild/protobuf v2) from CRIU's .proto files in
# src/images/proto/. JavaScript rather than TypeScript: the generated enums are not erasable syntax, and Node runs
# ferry's TypeScript by stripping types only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
out=src/images/gen
rm -rf "$out"
buf generate src/images/proto --template '{"version":"v2","plugins":[{"local":"protoc-gen-es","out":"'"$out"'","opt":["target=js+dts","import_extension=js"]}]}'
echo "generated $(ls "$out" | wc -l) files in $out"
