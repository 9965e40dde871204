#!/usr/bin/env bash
# Regenerates the seed corpora of the fuzz targets in tests/fuzz/corpus/<target>/:
#  - valid images made by qemu-img create (several cluster/table sizes, backing files named
#    base.raw and base.qed, which qed_open_fuzz provides next to the image) with data, zero
#    clusters and discards written by qemu-io;
#  - malformed images derived from them (the kinds of qed_hostile_test.cc: bad magic, sizes and
#    offsets, table entries that are misaligned, past the end, inside the header or the tables,
#    aliased clusters, dirty images, truncations, backing name problems).
# Seeds are kept small (4 KiB clusters, table_size 1-4, a few MiB of virtual size).
# Files named regress-* (inputs that once found a bug) are never touched.
# Usage: tests/fuzz/make_corpus.sh [corpus-dir]   (default: tests/fuzz/corpus next to this)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/corpus}
open_dir=$out/qed_open_fuzz
header_dir=$out/qed_header_fuzz
ops_dir=$out/qed_ops_fuzz
mkdir -p "$open_dir" "$header_dir" "$ops_dir"
find "$open_dir" "$header_dir" "$ops_dir" -type f ! -name 'regress-*' -delete

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

qio() { qemu-io -f qed "$@" >/dev/null; }

# Backing files with the names qed_open_fuzz creates (contents need not match).
python3 -c 'import sys; sys.stdout.buffer.write(bytes(i * 7 & 255 for i in range(262144)))' >base.raw
# (table_size 2: QEMU refuses to open table_size 1 images, quirk Q1 of the spec)
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 base.qed 1M

# ---- valid images ----
qemu-img create -q -f qed -o cluster_size=4096,table_size=1 empty-c4k-t1.qed 1M
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 empty-c4k-t2.qed 4M
qemu-img create -q -f qed -o cluster_size=8192,table_size=1 empty-c8k-t1.qed 2M
qemu-img create -q -f qed -o cluster_size=4096,table_size=4 empty-c4k-t4.qed 8M

qemu-img create -q -f qed -o cluster_size=4096,table_size=2 data-c4k-t2.qed 4M
qio -c 'write -P 0x11 0 4k' -c 'write -P 0x22 8k 6k' -c 'write -z 20k 4k' \
  -c 'write -P 0x33 2M 512' data-c4k-t2.qed

qemu-img create -q -f qed -o cluster_size=4096,table_size=1 data-c4k-t1.qed 2M

qemu-img create -q -f qed -o cluster_size=4096,table_size=2 discard-c4k-t2.qed 1M
qio -c 'write -P 0x66 0 12k' -c 'discard 4k 4k' -c 'write -z 8k 4k' discard-c4k-t2.qed

qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b base.raw -F raw \
  backing-raw.qed 256K
qio -c 'write -P 0x77 4k 4k' backing-raw.qed

qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b base.qed -F qed \
  backing-qed.qed 1M
qio -c 'write -P 0x88 0 2k' -c 'write -z 64k 4k' backing-qed.qed

# A backing file whose format is probed (no "raw" feature bit): qemu-img insists on -F, so the
# bit is cleared below.
qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b base.qed -F qed \
  backing-probe.qed 512K

# A grown image (image size larger than at creation).
cp data-c4k-t2.qed grown.qed
qemu-img resize -q -f qed grown.qed 6M

# ---- malformed images, patched field by field ----
python3 - <<'PY'
import struct

def load(name):
    return bytearray(open(name, 'rb').read())

def save(name, b):
    open(name, 'wb').write(bytes(b))

def hdr(b):
    f = struct.unpack_from('<IIIIQQQQQII', b, 0)
    keys = ('magic cs ts hs features compat autoclear l1 size bfo bfs').split()
    return dict(zip(keys, f))

def put(b, field, v):
    offs = {'magic': (0, 'I'), 'cs': (4, 'I'), 'ts': (8, 'I'), 'hs': (12, 'I'),
            'features': (16, 'Q'), 'compat': (24, 'Q'), 'autoclear': (32, 'Q'), 'l1': (40, 'Q'),
            'size': (48, 'Q'), 'bfo': (56, 'I'), 'bfs': (60, 'I')}
    o, t = offs[field]
    struct.pack_into('<' + t, b, o, v)

