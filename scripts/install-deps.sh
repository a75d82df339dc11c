#!/usr/bin/env bash
# Installs the Debian packages that ds4's build and tests need. Run as root (or with sudo).
# Safe to re-run: apt-get skips what is already installed.
set -euo pipefail
pkgs=(build-essential pkg-config clang libclang-rt-14-dev
      libpcre2-dev libjansson-dev libmicrohttpd-dev libssl-dev libedit-dev libcriterion-dev
      python3
      curl)  # curl: download_model.sh and its test (tests/test_cli_download.c)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# End-to-end server tests (tests/e2e, `make test-e2e`) run the official npm clients under node.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
echo "install-deps: all build and test packages present"
