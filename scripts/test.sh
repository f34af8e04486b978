#!/usr/bin/env bash
# Runs pvh's whole test suite: unit tests over mock guest memory, KVM tests
# and integration boots (the test guest through both hypercall transports,
# Debian's 6.1 and 6.12 cloud kernels). KVM tests need /dev/kvm and say so
# when they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build
swift test
