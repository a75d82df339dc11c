#!/usr/bin/env bash
# scripts/attn-dec-probe.sh — one device call's worth of measurements for the decode attention's
# cluster kernel (src/cuda/attn_dec_cl.cu, issue #7; docs/BENCHMARKS.md "Decode attention (h5,
# session 5)"), which is exact but was not faster than attention_dec.cu's two kernels:
#   1. its op tests with 8 value-tile stages (DS4_CUDA_ATTD_ST=8, never run before) — every
#      cluster case against the CPU, bit for bit (the whole ds4-cuda-tests run, ~25 s);
#   2. the decode attention op bench for the two kernels, the cluster kernel with 4 and 8 stages;
#   3. ncu of one launch of each at the 640-row shape (warp stalls, memory), boost clocks.
# On the device, after unpacking a gpu-pack.sh folder:  B=build/x/pack scripts/attn-dec-probe.sh
# (logs under $OUT, else $B/attn-probe). Each step has its own time limit; ~150 s in all.
set -u
cd "$(dirname "$0")/.."
B=${B:-${DS4_BUILD:-build}}
T=$B/cuda/ds4-cuda-tests
L=${OUT:-$B/attn-probe}
mkdir -p "$L"
DS4_CUDA_ATTD_ST=8 DS4_CUDA_ATTD_CL=2 timeout 60 "$T" > "$L/tests-st8.log" 2>&1
grep -E '^FAIL' "$L/tests-st8.log" | head -20
tail -n 1 "$L/tests-st8.log"
for v in "0 4" "2 4" "2 8"; do
    set -- $v
    echo "== DS4_CUDA_ATTD_CL=$1 DS4_CUDA_ATTD_ST=$2" >> "$L/opbench.txt"
    DS4_CUDA_ATTD_CL=$1 DS4_CUDA_ATTD_ST=$2 timeout 20 "$T" --bench-dec 99 2>&1 | grep 'attn decode' >> "$L/opbench.txt"
done
cat "$L/opbench.txt"
# The 640-row shape is the bench's second (after 201 window-only calls): the cluster kernel is
# one launch per call, the two kernels two.
NCU="ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats"
DS4_CUDA_ATTD_CL=2 timeout 60 $NCU -k regex:k_attd_cl --launch-skip 205 --launch-count 1 "$T" --bench-dec 99 > "$L/ncu-cluster.txt" 2>&1
DS4_CUDA_ATTD_CL=0 timeout 60 $NCU -k regex:k_attd_ --launch-skip 410 --launch-count 2 "$T" --bench-dec 99 > "$L/ncu-two.txt" 2>&1
grep -E 'Duration|Stall|Throughput|Achieved Occupancy|Cluster' "$L"/ncu-*.txt | head -60
