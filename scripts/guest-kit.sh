#!/usr/bin/env bash
# guest-kit.sh: real Linux test guests for pvh, from Debian 12's own packages.
#
# Produces, in guest-kit/out/ (or $PVH_GUEST_KIT):
#   vmlinuz-6.1, vmlinuz-6.12              the cloud kernels' bzImages, as shipped
#   initramfs-6.1.cpio, initramfs-6.12.cpio
#                                          busybox + /init + that kernel's
#                                          xen-blkfront/xen-netfront modules,
#                                          uncompressed: where the guest's
#                                          kernel code is emulated (software
#                                          KVM), gunzip in the guest took
#                                          about 150 s of a 2.2 MB archive
#   config-6.1, config-6.12                the kernels' .config (for debugging)
#   versions.txt                           the Debian packages used
#
# The /init prints (on the kernel console, hvc0 under Xen):
#   PVH-INIT: userspace reached
#   PVH-INIT: insmod <module> ok|failed|built-in      (per module, in order;
#             none with pvh.modules=0 on the kernel command line)
#   PVH-INIT: /sys/bus/xen/devices:                    (then `ls` of it)
#   PVH-INIT: disk ...                                 (with pvh.disk=1: mounts
#             the ext4 on /dev/xvda, reads host.txt, writes guest.txt, syncs,
#             remounts read-only and reads it back; pvh.modules=blk loads
#             xen-blkfront only)
#   PVH-INIT: net ...                                  (with pvh.net=1: DHCP over
#             eth0, pvh.netmib MiB to the gateway's pvh.netport and back, md5s;
#             pvh.modules=net loads xen-netfront only)
#   PVH-INIT: powering off
# and then runs `poweroff -f`.
#
# Kernels: the newest linux-image-6.1.0-<N>-cloud-amd64-unsigned and the newest
# linux-image-6.12.<M>+deb12-cloud-amd64-unsigned that apt knows about. In
# Debian 12 the 6.12 kernels come from bookworm-security (and
# bookworm-backports); if neither is in the apt sources this script stops and
# says so rather than skipping 6.12.
#
# Packages are only downloaded (apt-get download) and unpacked with
# dpkg-deb -x, never installed. Re-running is fast: if versions.txt matches
# the packages apt would pick now and all outputs exist, nothing is done.
# Use --force to rebuild anyway.
#
# Run as root on Debian 12 (root only for mknod of /dev/console in the
# initramfs; without it the node is skipped, the kernel's built-in initramfs
# already has one). Network access: Debian mirrors, through apt.
#
# Debian packages this script needs (the CI installs them first):
#   apt dpkg cpio gzip xz-utils findutils coreutils grep gawk
PACKAGES_NEEDED="apt dpkg cpio gzip xz-utils findutils coreutils grep gawk"

set -euo pipefail

usage() { echo "usage: $0 [--force]" >&2; exit 2; }
FORCE=0
for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	--print-packages) echo "$PACKAGES_NEEDED"; exit 0 ;;
	*) usage ;;
	esac
done

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${PVH_GUEST_KIT:-$REPO_ROOT/guest-kit/out}
MODULES="xen-blkfront xen-netfront"

log() { echo "guest-kit: $*" >&2; }
die() { echo "guest-kit: error: $*" >&2; exit 1; }

for tool in apt-cache apt-get dpkg-deb cpio gzip xz find sort awk; do
	command -v "$tool" >/dev/null || die "missing $tool (apt-get install $PACKAGES_NEEDED)"
done

# --- which packages -----------------------------------------------------------
# Newest package whose name matches an extended regex, by version sort.
# (One apt-cache call for all names and one for all versions: each costs ~1 s.)
NAMES=$(apt-cache pkgnames linux-image-)
newest() {
	grep -E "$1" <<<"$NAMES" | sort -V | tail -n 1 || true
}

PKG_61=$(newest '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$')
PKG_612=$(newest '^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$')
PKG_BB=busybox-static

[ -n "$PKG_61" ] || die "no linux-image-6.1.0-*-cloud-amd64-unsigned in apt (run apt-get update?)"
if [ -z "$PKG_612" ]; then
	die "no linux-image-6.12.*+deb12-cloud-amd64-unsigned in apt. In Debian 12 it is in
  bookworm-security and bookworm-backports; apt sources here:
$(grep -rhsE '^(deb |Suites:)' /etc/apt/sources.list /etc/apt/sources.list.d/ | sed 's/^/    /')
  add one of those suites (and apt-get update), then re-run."
fi

