#!/bin/sh
# bench/tokenizer/diff.sh [N] — differential test of ds4's tokenizer against Hugging Face
# tokenizers on N (default 20000) random fragment mixes (diff_gen.js). Needs `make` done, node
# + npm (installs `tokenizers` into bench/tokenizer/node_modules on first use). Run from the
# repository root; exits 1 if any text gets different ids.
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=${DS4_SHARED:-$root/../shared}
json=$shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json
out=$here/out
mkdir -p "$out"
[ -d "$here/node_modules/tokenizers" ] || (cd "$here" && npm install --no-audit --no-fund >/dev/null)
node "$here/diff_gen.js" "$json" "$out/diff.jsonl" "${1:-20000}"
cc -O2 -std=c11 -D_GNU_SOURCE -I"$root/include" -o "$out/diff_cmp" "$here/diff_cmp.c" "$root/build/libds4.a" \
   -lpcre2-8 -ljansson -lmicrohttpd -lcrypto -ledit -lm -lpthread
"$out/diff_cmp" "$json" "$out/diff.jsonl"
