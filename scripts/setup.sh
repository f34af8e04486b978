#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for pvh: Debian packages, the guest kit
# (Debian's cloud kernels + a busybox initramfs) and a release build.
# Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pkgs < <(grep -v '^#' scripts/deps.txt | grep -v '^$')
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi
bash scripts/guest-kit.sh
make -s -C testguest
swift build -c release
