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
# schemathesis for scripts/api-check.sh: pinned, into a venv of its own
# under .build (no cache kept), made again only when the version differs.
schemathesis_version=4.32.5
venv=${PVH_SCHEMATHESIS_VENV:-.build/schemathesis-venv}
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
    echo "setup: installing schemathesis $schemathesis_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --no-cache-dir --quiet "schemathesis==$schemathesis_version"
fi
bash scripts/guest-kit.sh
make -s -C testguest
swift build -c release
