#!/usr/bin/env bash
# scripts/gpu-carry.sh — assembles $B/gpu-carry for a GPU machine that has no -dev packages
# and no copy of ../shared: the shared libraries the `make cuda` binaries load (minus libc,
# libm, the loader, libgcc_s) and the test data the model checks read (tiny-v4 checkpoint and
# golden, the V4 tokenizer). Then carry $B/cuda/bin, $B/cuda/ds4-cuda-tests,
# $B/cuda/ds4-cuda-model-tests and $B/gpu-carry, and on the device run
#   LD_LIBRARY_PATH=$PWD/$B/gpu-carry/lib DS4_SHARED=$B/gpu-carry/shared \
#     scripts/gpu-check.sh [--model-only]
set -eu
cd "$(dirname "$0")/.."
B=${DS4_BUILD:-build} # another build folder: DS4_BUILD=build/x (make cuda BUILD=build/x)
SH=${DS4_SHARED:-../shared}
OUTD=$B/gpu-carry
rm -rf "$OUTD"
mkdir -p "$OUTD/lib" "$OUTD/shared/testdata/tiny-v4" "$OUTD/shared/testdata/tokenizer"
for b in $B/cuda/bin/* $B/cuda/ds4-cuda-tests $B/cuda/ds4-cuda-model-tests; do
    [ -x "$b" ] || continue
    ldd "$b" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -Ev '/(libc|libm|ld-linux[^/]*|libgcc_s)\.so' | while read -r l; do
    cp -L "$l" "$OUTD/lib/"
done
cp "$SH"/testdata/tiny-v4/{model.safetensors,config.json,inference_config.json,golden_topk16.safetensors} \
    "$OUTD/shared/testdata/tiny-v4/"
cp "$SH/testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json" "$OUTD/shared/testdata/tokenizer/"
du -sh "$OUTD"