declare -A PKG=([6.1]=$PKG_61 [6.12]=$PKG_612)
# Candidate versions, as "package version" lines.
VERSIONS=$(apt-cache policy "$PKG_61" "$PKG_612" "$PKG_BB" |
	awk '/^[^ ]/ {sub(":$", "", $1); p = $1} /Candidate:/ {print p, $2}')
candidate() { awk -v p="$1" '$1 == p {print $2}' <<<"$VERSIONS"; }
WANT=$(
	for k in 6.1 6.12; do echo "$k ${PKG[$k]} $(candidate "${PKG[$k]}")"; done
	echo "busybox $PKG_BB $(candidate $PKG_BB)"
	# This script itself: a changed /init rebuilds the initramfs.
	echo "script $(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
)

# --- already done? ------------------------------------------------------------
OUTPUTS="vmlinuz-6.1 vmlinuz-6.12 initramfs-6.1.cpio initramfs-6.12.cpio"
report() {
	echo "guest-kit: $OUT"
	(cd "$OUT" && ls -l $OUTPUTS config-* 2>/dev/null | awk '{printf "  %10d  %s\n", $5, $NF}')
	sed 's/^/  /' "$OUT/versions.txt"
}
if [ "$FORCE" = 0 ] && [ -f "$OUT/versions.txt" ] && [ "$(cat "$OUT/versions.txt")" = "$WANT" ]; then
	done_already=1
	for f in $OUTPUTS; do [ -s "$OUT/$f" ] || done_already=0; done
	if [ "$done_already" = 1 ]; then
		log "up to date"
		report
		exit 0
	fi
fi

# --- download and unpack ------------------------------------------------------
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pvh-guest-kit.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/debs"
log "downloading: ${PKG[6.1]} ${PKG[6.12]} $PKG_BB"
(cd "$WORK/debs" && apt-get download -q -o APT::Sandbox::User=root \
	"${PKG[6.1]}" "${PKG[6.12]}" "$PKG_BB" >&2)

unpack() {	# package -> directory
	local deb
	deb=$(ls "$WORK"/debs/"$1"_*.deb)
	mkdir -p "$WORK/x/$1"
	dpkg-deb -x "$deb" "$WORK/x/$1"
	echo "$WORK/x/$1"
}
BB_ROOT=$(unpack "$PKG_BB")
BUSYBOX="$BB_ROOT/bin/busybox"
[ -x "$BUSYBOX" ] || die "no bin/busybox in $PKG_BB"

