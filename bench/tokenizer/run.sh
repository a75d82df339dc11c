#!/bin/sh
# bench/tokenizer/run.sh [MIB] — tokenizer throughput, ds4 vs Hugging Face tokenizers (node),
# on the same deterministic ~10 MiB mixed text (make_corpus.py), same machine, encoded whole and
# cut at blank lines ("docs"); checks that both produce identical ids in both modes. Needs `make` done, python3, node + npm (installs `tokenizers` into
# bench/tokenizer/node_modules on first use). Run from the repository root.
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=${DS4_SHARED:-$root/../shared}
json=$shared/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json
out=$here/out
mkdir -p "$out"
python3 "$here/make_corpus.py" "$out/corpus.txt" "${1:-10}"
[ -d "$here/node_modules/tokenizers" ] || (cd "$here" && npm install --no-audit --no-fund >/dev/null)
cc -O2 -std=c11 -D_GNU_SOURCE -I"$root/include" -o "$out/bench_ds4" "$here/bench_ds4.c" "$root/build/libds4.a" \
   -lpcre2-8 -ljansson -lmicrohttpd -lcrypto -ledit -lm -lpthread
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u +%Y-%m-%d)"
for mode in whole docs; do
    "$out/bench_ds4" "$json" "$out/corpus.txt" "$out/ids_ds4_$mode.txt" 3 $mode
    node "$here/bench_hf.js" "$json" "$out/corpus.txt" "$out/ids_hf_$mode.txt" 2 $mode
    if cmp -s "$out/ids_ds4_$mode.txt" "$out/ids_hf_$mode.txt"; then
        echo "ids ($mode): identical ($(wc -l < "$out/ids_ds4_$mode.txt") tokens)"
    else
        echo "ids ($mode): DIFFER"; diff "$out/ids_ds4_$mode.txt" "$out/ids_hf_$mode.txt" | head -5; exit 1
    fi
done
