#!/usr/bin/env bash
# scripts/gpu-check.sh — the whole GPU check in one go, for the device machine (issue #7):
# records the card, driver and date, runs every CUDA op against the CPU reference and the
# benchmarks ($B/cuda/ds4-cuda-tests --bench), and keeps the logs.
#
# Build first, here: `make cuda` (and scripts/gpu-carry.sh for the libraries and test data the
# whole-model checks need); then on the GPU box (carry $B/cuda/ds4-cuda-tests):
#   scripts/gpu-check.sh            logs under $OUT when set, else $B/gpu-check
#   scripts/gpu-check.sh --no-bench tests only
#   scripts/gpu-check.sh --model-only   only the whole-model checks below (skips the op tests)
#   DS4_GPU_SYN_FLASH=1 scripts/gpu-check.sh --model-only   adds the full-size in-memory Flash bench
#     (all 43 layers x 256 experts; on a card under 100 GB the auto-fit keeps the first layers'
#     routed experts in pinned host memory; DS4_GPU_LAYERS_EXPERTS=N forces N layers on the GPU)
#   DS4_GPU_SKIP_MODEL=1 ...     skips the whole-model checks (e.g. only the full-size bench:
#     DS4_GPU_SKIP_MODEL=1 DS4_GPU_SYN_FLASH=1 DS4_GPU_SYN_CTX=256 DS4_GPU_SYN_GEN=32
#     DS4_CUDA_TESTS=/bin/true scripts/gpu-check.sh --model-only, the 80 GB H100 check)
#   DS4_GPU_HOST_EXPERTS=1 ...   adds the 4-layer in-memory bench with 4, 3, 2, 0 layers' experts
#     on the GPU (the rest in host memory): the speed cost of experts read over PCIe
# Whole model (issue #7; needs `make cuda`'s $B/cuda/ds4-cuda-model-tests and $B/cuda/bin):
# builds a synthetic Flash-width q2 model here (4 layers, 16 experts, V4 tokenizer), runs the
# model tests (tiny-v4 golden, snapshots across backends, GPU vs CPU), then ds4-bench and
# ds4 --backend cuda on it. DS4_SHARED must point at the test data (tiny-v4 + tokenizer).
# Exit status: that of the test program (non-zero when any case failed).
set -u
cd "$(dirname "$0")/.."
B=${DS4_BUILD:-build} # another build folder: DS4_BUILD=build/x (make cuda BUILD=build/x)
BIN=${DS4_CUDA_TESTS:-$B/cuda/ds4-cuda-tests}
LOGDIR=${OUT:-$B/gpu-check}
mkdir -p "$LOGDIR"
if [ ! -x "$BIN" ]; then
    echo "gpu-check: $BIN is missing: run 'make cuda' first" >&2
    exit 2
fi
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -n) $(uname -r)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
            --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
} > "$LOGDIR/device.txt"
cat "$LOGDIR/device.txt"
ARGS=--bench
[ "${1:-}" = "--no-bench" ] && ARGS=
rc=0
if [ "${1:-}" != "--model-only" ]; then
"$BIN" $ARGS > "$LOGDIR/cuda-tests.log" 2>&1
rc=$?
grep -E '^(FAIL|device 0:)' "$LOGDIR/cuda-tests.log"
grep -E '^bench' "$LOGDIR/cuda-tests.log" > "$LOGDIR/bench.txt"
cat "$LOGDIR/bench.txt"
tail -n 1 "$LOGDIR/cuda-tests.log"
fi