# --- initramfs ----------------------------------------------------------------
# A module file, decompressed, on stdout (Debian 6.1 ships .ko, 6.12 .ko.xz).
ko_cat() {
	case "$1" in
	*.ko.xz)  xz -dc "$1" ;;
	*.ko.zst) zstd -dc "$1" ;;
	*.ko.gz)  gzip -dc "$1" ;;
	*)        cat "$1" ;;
	esac
}
# Module dependency closure of $MODULES, dependencies first. The "depends="
# string of a module's .modinfo section lists them (what modinfo prints).
declare -A MODFILE SEEN
ORDER=()
visit() {
	local m=${1//_/-} dep
	[ -n "${SEEN[$m]:-}" ] && return
	SEEN[$m]=1
	local f=${MODFILE[$m]:-}
	[ -n "$f" ] || return 0		# built-in (or missing): nothing to load
	for dep in $(ko_cat "$f" | tr '\0' '\n' | grep -a -m1 '^depends=' | cut -d= -f2- | tr ',' ' '); do
		visit "$dep"
	done
	ORDER+=("$m")
}

build_initramfs() {	# key kernel-root kver
	local key=$1 kroot=$2 kver=$3
	local stage="$WORK/stage-$key" moddir="$kroot/lib/modules/$kver" f m

	MODFILE=() SEEN=() ORDER=()
	while IFS= read -r f; do
		m=$(basename "$f"); m=${m%%.ko*}; m=${m//_/-}
		MODFILE[$m]=$f
	done < <(find "$moddir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
	for m in $MODULES; do visit "$m"; done

	rm -rf "$stage"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,lib/modules}
	cp "$BUSYBOX" "$stage/bin/busybox"
	mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null ||
		log "note: cannot mknod /dev/console (not root?); relying on the kernel's built-in one"

	# Modules, decompressed so that busybox insmod needs no xz/zstd support.
	local list=""
	for m in "${ORDER[@]}"; do
		ko_cat "${MODFILE[$m]}" > "$stage/lib/modules/$m.ko"
		list="$list $m"
	done
	# Requested modules that are built into this kernel (modules.builtin).
	local builtin=""
	for m in $MODULES; do
		if [ -z "${MODFILE[$m]:-}" ]; then
			if grep -qE "/${m//-/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
				builtin="$builtin $m"
			else
				die "$m: neither a module nor built into $kver"
			fi
		fi
	done

	cat > "$stage/init" <<EOF
#!/bin/busybox sh
# pvh test initramfs for Linux $kver (generated by scripts/guest-kit.sh)
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "PVH-INIT: userspace reached"
echo "PVH-INIT: kernel \$(uname -r)"
# pvh.modules=0 skips the frontends' modules: loading one (relocations,
# its BTF, its signature) took about 4 minutes where the kernel is emulated.
grep -q pvh.modules=0 /proc/cmdline && echo "PVH-INIT: modules skipped (pvh.modules=0)"
for m in$list; do
	grep -q pvh.modules=0 /proc/cmdline && break
	grep -q pvh.modules=blk /proc/cmdline && [ \$m != xen-blkfront ] && continue
	grep -q pvh.modules=net /proc/cmdline && [ \$m != xen-netfront ] && continue
	if insmod /lib/modules/\$m.ko; then
		echo "PVH-INIT: insmod \$m ok"
	else
		echo "PVH-INIT: insmod \$m failed"
	fi
done
$(for m in $builtin; do echo "echo \"PVH-INIT: insmod $m built-in\""; done)
echo "PVH-INIT: /sys/bus/xen/devices:"
ls -l /sys/bus/xen/devices
# What the host's tests check from inside (issue 3): one line each.
echo "PVH-INIT: hypervisor type=\$(cat /sys/hypervisor/type 2>/dev/null) guest_type=\$(cat /sys/hypervisor/guest_type 2>/dev/null)"
echo "PVH-INIT: clocksource=\$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
echo "PVH-INIT: cpus online=\$(cat /sys/devices/system/cpu/online 2>/dev/null) count=\$(grep -c ^processor /proc/cpuinfo)"
echo "PVH-INIT: interrupts xen-dyn=\$(grep -c xen-dyn /proc/interrupts) xen-percpu=\$(grep -c xen-percpu /proc/interrupts) io-apic=\$(grep -c IO-APIC /proc/interrupts)"
grep -i xen /proc/interrupts
# Issue 10: a PV disk end to end (the host made an ext4 image with host.txt).
if grep -q pvh.disk=1 /proc/cmdline; then
	i=0
	while [ ! -b /dev/xvda ] && [ \$i -lt 600 ]; do sleep 1; i=\$((i + 1)); done
	if [ -b /dev/xvda ]; then
		echo "PVH-INIT: disk xvda sectors=\$(cat /sys/block/xvda/size) after \${i}s"
		mkdir -p /mnt
		if mount -t ext4 /dev/xvda /mnt; then
			echo "PVH-INIT: disk read host.txt=\$(cat /mnt/host.txt)"
			echo "written by the guest" > /mnt/guest.txt
			sync
			umount /mnt
			mount -t ext4 -o ro /dev/xvda /mnt && echo "PVH-INIT: disk read back guest.txt=\$(cat /mnt/guest.txt)"
			umount /mnt
		else
			echo "PVH-INIT: disk mount failed"
		fi
	else
		echo "PVH-INIT: disk /dev/xvda missing"
	fi
fi
# Issue 11: a PV network interface end to end over user networking: an
# address from passt's DHCP (udhcpc), then pvh.netmib MiB sent to a TCP
# server at the gateway (the host; port pvh.netport), which sends the same
# bytes back and closes; both directions' md5 printed.
if grep -q pvh.net=1 /proc/cmdline; then
	port=\$(sed -n 's/.*pvh.netport=\([0-9]*\).*/\1/p' /proc/cmdline); [ -n "\$port" ] || port=5001
	mib=\$(sed -n 's/.*pvh.netmib=\([0-9]*\).*/\1/p' /proc/cmdline); [ -n "\$mib" ] || mib=1
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 600 ]; do sleep 1; i=\$((i + 1)); done
	if [ -e /sys/class/net/eth0 ]; then
		echo "PVH-INIT: net eth0 mac=\$(cat /sys/class/net/eth0/address) mtu=\$(cat /sys/class/net/eth0/mtu) after \${i}s (uptime \$(cut -d' ' -f1 /proc/uptime))"
		mkdir -p /etc
		cat > /etc/udhcpc.script <<'SCRIPT'
#!/bin/busybox sh
case "\$1" in
bound|renew)
	ip addr add \$ip/\$mask dev \$interface
	[ -n "\$router" ] && ip route add default via \$router
	echo \$router > /tmp/gateway
	echo "PVH-INIT: net dhcp address \$ip/\$mask router \$router dns \$dns (uptime \$(cut -d' ' -f1 /proc/uptime))"
	;;
esac
SCRIPT
		chmod +x /etc/udhcpc.script
		ip link set lo up
		ip link set eth0 up
		if udhcpc -i eth0 -n -q -t 30 -T 10 -s /etc/udhcpc.script && [ -s /tmp/gateway ]; then
			gw=\$(cat /tmp/gateway)
			# One write per MiB: in the software emulator every system call of
			# the guest kernel is slow (with bs=1024, 65,536 writes, dd and md5sum
			# took 1,982 s of a run before the first byte was sent).
			dd if=/dev/zero of=/tmp/net.out bs=1048576 count=\$mib 2>/dev/null
			echo "PVH-INIT: net sending \$mib MiB to \$gw:\$port at uptime \$(cut -d' ' -f1 /proc/uptime), md5 \$(md5sum < /tmp/net.out | cut -c1-32)"
			# Every minute while nc runs: what the interface, its event
			# channels and TCP counted (a run on the software backend may stop
			# at the test's limit mid-transfer). Shell built-ins only: a fork
			# and exec in the emulated kernel costs tens of seconds, and a
			# first version with ten of them per line (cat, awk, wc) printed
			# its first line 458 s after the transfer began.
			( while sleep 60; do
				read up rest < /proc/uptime
				s=/sys/class/net/eth0/statistics
				read rxp < \$s/rx_packets; read rxb < \$s/rx_bytes
				read txp < \$s/tx_packets; read txb < \$s/tx_bytes
				ev=
				while read n c rest; do
					case "\$rest" in *vif*) ev="\$ev \${rest##* }=\$c" ;; esac
				done < /proc/interrupts
				tcp=
				while read a b c d e f g h i j ins outs re rest; do
					[ "\$a" = Tcp: ] && tcp="in \$ins out \$outs retransmitted \$re"
				done < /proc/net/snmp
				echo "PVH-INIT: net progress at uptime \$up: eth0 rx \$rxp packets \$rxb bytes, tx \$txp packets \$txb bytes; events\$ev; tcp \$tcp"
			done ) &
			progress=\$!
			nc \$gw \$port < /tmp/net.out > /tmp/net.in
			kill \$progress 2>/dev/null
			echo "PVH-INIT: net received \$(wc -c < /tmp/net.in) bytes at uptime \$(cut -d' ' -f1 /proc/uptime), md5 \$(md5sum < /tmp/net.in | cut -c1-32)"
		else
			echo "PVH-INIT: net dhcp failed"
		fi
	else
		echo "PVH-INIT: net eth0 missing"
	fi
