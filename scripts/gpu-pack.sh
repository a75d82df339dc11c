#!/usr/bin/env bash
# scripts/gpu-pack.sh — one folder to carry to the GPU machine, small enough for the device
# tool's 64 MiB limit: stripped copies of `make cuda BUILD=$B`'s programs and tests, the
# libraries they load (scripts/gpu-carry.sh) minus those only the server links, and the test
# data, as a folder and as one xz archive. Usage, here:
#   DS4_BUILD=build/x bash scripts/gpu-pack.sh   (makes $B/pack and $B/pack.tar.xz)
# then carry ["build/x/pack.tar.xz"] (or the folder while it is under the limit) and on the
# device:  tar xJf build/x/pack.tar.xz && . build/x/pack/env.sh && OUT=$OUT scripts/gpu-check.sh
set -eu
cd "$(dirname "$0")/.."
B=${DS4_BUILD:-build}
P=$B/pack
DS4_BUILD=$B bash scripts/gpu-carry.sh > /dev/null
rm -rf "$P"
mkdir -p "$P/cuda/bin"
for f in ds4 ds4-bench ds4-convert; do
    [ -x "$B/cuda/bin/$f" ] && cp "$B/cuda/bin/$f" "$P/cuda/bin/"
done
for f in ds4-cuda-tests ds4-cuda-model-tests; do
    [ -x "$B/cuda/$f" ] && cp "$B/cuda/$f" "$P/cuda/"
done
strip "$P"/cuda/bin/* "$P"/cuda/ds4-cuda-*
cp -r "$B/gpu-carry" "$P/gpu-carry"
# ds4-server (and its libmicrohttpd, gnutls, ...) is not carried: the checks don't run it.
for l in "$P"/gpu-carry/lib/*; do
    case $(basename "$l") in
        libbsd*|libcrypto*|libedit*|libjansson*|libmd*|libpcre2-8*|libstdc++*|libtinfo*) ;;
        *) rm -f "$l" ;;
    esac
done
cat > "$P/env.sh" <<EOF
export LD_LIBRARY_PATH=\$PWD/$P/gpu-carry/lib DS4_SHARED=\$PWD/$P/gpu-carry/shared DS4_BUILD=$P
EOF
tar cf - "$P" | xz -T2 -6 > "$P.tar.xz"
du -sh "$P" "$P.tar.xz"