def entry(b, table, i):
    return struct.unpack_from('<Q', b, table + 8 * i)[0]

def set_entry(b, table, i, v):
    struct.pack_into('<Q', b, table + 8 * i, v)

# table_size 1 with data (QEMU cannot open it, so the tables are written here): L2 at cluster 2,
# data clusters 3 (guest 4 KiB, 0x44) and 4 (guest 1 MiB, 0x55) and a zero cluster at 8 KiB.
t1 = load('data-c4k-t1.qed')
assert len(t1) == 8192 and hdr(t1)['l1'] == 4096
t1.extend(bytes(4096) + b'\x44' * 4096 + b'\x55' * 4096)
set_entry(t1, 4096, 0, 8192)
set_entry(t1, 8192, 1, 12288)
set_entry(t1, 8192, 2, 1)
set_entry(t1, 8192, 256, 16384)
save('data-c4k-t1.qed', t1)

# The malformed variants start from a 16 KiB table_size-1 image: header, L1, L2, one data
# cluster (guest 4 KiB) and a zero cluster entry (guest 8 KiB).
base = bytearray(t1[:16384])
set_entry(base, 8192, 256, 0)
h = hdr(base)
l1 = h['l1']
l2 = entry(base, l1, 0)
assert l2 != 0
d0 = entry(base, l2, 1)

def variant(name, fn, src=base):
    b = bytearray(src)
    fn(b)
    save(name, b)

variant('bad-magic.qed', lambda b: put(b, 'magic', 0x00444552))
variant('bad-cluster-size.qed', lambda b: put(b, 'cs', 12288))
variant('cluster-size-2k.qed', lambda b: put(b, 'cs', 2048))
variant('bad-table-size.qed', lambda b: put(b, 'ts', 3))
variant('table-size-32.qed', lambda b: put(b, 'ts', 32))
variant('unknown-feature.qed', lambda b: put(b, 'features', 0x08))
variant('compat-autoclear-bits.qed', lambda b: (put(b, 'compat', 0xf0), put(b, 'autoclear', 3)))
variant('size-unaligned.qed', lambda b: put(b, 'size', (2 << 20) + 100))
variant('size-not-cluster-multiple.qed', lambda b: put(b, 'size', (1 << 20) + 1536))
variant('size-huge.qed', lambda b: put(b, 'size', (1 << 64) - 512))
variant('size-max.qed', lambda b: put(b, 'size', 512 * 512 * 4096))
variant('size-over-max.qed', lambda b: put(b, 'size', 512 * 512 * 4096 + 512))
variant('size-zero.qed', lambda b: put(b, 'size', 0))
variant('l1-past-eof.qed', lambda b: put(b, 'l1', len(b)))
variant('l1-misaligned.qed', lambda b: put(b, 'l1', l1 + 8))
variant('l1-in-header.qed', lambda b: put(b, 'l1', 0))
variant('l1-wraps.qed', lambda b: put(b, 'l1', (1 << 64) - 4096))
variant('header-size-2.qed', lambda b: put(b, 'hs', 2))
variant('header-size-huge.qed', lambda b: put(b, 'hs', 0x100000))
variant('header-size-zero.qed', lambda b: put(b, 'hs', 0))
variant('l1-entry-one.qed', lambda b: set_entry(b, l1, 0, 1))
variant('l1-entry-misaligned.qed', lambda b: set_entry(b, l1, 0, l2 + 512))
variant('l1-entry-past-eof.qed', lambda b: set_entry(b, l1, 0, 1 << 30))
variant('l1-entry-is-l1.qed', lambda b: set_entry(b, l1, 0, l1))
variant('l1-entry-in-header.qed', lambda b: set_entry(b, l1, 1, 0))
variant('l1-entry-huge.qed', lambda b: set_entry(b, l1, 0, (1 << 64) - 4096))
variant('l2-entry-misaligned.qed', lambda b: set_entry(b, l2, 1, d0 + 8))
variant('l2-entry-past-eof.qed', lambda b: set_entry(b, l2, 1, 1 << 30))
variant('l2-entry-huge.qed', lambda b: set_entry(b, l2, 1, (1 << 64) - 4096))
variant('l2-entry-in-header.qed', lambda b: (put(b, 'hs', 2), set_entry(b, l2, 0, 4096)))
variant('l2-entry-points-at-l1.qed', lambda b: set_entry(b, l2, 0, l1))
variant('l2-entry-points-at-l2.qed', lambda b: set_entry(b, l2, 0, l2))
variant('aliased-clusters.qed', lambda b: [set_entry(b, l2, i, d0) for i in range(3, 9)])
variant('l1-entries-share-l2.qed', lambda b: [set_entry(b, l1, i, l2) for i in range(0, 8)])
variant('dirty.qed', lambda b: put(b, 'features', h['features'] | 2))
variant('dirty-corrupt.qed', lambda b: (put(b, 'features', h['features'] | 2),
                                        set_entry(b, l2, 1, d0 + 100),
                                        set_entry(b, l1, 3, 1 << 40)))
