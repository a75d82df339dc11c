#!/usr/bin/env bash
# scripts/h3-fuse-check.sh — the decode launch fusions of issue #7 (h3, session 3) on the GPU
# machine in one call: the full-size bench (ctx 2048, --profile 3) for each DS4_CUDA_FUSE3 mask
# in FUSE_LEVELS (0 = off; bits in src/cuda/forward_cuda.c fuse3()), the same binary, then the
# op tests and the whole-model tests (with the masks in MODEL_LEVELS). Usage on the device,
# from the repo root with the pack unpacked:
#   B=build/h3/pack OUT=... FUSE_LEVELS="0 31" MODEL_LEVELS="31" scripts/h3-fuse-check.sh
# Writes device.txt, summary.txt (tok/s and graph step per mask), tests.txt, logs.tgz.
set -u
B=${B:-build/h3/pack}
OUT=${OUT:-/tmp/h3-out}
mkdir -p "$OUT/L"
{ date -u '+%Y-%m-%d %H:%M:%S UTC'; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } > "$OUT/device.txt" 2>&1
for z in ${FUSE_LEVELS:-0 31}; do
    DS4_CUDA_FUSE3=$z timeout "${BENCH_TIMEOUT:-100}" "$B/cuda/bin/ds4-bench" --synthetic flash --preset q2 \
        --backend cuda --no-membw --prefill-chunk 2048 --ctx-start 2048 --ctx-max 2048 \
        --gen-tokens 64 --profile 3 > "$OUT/L/bench-fuse$z.txt" 2>&1
    echo "bench DS4_CUDA_FUSE3=$z rc=$? $(date -u +%T)" >> "$OUT/device.txt"
    { echo "== DS4_CUDA_FUSE3=$z"; grep -E "gen .*tok/s|graph step|op by op" "$OUT/L/bench-fuse$z.txt";
      grep -E "^\| (hc_|cuda_hc|comp|cuda_norm_rope_qat_ring|norm_rope w->kv|cuda_copy_d2d|cuda_ring)" "$OUT/L/bench-fuse$z.txt"; } >> "$OUT/summary.txt"
done
SH=${DS4_SHARED:-../shared}
SYN=/tmp/h3-syn.gguf
"$B/cuda/bin/ds4-convert" --synthetic flash --layers 4 --experts 16 --preset q2 \
    --tokenizer "$SH/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json" --out "$SYN" \
    > "$OUT/L/convert.log" 2>&1
timeout "${OPS_TIMEOUT:-60}" "$B/cuda/ds4-cuda-tests" > "$OUT/L/ops.log" 2>&1 &
for z in ${MODEL_LEVELS:-31}; do
    DS4_CUDA_FUSE3=$z DS4_TMP=/tmp DS4_CUDA_SYN_GGUF="$SYN" timeout "${MODEL_TIMEOUT:-70}" \
        "$B/cuda/ds4-cuda-model-tests" > "$OUT/L/model$z.log" 2>&1
    echo "model tests DS4_CUDA_FUSE3=$z rc=$? $(date -u +%T)" >> "$OUT/device.txt"
done
wait
{ grep -E "fused|dpos1|qat_ring|pair_f|^FAIL" "$OUT/L/ops.log"; tail -n 1 "$OUT/L/ops.log";
  for z in ${MODEL_LEVELS:-31}; do echo "model tests, DS4_CUDA_FUSE3=$z:"; grep -E "^FAIL" "$OUT/L/model$z.log";
  tail -n 1 "$OUT/L/model$z.log"; done; } > "$OUT/tests.txt"
(cd "$OUT" && tar czf logs.tgz L)
