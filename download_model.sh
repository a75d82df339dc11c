#!/usr/bin/env bash
# download_model.sh — fetches a published DeepSeek V4 Flash GGUF (the files ds4 users already
# have, GGUF_LAYOUT §5.7) from the same Hugging Face repository, resuming partial downloads,
# checks the size against the server's, and links ./ds4flash.gguf to it (the default -m of ds4
# and ds4-server).
#
#   ./download_model.sh q2-imatrix|q4-imatrix|q2|q4|mtp
#
# Environment:
#   DS4_DOWNLOAD_BASE  URL prefix (default https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main);
#                      file:// works, which the tests use
#   DS4_MODEL_DIR      where the files go (default ./gguf)
#   HF_TOKEN           sent as a bearer token when set
set -euo pipefail

BASE="${DS4_DOWNLOAD_BASE:-https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main}"
DIR="${DS4_MODEL_DIR:-./gguf}"
LINK="./ds4flash.gguf"

usage() {
    cat >&2 <<'EOF'
usage: ./download_model.sh TARGET
  q2-imatrix  2-bit routed experts, imatrix-weighted (preferred; about 81 GB)
  q4-imatrix  4-bit routed experts, imatrix-weighted (preferred; about 153 GB)
  q2          2-bit, legacy synthetic importance (about 81 GB)
  q4          4-bit, legacy unweighted (about 153 GB)
  mtp         the optional MTP companion (about 3.5 GB; use with --mtp)
The file goes to $DS4_MODEL_DIR (default ./gguf); ./ds4flash.gguf is linked to main models.
An interrupted download resumes when you run the same command again.
EOF
    exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
    q2)         FILE="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf" ;;
    q2-imatrix) FILE="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf" ;;
    q4)         FILE="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf" ;;
    q4-imatrix) FILE="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf" ;;
    mtp)        FILE="DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf" ;;
    -h|--help)  usage ;;
    *)          echo "download_model.sh: unknown target '$1'" >&2; usage ;;
esac

command -v curl >/dev/null || { echo "download_model.sh: needs curl (apt-get install curl)" >&2; exit 1; }

URL="$BASE/$FILE"
DEST="$DIR/$FILE"
PART="$DEST.part"
AUTH=()
[ -n "${HF_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $HF_TOKEN")
mkdir -p "$DIR"

# Expected size: the last Content-Length after redirects (Hugging Face answers with a redirect
# to its CDN). Unknown when the server does not say.
remote_size() {
    curl -sfIL "${AUTH[@]}" "$URL" 2>/dev/null | tr -d '\r' |
        awk 'tolower($1) == "content-length:" { n = $2 } END { if (n != "") print n }'
}
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

SIZE="$(remote_size || true)"
if [ -z "$SIZE" ]; then
    echo "download_model.sh: cannot reach $URL (or it gives no size)" >&2
    exit 1
fi

link_it() {
    if [ "$1" = mtp ]; then
        echo "MTP model at $DEST; pass it with --mtp $DEST"
        return
    fi
    if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
        echo "download_model.sh: $LINK exists and is not a link; leaving it (the model is $DEST)" >&2
        return
    fi
    ln -sfn "$DEST" "$LINK"
    echo "linked $LINK -> $DEST"
}

if [ -f "$DEST" ]; then
    if [ "$(file_size "$DEST")" = "$SIZE" ]; then
        echo "$DEST is complete ($SIZE bytes)"
        link_it "$1"
        exit 0
    fi
    echo "download_model.sh: $DEST has $(file_size "$DEST") bytes, expected $SIZE; downloading again" >&2
    mv -f "$DEST" "$PART"
fi

HAVE="$(file_size "$PART")"
if [ "$HAVE" -gt "$SIZE" ]; then
    echo "download_model.sh: partial file $PART ($HAVE bytes) is larger than $FILE ($SIZE); starting over" >&2
    rm -f "$PART"
    HAVE=0
fi
if [ "$HAVE" -gt 0 ]; then
    echo "resuming $FILE at $HAVE of $SIZE bytes"
else
    echo "downloading $FILE ($SIZE bytes) from $BASE"
fi
PROGRESS=(-sS)
[ -t 2 ] && PROGRESS=(--progress-bar)
if [ "$HAVE" -lt "$SIZE" ]; then
    curl -fL "${PROGRESS[@]}" "${AUTH[@]}" --retry 5 --retry-delay 3 -C - -o "$PART" "$URL"
fi

GOT="$(file_size "$PART")"
if [ "$GOT" != "$SIZE" ]; then
    echo "download_model.sh: $PART has $GOT bytes, expected $SIZE; run again to resume" >&2
    exit 1
fi
if [ "$(head -c 4 "$PART")" != "GGUF" ]; then
    echo "download_model.sh: $PART is not a GGUF file (no GGUF magic); removing it" >&2
    rm -f "$PART"
    exit 1
fi
mv -f "$PART" "$DEST"
echo "downloaded $DEST ($SIZE bytes)"
link_it "$1"
