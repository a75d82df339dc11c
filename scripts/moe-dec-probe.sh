#!/usr/bin/env bash
# scripts/moe-dec-probe.sh — one device call's worth of checks and measurements for the decode
# MoE's folded gate+up launch (cuda_experts_gate_up_fused, src/cuda/matvec_exp.cu, issue #7;
# docs/BENCHMARKS.md "Decode MoE (h2, session 5)"), built but not yet run on a GPU:
#   1. every CUDA op test and the whole-model tests with the fold on (DS4_CUDA_MOE_DEC=3: the
#      route and the SwiGLU+Q8_K in the gate+up launch), plus the fold's op bench
#      (DS4_MOE_DEC_BENCH=1): scripts/gpu-check.sh --no-bench, ~80 s; both "passed" lines must
#      end "0 failed" before the default may change (forward_moe.c MOE_DEC_DEFAULT);
#   2. the full-size 2k decode with its per-call-site profile: fold off (0), SwiGLU only (1),
#      both (3); ~25 s each.
# On the device, after unpacking a gpu-pack.sh folder P:  . P/env.sh && B=P scripts/moe-dec-probe.sh
# (logs under $OUT, else $B/moe-probe; with $OUT set the check's log folder comes back as one
# archive, within the device tool's 8 files). ~160 s in all.
set -u
cd "$(dirname "$0")/.."
B=${B:-${DS4_BUILD:-build}}
L=${OUT:-$B/moe-probe}
mkdir -p "$L"
DS4_CUDA_MOE_DEC=3 DS4_MOE_DEC_BENCH=1 DS4_BUILD=$B OUT=$L/check timeout 110 scripts/gpu-check.sh --no-bench \
    > "$L/check.txt" 2>&1
echo "check exit: $?" >> "$L/check.txt"
grep -E 'passed|^FAIL|^bench moe fold|check exit' "$L/check.txt" | head -40
for m in 0 1 3; do
    DS4_CUDA_MOE_DEC=$m timeout 45 "$B/cuda/bin/ds4-bench" --synthetic flash --preset q2 --backend cuda \
        --no-membw --prefill-chunk 2048 --ctx-start 2048 --ctx-max 2048 --gen-tokens 64 --profile 3 \
        > "$L/bench-$m.txt" 2>&1
    echo "== DS4_CUDA_MOE_DEC=$m"
    grep -E '^ds4-bench: ctx|graph step|route|gate\+up_exps|swiglu|down_exps|gate_inp' "$L/bench-$m.txt"
done
if [ -n "${OUT:-}" ] && [ -d "$L/check" ]; then
    (cd "$L" && tar czf check-logs.tgz check && rm -rf check)
fi
