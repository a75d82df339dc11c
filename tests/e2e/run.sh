#!/usr/bin/env bash
# tests/e2e/run.sh — what `make test-e2e` runs: installs the official npm clients from the
# committed lock file, makes a random-weight model with the real tokenizer (vocab 129280,
# tiny widths), and runs node's test runner against ds4-server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
shared="$(cd "${DS4_SHARED:-$root/../shared}" && pwd)"
bin="$(cd "${DS4_BIN_DIR:-$root}" && pwd)"
work="$root/build/e2e"
mkdir -p "$work"
cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
model="$work/tiny-v4-vocab.gguf"
if [ ! -s "$model" ]; then
  # The tiny-v4 test config with the real vocabulary size, so the real tokenizer fits.
  node -e '
    const fs = require("fs");
    const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    c.vocab_size = 129280;
    fs.writeFileSync(process.argv[2], JSON.stringify(c));
  ' "$shared/testdata/tiny-v4/config.json" "$work/tiny-v4-vocab.json"
  "$bin/ds4-convert" --synthetic "$work/tiny-v4-vocab.json" \
    --tokenizer "$shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json" \
    --out "$model" > "$work/convert.log" 2>&1
fi
export DS4_SERVER_BIN="$bin/ds4-server" DS4_E2E_MODEL="$model" DS4_E2E_WORK="$work" \
  DS4_E2E_TOKENIZER="$shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json"
exec node --test --test-concurrency=1 "$here"/*.test.mjs
