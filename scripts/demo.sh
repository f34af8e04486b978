#!/usr/bin/env bash
# Sets up this machine (scripts/setup.sh) and boots guests on their Xen console
# (the hypervisor console, shown on stderr; the PV console on stdout):
# the project's test guest; then the pvh daemon with two test guests from
# xl config files (list, xenstore-ls, console, dmesg, shutdown); then
# Debian's 6.1 cloud kernel with its initramfs.
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
echo "== the pvh daemon: two guests from xl config files, pvh list, a console, a clean shutdown"
# A private daemon for the demo, its sockets and logs in a temporary
# directory (PVH_RUNTIME_DIR), so it cannot clash with one already running.
# Without PVH_RUNTIME_DIR the daemon uses /run/pvh/api.sock and xenstored's
# /var/run/xenstored/socket, where xenstore-ls needs no environment.
demo=$(mktemp -d /tmp/pvh-demo.XXXXXX)
export PVH_RUNTIME_DIR=$demo PVH_LOG_DIR=$demo/log
$pvh daemon --foreground --destroy-on-exit > "$demo/daemon.out" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$demo"' EXIT
for _ in $(seq 100); do grep -q ready "$demo/daemon.out" && break; sleep 0.1; done
truncate -s 64M "$demo/web.img"
guest=$PWD/testguest/build/testguest.elf
# web: a disk and user networking (passt); both wait for control/shutdown.
cat > "$demo/web.cfg" <<CFG
type = "pvh"
name = "web"
kernel = "$guest"
memory = 64
extra = "pvh.scenarios=blk_info,net_dhcp,console_ring,control"
disk = [ '$demo/web.img,raw,xvda,rw' ]
vif = [ '' ]
CFG
cat > "$demo/db.cfg" <<CFG
type = "pvh"
name = "db"
kernel = "$guest"
memory = 32
vcpus = 2
extra = "pvh.scenarios=console_ring,control"
CFG
$pvh create "$demo/web.cfg"
$pvh create "$demo/db.cfg"
$pvh list
echo "-- xenstore-ls (Debian's xenstore-utils) on the daemon's store: web's devices"
XENSTORED_PATH=$demo/xenstored.sock xenstore-ls -f /local/domain/1/device | head -12
echo "-- pvh console web (its output so far; Ctrl-] detaches)"
(sleep 2; printf '\035') | $pvh console web || true
echo "-- pvh dmesg web (the hypervisor console)"
$pvh dmesg web | tail -4
$pvh shutdown -w web
$pvh shutdown -w db
$pvh list
kill "$daemon"; wait "$daemon" || true
trap - EXIT
rm -rf "$demo"
unset PVH_RUNTIME_DIR PVH_LOG_DIR
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
