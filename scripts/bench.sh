#!/usr/bin/env bash
# scripts/bench.sh — what `make bench` runs: ds4-bench (SERVER_CLI §11) on one model, writing
# build/bench/<model>.csv and <model>_ts.svg, progress and the decode bandwidth bound on stderr.
#
# Without DS4_BENCH_MODEL it benches tiny-v4 (converted once to build/bench/tiny-v4-f32.gguf)
# over a short sweep, which finishes in well under a minute on the dev box.
#   DS4_BENCH_MODEL=FILE.gguf   model to bench (default: tiny-v4 f32)
#   DS4_BENCH_ARGS="..."        ds4-bench flags replacing the default sweep
#                               (default for a given model: ds4's 2048..32768 step 2048, 128 tokens)
#   SHARED=DIR                  shared data directory (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/bench
mkdir -p "$out"
model=${DS4_BENCH_MODEL:-}
if [ -z "$model" ]; then
  model=$out/tiny-v4-f32.gguf
  if [ ! -s "$model" ]; then
    ./ds4-convert --hf "${SHARED:-../shared}/testdata/tiny-v4" --out "$model.tmp" --preset f32 >&2
    mv "$model.tmp" "$model"
  fi
  default_args="--ctx-start 256 --ctx-max 2048 --step-incr 256 --gen-tokens 32"
else
  default_args="--ctx-start 2048 --ctx-max 32768 --step-incr 2048 --gen-tokens 128"
fi
name=$(basename "$model" .gguf)
# shellcheck disable=SC2086  # the flag strings are meant to split into words
./ds4-bench --model "$model" ${DS4_BENCH_ARGS:-$default_args} \
  --out "$out/$name.csv" --svg "$out/${name}_ts.svg" --title "ds4-bench $name ($(date -u +%F))"
echo "bench: wrote $out/$name.csv and $out/${name}_ts.svg" >&2
