#!/usr/bin/env bash
# Sets up this machine (scripts/setup.sh) and boots guests on their Xen console
# (the hypervisor console, shown on stderr; the PV console on stdout):
# the project's test guest, then Debian's 6.1 cloud kernel with its initramfs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pvh=.build/release/pvh
kit=${PVH_GUEST_KIT:-guest-kit/out}
$pvh host
echo
echo "== test guest (testguest/): its scenarios on the Xen console, then poweroff"
# The test guest reports with console_io: the hypervisor console (pvh dmesg),
# shown here live on stderr.
$pvh run --kernel testguest/build/testguest.elf --memory 64 --hypervisor-console stderr
echo
echo "== Debian 6.1 cloud kernel, entered at its PVH entry point (earlyprintk=xen)"
cmdline="earlyprintk=xen console=hvc0"
limit=120
if $pvh host | grep -q '^KVM backend: software'; then
    # Guest ring 0 runs in KVM's emulator here (~1M instructions/s): switch off
    # what it cannot run, and show the first minute (the PVH banner comes at
    # ~30 s; userspace takes about 26 minutes even with LinuxUserspaceTests'
    # command line).
    # (clearcpuid: instructions KVM's emulator cannot run, which KVM_SET_CPUID2
    # cannot hide on this backend; init_on_alloc=0: no zeroing of every
    # allocation, which is slow when emulated.)
    cmdline="$cmdline noxsave clearcpuid=xsave,cx16,popcnt,bmi1,bmi2,abm,movbe,fsgsbase,rdrand,rdseed,sha_ni,aes,pclmulqdq,avx,avx2,fma,f16c,sse4_1,sse4_2,ssse3 init_on_alloc=0 mitigations=off"
    limit=60
fi
status=0
timeout --foreground -s INT "$limit" $pvh run --kernel "$kit/vmlinuz-6.1" \
    --initrd "$kit/initramfs-6.1.cpio" --cmdline "$cmdline" --memory 512 --hypervisor-console stderr || status=$?
echo
echo "== pvh exited with status $status (130 or 124: the demo's time limit of ${limit}s)"
