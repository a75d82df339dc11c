#!/usr/bin/env bash
# scripts/gpu-check.sh — the whole GPU check in one go, for the device machine (issue #7):
# records the card, driver and date, runs every CUDA op against the CPU reference and the
# benchmarks (build/cuda/ds4-cuda-tests --bench), and keeps the logs.
#
# Build first, here: `make cuda`; then on the GPU box (carry build/cuda/ds4-cuda-tests):
#   scripts/gpu-check.sh            logs under $OUT when set, else build/gpu-check
#   scripts/gpu-check.sh --no-bench tests only
# Exit status: that of the test program (non-zero when any case failed).
set -u
cd "$(dirname "$0")/.."
BIN=${DS4_CUDA_TESTS:-build/cuda/ds4-cuda-tests}
LOGDIR=${OUT:-build/gpu-check}
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
"$BIN" $ARGS > "$LOGDIR/cuda-tests.log" 2>&1
rc=$?
grep -E '^(FAIL|device 0:)' "$LOGDIR/cuda-tests.log"
grep -E '^bench' "$LOGDIR/cuda-tests.log" > "$LOGDIR/bench.txt"
cat "$LOGDIR/bench.txt"
tail -n 1 "$LOGDIR/cuda-tests.log"
echo "gpu-check: exit $rc, logs in $LOGDIR"
exit $rc
