#!/usr/bin/env bash
# scripts/gpu-switches.sh — full-size decode/prefill speed of one build with each of the CUDA
# speed switches turned off in turn (issue #7): what each piece of work is worth, measured in
# one call on one card. Needs an H200-class card (the full-size synthetic Flash q2, 80.76 GiB,
# built in memory). Usage on the device: . $B/env.sh && B=$B scripts/gpu-switches.sh
# (logs under $OUT when set). Rows: the default; each switch alone (PDL, off by default, on);
# all the others together (the kernels of the start of session 3, less what has no switch).
# DS4_SW_SHORT=1: only the session-4 switches, PDL and all-off (fewer runs, ~8 x 45 s).
set -u
cd "$(dirname "$0")/.."
B=${B:-${DS4_BUILD:-build}}
LOG=${OUT:-$B/gpu-switches}
mkdir -p "$LOG"
CTX=${DS4_SW_CTX:-2048}
run() { # name, env assignments...
    local name=$1
    shift
    env "$@" timeout 150 "$B/cuda/bin/ds4-bench" --synthetic flash --preset q2 --backend cuda \
        --no-membw --prefill-chunk 2048 --ctx-start "$CTX" --ctx-max "$CTX" --gen-tokens 64 \
        ${DS4_SW_ARGS:-} > "$LOG/sw-$name.log" 2>&1
    local l
    l=$(grep -E "ctx +$CTX +prefill" "$LOG/sw-$name.log" | sed -E 's/.*prefill +[0-9]+ tok +([0-9.]+) tok\/s +gen +[0-9]+ tok +([0-9.]+) tok\/s.*/\1 \2/')
    printf '%-12s %-70s prefill/decode tok/s: %s\n' "$name" "$*" "${l:-FAILED}"
}
# The session-4 defaults' switches: h1's dense decode products in the CPU's order (off:
# DS4_CUDA_MV_V1=1, the lane-order kernels, not bit-identical), h2's graph branches, h4's
# one-block-per-token chunk attention (8: session 3's kernel), h3's expert kernels.
ALL_OFF=(DS4_CUDA_FUSE3=0 DS4_CUDA_EXP_V1=1 DS4_CUDA_MOE_FUSE=0 DS4_CUDA_ATTN_V1=1
         DS4_CUDA_IDX_V1=1 DS4_CUDA_CHUNK_V1=1 DS4_CUDA_BRANCHES=0 DS4_CUDA_ATTN_CHUNK=8)
run default X=1
run mv-v1 DS4_CUDA_MV_V1=1
run branches-off DS4_CUDA_BRANCHES=0
run exp-v1 DS4_CUDA_EXP_V1=1
run attnc-8 DS4_CUDA_ATTN_CHUNK=8
run pdl-on DS4_CUDA_PDL=1
if [ -z "${DS4_SW_SHORT:-}" ]; then
    run fuse3-off DS4_CUDA_FUSE3=0
    run moefuse-off DS4_CUDA_MOE_FUSE=0
    run attn-v1 DS4_CUDA_ATTN_V1=1
    run idx-v1 DS4_CUDA_IDX_V1=1
    run chunk-v1 DS4_CUDA_CHUNK_V1=1
fi
run all-off "${ALL_OFF[@]}"
run default2 X=1
