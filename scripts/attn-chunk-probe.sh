#!/usr/bin/env bash
# scripts/attn-chunk-probe.sh — the checks and measurements of k_attn_chunk4 (the prefill chunk
# attention with two blocks an SM, src/cuda/attention_chunk4.cu, h4 session 5) in one device
# call of ~160 s. Here: `DS4_BUILD=build/x bash scripts/gpu-pack.sh`, carry build/x/pack.tar.xz;
# there: `tar xJf build/x/pack.tar.xz && . build/x/pack/env.sh && B=build/x/pack
# scripts/attn-chunk-probe.sh` (logs under $OUT). It runs:
#  1. every CUDA op test, the chunk attention cases also with variants 4 and 5 (DS4_CHUNK4_TEST:
#     each bit-identical to the CPU loop and to the other kernels), then the chunk benches of
#     every variant (DS4_CHUNK_BENCH: 2048 tokens x 64 heads x 512, three row mixes);
#  2. the whole-model tests with k_attn_chunk4 as the chunk kernel (DS4_CUDA_ATTN_CHUNK=4:
#     batched prefill vs the CPU, bit-identical);
#  3. the full-size prefill at 2k and 16k with the chunk's per-site profile, variant 64 (the
#     default, before) and 4 (after).
# If both "0 failed" lines hold and 4 is faster, make 4 the default (attention_chunk.cu
# attc_variant) and drop the DS4_CHUNK4_TEST gate in tests/cuda/test_cuda_chunk.c.
set -u
cd "$(dirname "$0")/.."
B=${DS4_BUILD:-build}
O=${OUT:-$B/attn-chunk-probe}
mkdir -p "$O"
{
    date -u '+%Y-%m-%d %H:%M:%S UTC'
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv 2>&1
    CO=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
    # local-memory traffic of the new kernel (ptxas reports 56 bytes spilled for Dh 512)
    "$CO" -sass "$B/cuda/ds4-cuda-tests" 2>/dev/null |
        awk '/Function : /{f=$3} f ~ /k_attn_chunk4/ && /LDL|STL/ {n[f]++} END {for (k in n) print "local ld/st", n[k], k}'
} > "$O/info.txt" 2>&1
cat "$O/info.txt"
DS4_CHUNK4_TEST=1 DS4_CHUNK_BENCH=1 timeout 90 "$B/cuda/ds4-cuda-tests" > "$O/ops.log" 2>&1
rc=$?
echo "op tests rc $rc"
grep -E '^(FAIL|bench)' "$O/ops.log"
tail -n 1 "$O/ops.log"
[ $rc = 124 ] && exit $rc # a hung kernel: the rest would only hang again
DS4_CUDA_ATTN_CHUNK=4 OUT=$O/model timeout 60 scripts/gpu-check.sh --model-only > "$O/model.txt" 2>&1
echo "model tests (variant 4) rc $?"
grep -E 'passed|failed|FAIL' "$O/model.txt" | tail -n 4
for v in 64 4; do
    DS4_CUDA_ATTN_CHUNK=$v timeout 60 "$B/cuda/bin/ds4-bench" --synthetic flash --preset q2 \
        --backend cuda --no-membw --prefill-chunk 2048 --ctx-start 2048 --ctx-max 16384 \
        --step-mul 8 --gen-tokens 8 --profile-prefill > "$O/fullsize-$v.txt" 2>&1
    echo "full size, variant $v: rc $?"
    grep -E '^[0-9]+,|attn' "$O/fullsize-$v.txt"
done