# ---- whole model on the GPU (model_cuda.h) ----
MT=$B/cuda/ds4-cuda-model-tests
CB=$B/cuda/bin
if [ -z "${DS4_GPU_SKIP_MODEL:-}" ] && [ -x "$MT" ] && [ -x "$CB/ds4-convert" ]; then
    SH=${DS4_SHARED:-../shared}
    SCR=${DS4_TMP:-/tmp/ds4-gpu-check}
    mkdir -p "$SCR"
    SYN=$SCR/synthetic-flash-4l-16e-q2.gguf
    t0=$(date +%s)
    "$CB/ds4-convert" --synthetic flash --layers 4 --experts 16 --preset q2 \
        --tokenizer "$SH/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json" \
        --out "$SYN" > "$LOGDIR/convert-synthetic.log" 2>&1 || { tail -n 3 "$LOGDIR/convert-synthetic.log"; rc=1; }
    echo "synthetic flash q2 (4 layers, 16 experts) built in $(( $(date +%s) - t0 )) s"
    DS4_SHARED="$SH" DS4_TMP="$SCR" DS4_CUDA_SYN_GGUF="$SYN" "$MT" > "$LOGDIR/cuda-model-tests.log" 2>&1
    mrc=$?
    grep -E '^(PASS|FAIL|info|device)' "$LOGDIR/cuda-model-tests.log"
    tail -n 1 "$LOGDIR/cuda-model-tests.log"
    [ $mrc -ne 0 ] && rc=$mrc
    "$CB/ds4-bench" --backend cuda -m "$SYN" --ctx-start 512 --ctx-max 2048 --step-mul 2 \
        --gen-tokens 64 --prefill-chunk 512 --no-membw \
        --out "$LOGDIR/bench-synthetic-cuda.csv" > "$LOGDIR/bench-synthetic-cuda.log" 2>&1 || rc=1
    echo "ds4-bench --backend cuda (synthetic flash q2, 4 layers):"
    cat "$LOGDIR/bench-synthetic-cuda.csv" 2>/dev/null; grep -E 'loaded|ctx ' "$LOGDIR/bench-synthetic-cuda.log" | tail -n 4
    for be in cuda cpu; do
        "$CB/ds4" --backend $be -m "$SYN" -c 4096 -p "Hello from the GPU" -n 12 --temp 0 --nothink \
            > "$LOGDIR/ds4-cli-$be.txt" 2> "$LOGDIR/ds4-cli-$be.err" || { rc=1; tail -n 3 "$LOGDIR/ds4-cli-$be.err"; }
        echo "ds4 --backend $be -p ...: $(head -c 300 "$LOGDIR/ds4-cli-$be.txt" | od -c | head -n 3 | tail -n 3 | tr -s ' ' | head -c 200)"
    done
    cmp -s "$LOGDIR/ds4-cli-cuda.txt" "$LOGDIR/ds4-cli-cpu.txt" && echo "ds4 CLI: cuda and cpu answers are identical" \
        || echo "ds4 CLI: cuda and cpu answers differ"
    rm -f "$SYN"
    # All 43 Flash layers (8 experts per layer to fit the device disk; a token still reads 6
    # routed experts per layer, as with 256): decode speed of the full depth. Opt-in: minutes.
    if [ -n "${DS4_GPU_BENCH_43:-}" ]; then
        F43=$SCR/synthetic-flash-43l-8e-q2.gguf
        t0=$(date +%s)
        timeout 300 "$CB/ds4-convert" --synthetic flash --layers 43 --experts 8 --preset q2 \
            --out "$F43" > "$LOGDIR/convert-flash43.log" 2>&1 || { tail -n 3 "$LOGDIR/convert-flash43.log"; rc=1; }
        echo "synthetic flash q2 (43 layers, 8 experts) built in $(( $(date +%s) - t0 )) s"
        timeout 200 "$CB/ds4-bench" --backend cuda -m "$F43" --ctx-start 256 --ctx-max 1024 --step-mul 2 \
            --gen-tokens 64 --prefill-chunk 512 --no-membw \
            --out "$LOGDIR/bench-flash43-cuda.csv" > "$LOGDIR/bench-flash43-cuda.log" 2>&1 || rc=1
        echo "ds4-bench --backend cuda (synthetic flash q2, 43 layers, 8 experts):"
        cat "$LOGDIR/bench-flash43-cuda.csv" 2>/dev/null; grep -E 'loaded|ctx |weights' "$LOGDIR/bench-flash43-cuda.log" | tail -n 5
        rm -f "$F43"
    fi
