#!/usr/bin/env bash
# Fails when src/gen differs from what the .proto files generate now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
bash scripts/gen.sh "$tmp/gen"
if ! diff -r "$tmp/gen" src/gen >/dev/null; then
  diff -ru src/gen "$tmp/gen" | head -40 >&2
  echo "gen:check: src/gen is stale; run 'npm run gen' and commit the result" >&2
  exit 1
fi
echo "gen:check: src/gen is up to date"