variant('dirty-aliased.qed', lambda b: (put(b, 'features', h['features'] | 2),
                                        set_entry(b, l2, 5, d0), set_entry(b, l1, 1, l2)))
variant('dirty-trailing-leak.qed', lambda b: (put(b, 'features', h['features'] | 2),
                                              b.extend(b'\x5a' * 8192)))
variant('trailing-partial-cluster.qed', lambda b: b.extend(b'\xee' * 1000))
variant('truncated-in-l1.qed', lambda b: b.__delitem__(slice(l1 + 2048, None)))
variant('truncated-in-l2.qed', lambda b: b.__delitem__(slice(l2 + 512, None)))
variant('truncated-in-data.qed', lambda b: b.__delitem__(slice(d0 + 1000, None)))
variant('truncated-header.qed', lambda b: b.__delitem__(slice(64, None)))
variant('truncated-40.qed', lambda b: b.__delitem__(slice(40, None)))

def backing(b, name, feats):
    put(b, 'features', feats)
    put(b, 'bfo', 64)
    put(b, 'bfs', len(name))
    b[64:64 + len(name)] = name

variant('backing-self-loop.qed', lambda b: backing(b, b'img.qed', 1))
variant('backing-missing.qed', lambda b: backing(b, b'missing.raw', 5))
variant('backing-dot.qed', lambda b: backing(b, b'.', 1))
variant('backing-name-nul.qed', lambda b: backing(b, b'base.raw\0zz', 5))
variant('backing-name-out-of-bounds.qed', lambda b: (backing(b, b'base.raw', 1),
                                                     put(b, 'bfo', 4000), put(b, 'bfs', 200)))
variant('backing-name-wraps.qed', lambda b: (backing(b, b'base.raw', 1),
                                             put(b, 'bfo', 0xffffff00), put(b, 'bfs', 0x200)))
variant('backing-name-long.qed', lambda b: (backing(b, b'base.raw', 1), put(b, 'bfs', 4096)))
variant('backing-size-zero.qed', lambda b: (backing(b, b'base.raw', 1), put(b, 'bfs', 0)))

variant('backing-probe.qed', lambda b: put(b, 'features', hdr(b)['features'] & ~4),
        src=load('backing-probe.qed'))
variant('backing-probe-raw.qed', lambda b: backing(b, b'base.raw', 1))

# A chain: backing-qed.qed names base.qed; make the overlay dirty with a bad entry too.
bq = load('backing-qed.qed')
hq = hdr(bq)
variant('backing-qed-dirty.qed', lambda b: (put(b, 'features', hq['features'] | 2),
                                            set_entry(b, hq['l1'], 2, 12345)), src=bq)
PY

# qed_open_fuzz: every image; qed_header_fuzz: the first 1 KiB plus 16 tail bytes of each.
for f in *.qed; do
  [[ $f == base.qed ]] && continue
  cp "$f" "$open_dir/$f"
  head -c 1024 "$f" >"$header_dir/$f"
  head -c 16 /dev/zero >>"$header_dir/$f"
done
# qed_ops_fuzz: operation programs (any bytes are a program); a few pseudo-random ones.
python3 - "$ops_dir" <<'PY'
import os, random, sys
rng = random.Random(7)
for i in range(12):
    n = rng.choice([64, 128, 256, 512, 1024])
    with open(os.path.join(sys.argv[1], f"program-{i:02d}"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(n)))
PY

echo "make_corpus.sh: $(ls "$open_dir" | wc -l) seeds in $open_dir," \
  "$(ls "$header_dir" | wc -l) in $header_dir ($(du -sk "$out" | cut -f1) KiB)"
