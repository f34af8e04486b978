#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (Fuzz/corpus/<target>/seed-*).

Hand-made inputs, most taken from the unit tests' cases and the README's
examples; nothing fetched. Run from anywhere; rewrites the seed-* files only
(inputs libFuzzer adds to a corpus directory are not touched).
"""
import base64, bz2, gzip, lzma, os, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# XenStore: byte 0 the chunk size, then xsd_sockmsg frames (io/xs_wire.h:
# type, req_id, tx_id, len, little-endian) from domain 1.
XS = {"directory": 1, "read": 2, "get_perms": 3, "watch": 4, "unwatch": 5, "transaction_start": 6,
      "transaction_end": 7, "get_domain_path": 10, "write": 11, "mkdir": 12, "rm": 13, "set_perms": 14,
      "reset_watches": 21, "directory_part": 22}
def frame(kind, payload, req=1, tx=0):
    return struct.pack("<IIII", XS[kind], req, tx, len(payload)) + payload
def z(*parts):
    return b"".join(p.encode() + b"\0" for p in parts)
put("xenstore", "read-write", b"\x07" + frame("write", z("device/vif/0/state") + b"4") + frame("read", z("device/vif/0/state"))
    + frame("directory", z("/local/domain/1")) + frame("get_perms", z("device")))
put("xenstore", "transaction", b"\x03" + frame("transaction_start", b"\0") + frame("write", z("data/x") + b"1", tx=1)
    + frame("transaction_end", z("T"), tx=1) + frame("rm", z("data")))
put("xenstore", "watch-perms", b"\x10" + frame("watch", z("device", "tok")) + frame("mkdir", z("device/vbd/51712"))
    + frame("set_perms", z("device/vbd/51712", "n1", "r2")) + frame("unwatch", z("device", "tok"))
    + frame("get_domain_path", z("1")) + frame("directory_part", z("/local/domain/1", "0")) + frame("reset_watches", b""))
put("xenstore", "unknown-type", b"\x01" + struct.pack("<IIII", 999, 5, 0, 0))

# xl.cfg (xl.cfg(5)); after a line "--", xl create's KEY=VALUE overrides.
put("xlconfig", "pvh", 'name = "web"\ntype = "pvh"\nkernel = "/boot/vmlinuz"\nramdisk = "/boot/initrd.img"\n'
    'cmdline = "console=hvc0 root=/dev/xvda"\nmemory = 512\nmaxmem = 1024\nvcpus = 2\n'
    'disk = [ "/srv/web.img,raw,xvda,rw", "format=raw,vdev=xvdb,target=/srv/b.img" ]\n'
    'vif = [ "mac=00:16:3e:01:02:03,bridge=br0", "" ]\non_reboot = "restart"\non_crash = "destroy"\n'
    'uuid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"\n')
put("xlconfig", "overrides", 'kernel = "/k"\nmemory = 64\nextra = "a" "b"\n# comment\nvcpus += 1\n--\nmemory=128\nname=x\n')
put("xlconfig", "lists", 'kernel="/k"\nx = [ [ 1, "2" ], ]\ny = 0x10\nz = \'single\'\nw = "esc\\"aped\\n"\n')

# Disk and vif specifications (README: Disks, Networking; xl-disk-configuration(5)).
put("devicespecs", "disks", "/srv/guest.img,raw,xvda,rw\nformat=raw,vdev=xvda,target=/srv/guest.img\n"
    "phy:/dev/vg/x,xvda,w\n/srv/debian.iso,,hdc:cdrom,r\n/srv/x.img,raw,xvdb,devtype=cdrom,direct-io-safe,no-discard\n"
    "d0p1\nsda3\n51712")
put("devicespecs", "vifs", "\ntype=tap,vifname=tap0\nbridge=br0,mac=00:16:3e:01:02:03\ntype=none\n"
    "rate=10Mb/s@20ms,ip=10.0.0.2,mtu=9000,devid=3\n00:16:3e:aa:bb:cc\n100KB/s")
put("devicespecs", "cpus", "0-3,^1\nnodes:0-1,^node:1,5\nall,^0\n^2,0-7\n2")

# Kernels: a minimal ELF64 and ELF32 with Xen's PVH entry note
# (public/elfnote.h XEN_ELFNOTE_PHYS32_ENTRY = 18), and the ELF64 compressed.
def elf(bits):
    base, entry = 0x100000, 0x100080
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", entry)
    if bits == 64:
        ehsize, phsize = 64, 56
        off = ehsize + 2 * phsize
        size = off + len(note) + 64
        hdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack(
            "<HHIQQQIHHHHHH", 2, 62, 1, entry, ehsize, 0, 0, ehsize, phsize, 2, 64, 0, 0)
        ph = struct.pack("<IIQQQQQQ", 1, 7, 0, base, base, size, size + 0x1000, 0x1000)
        ph += struct.pack("<IIQQQQQQ", 4, 4, off, base + off, base + off, len(note), len(note), 4)
    else:
        ehsize, phsize = 52, 32
        off = ehsize + 2 * phsize
        size = off + len(note) + 64
        hdr = b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8 + struct.pack(
            "<HHIIIIIHHHHHH", 2, 3, 1, entry, ehsize, 0, 0, ehsize, phsize, 2, 40, 0, 0)
        ph = struct.pack("<IIIIIIII", 1, 0, base, base, size, size + 0x1000, 7, 0x1000)
        ph += struct.pack("<IIIIIIII", 4, off, base + off, base + off, len(note), len(note), 4, 4)
    out = hdr + ph + note
    return out + b"\x90" * (size - len(out))
put("pvhboot", "elf64", elf(64))
put("pvhboot", "elf32", elf(32))
put("pvhboot", "elf64.gz", gzip.compress(elf(64), mtime=0))
put("pvhboot", "elf64.xz", lzma.compress(elf(64)))
put("pvhboot", "elf64.bz2", bz2.compress(elf(64)))

# Hypercalls: count, then per call number (bit 7: 32-bit mode), vCPU and six
# (selector, u64) arguments; then bytes for guest memory at 0x1000.
def call(number, *args, vcpu=0):
    out = bytes([number, vcpu])
    for sel, val in (list(args) + [(0, 0)] * 6)[:6]:
        out += bytes([sel]) + struct.pack("<Q", val)
    return out
# Numbers from public/xen.h; sub-ops and buffers are left to the fuzzer.
calls = [call(18, (0, 0), (0, 1), (1, 0)),             # console_io
         call(32, (0, 6), (1, 0)),                     # event_channel_op
         call(20, (0, 6), (1, 0x100), (0, 1)),         # grant_table_op
         call(12, (0, 0), (1, 0x200)),                 # memory_op
         call(17, (0, 0), (0, 0)),                     # xen_version
         call(29, (0, 0), (0, 0)),                     # sched_op
         call(34, (0, 0), (1, 0x300)),                 # hvm_op
         call(24, (0, 0), (0, 0), (1, 0x400))]         # vcpu_op
put("hypercalls", "mixed", bytes([len(calls)]) + b"".join(calls) + bytes(0x500))
put("hypercalls", "compat", bytes([2]) + call(0x80 | 17, (0, 1), (1, 0)) + call(0x80 | 32, (0, 1), (1, 0)) + bytes(64))

# The device and ring targets read their input as a stream of choices
# (Fuzz/Sources/FuzzSupport: bytes, little-endian u16/u32/u64, "below N" as
# one byte mod N for N <= 256); past its end every choice is zero.
def le16(v): return struct.pack("<H", v)
def le32(v): return struct.pack("<I", v)

# blkif: ABI (bit 0: x86_32), flags (read-only, discard), grant rewrites,
# then requests (id byte, kind: 0 raw, 1 flush, 2 discard, 3 indirect,
# 4+ read/write with segments), the data pages, req_prod selector.
def blk_rw(write, sector, segs):
    return b"\x01" + b"\x04" + bytes([write]) + le16(sector) + bytes([len(segs)]) + b"".join(
        b"\x01" + bytes([ref]) + bytes([first, last]) for ref, first, last in segs)
for abi in (0, 1):
    put("blkif", f"rw-{abi}", bytes([abi, 0, 0, 3]) + blk_rw(1, 0, [(0, 0, 7), (1, 0, 7)]) + blk_rw(0, 8, [(2, 1, 3)])
        + b"\x02\x01\x00")
    put("blkif", f"flush-discard-indirect-{abi}", bytes([abi, 2, 0, 3]) + b"\x05\x01\x00" + b"\x06\x02" + le16(8) + le16(16) + b"\x00"
        + b"\x07\x03\x01" + b"\x00" + b"\x01" + le16(0) + le16(20) + b"\x00" * 4)
put("blkif", "grant-rewrite-overrun", bytes([0, 0, 2, 1, 1] + [0xff] * 8) + bytes([0, 0x81, 0x3f, 0x00, 1]) + b"\x01\x00\x01\x01")

# netif: features and split bits, grant rewrites, data, TX slots (selector,
# grant, offset, flags, size), req_prod selector, RX buffers (id, grant),
# frames from the host (size selector, size, seed).
def tx(ref, offset, flags, size): return b"\x01" + b"\x01" + bytes([ref]) + le16(offset) + bytes([flags]) + le16(size)
put("netif", "tx-rx", b"\x7f\x00" + b"\x00\x00" + b"\x02" + tx(0, 0, 0, 60) + tx(1, 100, 4, 200) + b"\x01"
    + b"\x04" + b"".join(bytes([i, 1, i % 8]) for i in range(4)) + b"\x01" + b"\x03" + b"\x00\x40\x07\x01" + le16(1500) + b"\x09")
put("netif", "tx-chain", b"\x7f\x00\x00\x00" + b"\x03" + tx(0, 0, 4, 3000) + tx(1, 0, 4, 2000) + tx(2, 0, 0, 1000) + b"\x01")
put("netif", "no-features-overrun", b"\x00\x00\x00\x00\x01\x00" + b"\xff" * 12 + b"\x00" + le32(0x1000))

# grants: operations (0 setup, 1 set_version, 2 raw entry, 3 map, 4 bytes,
# 5 release, 6 GNTTABOP_copy, 7 swap, 8 one-shot copy, 9 map frame,
# 10 status frames), each followed by its choices.
put("grants", "map-release", b"\x06" + b"\x02\x00\x08\x01" + le16(0x1) + b"\x00\x10" + b"\x03\x01\x08\x01" + b"\x04\x00\x00" + le16(100)
    + b"\x05\x00" + b"\x01\x02")
put("grants", "v2-copy", b"\x05" + b"\x01\x02" + b"\x0a\x00\x02" + b"\x06\x01\x01\x08\x01" + le16(0) + b"\x00\x10\x00" + le16(0) + le16(64)
    + b"\x07\x01\x08\x01\x09" + b"\x09\x01\x01\x20")
# Regression inputs libFuzzer found (each also a unit test): a v2 sub-page
# grant of length 0 maps an empty region (GrantTableTests.emptySubPage).
put("grants", "zero-length-sub-page", base64.b64decode(
    "HQIIAQABAP0A/yoqKioq6urqSFwAAOrqAerq6uoqKioqKioqKgf5AQkBAOrq6urq6upPcHRpb27qCurq6urq6urq6urq6ghyAerqAATqAOoB6iMBAerq6upIXERpY+oB6urq6urq6urq6urq6uoBBABkRG91AdI="))
# A failed GNTTABOP_copy pinned and released a grant whose table frame an
# earlier operation had placed at a low frame (XENMAPSPACE_grant_table): its
# flags changed there, which the harness's check did not yet allow (fuzz10m,
# 7.8 million executions in; the harness, not GrantTable, was wrong).
put("grants", "failed-copy-placed-frame", base64.b64decode(
    "Pd3q6uoAmgFEAdLSX+8BAZoBymREb3UB0gEBAeoEb3UB0m910gD/DwACAAD/CPIq6gEAADoPAAIAAP8IKioqAAAYAAAAAP0BAwD/"
    "KinWHQIo/SkpKSkBAZrq6oIFAN11AdIBAQGaFgABAAA6DwACAAD/CCoqKgAAGAAAAAD9AQMA/yop1h0CKP0pKSkpAQGa6uqCBQDd"
    "dQHSAQEBmhYAAeo96OoBAAD/DwACAED/CPIq6gEA0gFvLQHSAQEB6m8pKSkpKQ4AKSkpKSkpKSkpKSlpKSkpKSkrKSkpMikpKSkp"
    "KSkpKSkpKSkpYP8pKSkBKSkpKSkpKSkp0CkyKSkpKSkpZOpkRG91AdIBAQHqACkpKWD/KSkpASkpKSkpKSkpKdApMikpKSndddIp"
    "KSkpKSkpKS0pKSkpKSkpKSkpKSkXF/+BAQFkROrddQHSAQEBmgHd3Q=="))

# byterings: layout (bit 0: XenStore) and limits, then operations (0 index
# word, 1 data, 2 consume, 3 produce, 4 host input, 5 console pump,
# 6 host output written).
put("byterings", "console", b"\x22" + b"\x06" + b"\x00\x00\x01" + le32(5) + b"\x01" + le16(5) + b"\x00" + b"hello" + b"\x02" + le16(100)
    + b"\x04\x05abcde" + b"\x05" + b"\x03\x03\x00xyz")
put("byterings", "xenstore-wrap", b"\x01" + b"\x04" + b"\x00\x00\x00" + le32(0xfffffffe) + b"\x00\x00\x01" + le32(2) + b"\x02" + le16(10)
    + b"\x00\x00\x03" + le32(0xffffffff))
put("byterings", "overrun", b"\x00" + b"\x02" + b"\x00\x00\x01" + le32(0x10000) + b"\x02" + le16(50))

# apijson: byte 0 selects the model (0 create request, 1 any JSON, 2 memory,
# 3 vCPUs, 4 attach, 5 error, 6 domain, 7 XenStore node, 8 stats), then the
# body as a client sends it (docs/api/openapi.json, PVHAPITests' bodies).
put("apijson", "create-xl", b"\x00" + b'{"xl_config": "type = \\"pvh\\"\\nname = \\"web\\"\\nkernel = \\"/k\\"\\nmemory = 64\\n", "source": "web.cfg", "overrides": ["vcpus=2"]}')
put("apijson", "create-json", b"\x00" + b'{"config": {"name": "db", "kernel": "/k", "memory": 128, "on_crash": "preserve", "vif": [""], "pci": [["a", 1]]}, "paused": true}')
put("apijson", "create-bad", b"\x00" + b'{"xl_config": "name = \\"a\\"\\nkernel = = 3\\n", "source": "bad.cfg", "config": {"Name": 1.5}}')
put("apijson", "json", b"\x01" + b'{"a": [1, -2.5, 1e300, true, null, "\\u00e9\\n"], "b": {"c": {}}}')
put("apijson", "memory", b"\x02" + b'{"target_kib": 65536, "max_kib": 131072}')
put("apijson", "vcpus", b"\x03" + b'{"online": 2}')
put("apijson", "attach", b"\x04" + b'{"spec": "/srv/guest.img,raw,xvdb,rw"}')
put("apijson", "error", b"\x05" + b'{"code": "unavailable", "message": "m", "accepted": 3, "file": "f", "line": 2, "key": "k"}')
put("apijson", "domain", b"\x06" + b'{"name": "web", "domid": 1, "uuid": "u", "state": "running", "flags": "r-----", "memory_mib": 64, "vcpus": 1, "cpu_time": 1.5, "start_time": 100, "restarts": 0, "config": {"name": "web"}, "console": "/run/c"}')
put("apijson", "xenstore-node", b"\x07" + b'{"path": "/local/domain/1", "value": null, "children": ["name"]}')
put("apijson", "stats", b"\x08" + b'{"name": "web", "domid": 1, "state": "running", "cpu_seconds": 0.5, "memory_kib": 1, "max_memory_kib": 2, "vcpus": 1, "nets": 0, "net_tx_bytes": 0, "net_rx_bytes": 0, "vbds": 0, "vbd_reads": 0, "vbd_writes": 0, "vbd_bytes_read": 0, "vbd_bytes_written": 0, "metrics": true}')
