#!/usr/bin/env bash
# Sets up this machine (scripts/setup.sh) and boots guests on their Xen console:
# the project's test guest, then Debian's 6.1 cloud kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pvh=.build/release/pvh
kit=${PVH_GUEST_KIT:-guest-kit/out}
$pvh host
echo "== test guest (testguest/): its scenarios, then poweroff"
$pvh run --kernel testguest/build/testguest.elf --memory 64
echo "== Debian 6.1 cloud kernel, entered at its PVH entry point"
# On a software KVM backend Linux runs at ~1 M instructions/s: show its first
# minute of boot. On hardware virtualization it reaches the initramfs shell.
timeout --foreground -s INT 60 $pvh run --kernel "$kit/vmlinuz-6.1" --initrd "$kit/initramfs-6.1.cpio.gz" \
    --cmdline "earlyprintk=xen console=hvc0 noxsave clearcpuid=xsave" --memory 512 || true