fi
# Experts in host memory (issue #7), 4-layer in-memory Flash-width q2 (16 experts: a token
# still reads 6 routed experts per layer, ~44 MB, as with 256): the cost per layer moved.
if [ -n "${DS4_GPU_HOST_EXPERTS:-}" ] && [ -x $B/cuda/bin/ds4-bench ]; then
    for k in 4 3 2 0; do
        timeout 120 $B/cuda/bin/ds4-bench --synthetic flash --layers 4 --experts 16 --preset q2 \
            --backend cuda --gpu-layers-experts $k --ctx-start 512 --ctx-max 1024 --step-mul 2 \
            --gen-tokens 64 --prefill-chunk 512 --no-membw --out "$LOGDIR/bench-hostexp-$k.csv" \
            > "$LOGDIR/bench-hostexp-$k.log" 2>&1 || { echo "host experts bench ($k on GPU) failed"; rc=1; }
        echo "4 layers, experts of $k on the GPU: $(grep -E 'ctx ' "$LOGDIR/bench-hostexp-$k.log" | tr -s ' ' | cut -c1-150 | tr '\n' ';')"
    done
fi
# Full-size synthetic Flash built in memory / on the GPU (tools/ds4-bench/synth.c; no file):
# DS4_GPU_SYN_FLASH=1 runs all 43 layers x 256 experts q2 (80.76 GiB). On a card under 100 GB
# (an 80 GB H100) the auto-fit keeps the first layers' routed experts in pinned host memory
# (issue #7; the bench prints how many); DS4_GPU_LAYERS_EXPERTS=N keeps exactly N layers'
# experts on the GPU, DS4_GPU_SYN_EXPERTS shrinks the expert count instead. Context as
# DS4_GPU_SYN_CTX (default 2048), generated tokens DS4_GPU_SYN_GEN (64); the run fails when the
# logits are not finite. DS4_GPU_SYN_CTX_MAX walks the frontiers ctx, 2ctx, ... up to it (the
# issue's 2k -> 64k table); DS4_GPU_SYN_PROFILE=N adds ds4-bench --profile N (per-op decode step).
if [ -n "${DS4_GPU_SYN_FLASH:-}" ] && [ -x $B/cuda/bin/ds4-bench ]; then
    mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
    ne=${DS4_GPU_SYN_EXPERTS:-256}
    ctx=${DS4_GPU_SYN_CTX:-2048}
    gl=()
    [ -n "${DS4_GPU_LAYERS_EXPERTS:-}" ] && gl=(--gpu-layers-experts "$DS4_GPU_LAYERS_EXPERTS")
    [ -n "${DS4_GPU_SYN_PROFILE:-}" ] && gl+=(--profile "$DS4_GPU_SYN_PROFILE")
    cmax=${DS4_GPU_SYN_CTX_MAX:-$ctx}
    echo "synthetic flash q2 in memory: 43 layers, $ne experts, ctx $ctx, ${gl[*]:-auto-fit} (card ${mem:-?} MiB)"
    timeout "${DS4_GPU_SYN_TIMEOUT:-300}" $B/cuda/bin/ds4-bench --synthetic flash --preset q2 \
        --experts "$ne" --backend cuda ${gl[@]+"${gl[@]}"} --ctx-start "$ctx" --ctx-max "$cmax" --step-mul 2 --gen-tokens "${DS4_GPU_SYN_GEN:-64}" \
        --prefill-chunk 2048 --no-membw --out "$LOGDIR/bench-synflash-cuda.csv" \
        > "$LOGDIR/bench-synflash-cuda.log" 2>&1 || { echo "synthetic flash bench failed"; rc=1; }
    cat "$LOGDIR/bench-synflash-cuda.csv" 2>/dev/null
    grep -E 'synthetic|GPU in|host memory|weights|logits|ctx |ds4-bench: [a-z]' "$LOGDIR/bench-synflash-cuda.log" | tail -n 10
fi
echo "gpu-check: exit $rc, logs in $LOGDIR"
exit $rc
