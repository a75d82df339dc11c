#!/usr/bin/env bash
# scripts/h5-decode-check.sh — one GPU call for the decode hc_pre / indexer top-k work (issue #7):
# op tests and model tests of the build under test, then the full-size synthetic Flash q2
# decode (43 layers x 256 experts, in memory; needs ~81 GiB: an H200) of that build and of a
# "before" build, back to back on the same card, ctx 2048 with the per-op profile; then a long
# context with the profile (LONG_ARGS, e.g. "--layers 4 --experts 16" so a 64k prefill fits the
# call); with NCU=1 Nsight Compute stall reasons of the decode hc_pre / hc_post kernels.
#   B=build/h5 BEFORE=build/h5b CTX_LONG=65536 LONG_ARGS="--layers 4 --experts 16" NCU=1 \
#     scripts/h5-decode-check.sh
# Carry: $B/cuda/ds4-cuda-tests, $B/cuda/ds4-cuda-model-tests, $B/cuda/bin/ds4-bench,
# $BEFORE/cuda/bin/ds4-bench, $B/gpu-carry (scripts/gpu-carry.sh). Logs under $OUT.
set -u
cd "$(dirname "$0")/.."
B=${B:-build/h5}
BEFORE=${BEFORE:-build/h5b}
CTX_LONG=${CTX_LONG:-16384}
LONG_ARGS=${LONG_ARGS:-}
O=${OUT:-/tmp/h5-check}
mkdir -p "$O"
export LD_LIBRARY_PATH=$PWD/$B/gpu-carry/lib DS4_SHARED=$PWD/$B/gpu-carry/shared DS4_TMP=/tmp
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
{ date -u '+%Y-%m-%d %H:%M:%S UTC'; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } \
    > "$O/device.txt" 2>&1
cat "$O/device.txt"
# correctness first, both test programs side by side
timeout "${T_OPS:-45}" "$B/cuda/ds4-cuda-tests" > "$O/ops.log" 2>&1 & p1=$!
timeout "${T_MODEL:-60}" "$B/cuda/ds4-cuda-model-tests" > "$O/model.log" 2>&1 & p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
echo "op tests rc=$r1, model tests rc=$r2 (t=$(el)s)"
grep -hE '^FAIL|passed' "$O/ops.log" "$O/model.log"
SYN="--synthetic flash --preset q2 --backend cuda --prefill-chunk 2048 --no-membw"
bench() { # name ctx gen extra...
    local n=$1 c=$2 g=$3; shift 3
    for v in after before; do
        bin=$B/cuda/bin/ds4-bench
        [ $v = before ] && bin=$BEFORE/cuda/bin/ds4-bench
        timeout "${T_BENCH:-40}" "$bin" $SYN "$@" --ctx-start "$c" --ctx-max "$c" --gen-tokens "$g" \
            --profile 4 > "$O/$n-$v.log" 2>&1
        echo "$n $v rc=$? (t=$(el)s): $(grep -E '^[0-9]+,' "$O/$n-$v.log" | tail -n 1)"
        grep -E 'graph step|hc_pre|indexer_topk|hc_post' "$O/$n-$v.log" | head -n 8
    done
}
bench b2k 2048 32
# shellcheck disable=SC2086
bench blong "$CTX_LONG" 8 $LONG_ARGS
if [ -n "${NCU:-}" ] && [ "$(el)" -lt "${NCU_BEFORE_S:-110}" ] && command -v ncu > /dev/null; then
    SMALL="$SYN --layers 4 --experts 16 --ctx-start 256 --ctx-max 256 --gen-tokens 2"
    for v in after before; do
        bin=$B/cuda/bin/ds4-bench k='regex:k_hc_pre_dec|k_hc_post|k_idx_(hist|cut|write)' c=8
        [ $v = before ] && bin=$BEFORE/cuda/bin/ds4-bench k='regex:k_hc_pre' c=10
        timeout "${T_NCU:-30}" ncu -k "$k" -c $c --section SpeedOfLight --section WarpStateStats \
            "$bin" $SMALL > "$O/ncu-$v.log" 2>&1
        echo "ncu $v rc=$? (t=$(el)s)"
        grep -iE '^  k_|Duration|stall|Cycles Per Issued' "$O/ncu-$v.log" | cut -c1-300 | head -n 40
    done
fi
echo "done t=$(el)s"