fi
echo "PVH-INIT: balloon target_kb=\$(cat /sys/devices/system/xen_memory/xen_memory0/target_kb 2>/dev/null)"
# xenbus control/shutdown reaches init as the signals busybox's poweroff
# (USR2), halt (USR1) and reboot (TERM) send: PID 1 is this shell.
trap 'echo "PVH-INIT: poweroff requested"; poweroff -f' USR2
trap 'echo "PVH-INIT: halt requested"; poweroff -f' USR1
trap 'echo "PVH-INIT: reboot requested"; reboot -f' TERM
if grep -q pvh.wait=1 /proc/cmdline; then
	echo "PVH-INIT: waiting for control/shutdown"
	while :; do sleep 1; done
fi
if grep -q pvh.shell=1 /proc/cmdline; then
	echo "PVH-INIT: shell on hvc0 (poweroff -f to end)"
	setsid cttyhack sh
fi
echo "PVH-INIT: powering off"
poweroff -f
EOF
	chmod 755 "$stage/init"

	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc --owner=0:0 --quiet) > "$OUT/initramfs-$key.cpio.tmp"
	mv "$OUT/initramfs-$key.cpio.tmp" "$OUT/initramfs-$key.cpio"
	rm -f "$OUT/initramfs-$key.cpio.gz"
	log "initramfs-$key.cpio: modules:$list${builtin:+ built-in:$builtin}"
}

for key in 6.1 6.12; do
	kroot=$(unpack "${PKG[$key]}")
	vmlinuz=$(ls "$kroot"/boot/vmlinuz-*)
	kver=${vmlinuz##*/vmlinuz-}
	cp "$vmlinuz" "$OUT/vmlinuz-$key"
	cp "$kroot/boot/config-$kver" "$OUT/config-$key" 2>/dev/null || true
	build_initramfs "$key" "$kroot" "$kver"
	rm -rf "$kroot"
done

echo "$WANT" > "$OUT/versions.txt"
report
