#!/usr/bin/env bash
# qedimg convert round-trips raw -> qed -> raw byte for byte, keeps zero ranges unallocated
# (unallocated clusters in QED, holes in raw, as qemu-img map and SEEK_HOLE show), flattens
# backing chains like qemu-img convert, and produces images qemu-img checks clean. Targets that
# already hold data (an existing file, re-created or with -n written into) end up holding exactly
# the source. Block devices and mounted disks as targets: qedimg_target_test.sh (needs root).
source "$(dirname "$0")/qedimg_lib.sh"

# is_hole FILE OFFSET LENGTH: true if [OFFSET, OFFSET+LENGTH) of FILE has no data (SEEK_DATA).
is_hole() {
  python3 -c 'import os,sys
fd=os.open(sys.argv[1],os.O_RDONLY); off=int(sys.argv[2],0); end=off+int(sys.argv[3],0)
try: d=os.lseek(fd,off,os.SEEK_DATA)
except OSError: d=os.fstat(fd).st_size
sys.exit(0 if d>=end else 1)' "$@"
}

# unallocated IMAGE OFFSET LENGTH: qemu-img map shows the range as not present (QED).
unallocated() {
  qemu-img map --output=json "$1" | python3 -c 'import json,sys
off, end = int(sys.argv[1],0), int(sys.argv[1],0) + int(sys.argv[2],0)
for e in json.load(sys.stdin):
    s, l = e["start"], e["length"]
    if s < end and s + l > off and (e["present"] or e["data"]):
        sys.exit(f"range {s}+{l} overlapping {off}+{end-off} is allocated: {e}")' "$2" "$3"
}

log "source: 64 MiB raw with data, explicit zeros and holes"
truncate -s 64M src.raw
head -c 192k /dev/urandom | dd of=src.raw bs=64k seek=1 conv=notrunc status=none
head -c 5M /dev/urandom | dd of=src.raw bs=1M seek=20 conv=notrunc status=none
head -c 4k /dev/urandom | dd of=src.raw bs=4k seek=4000 conv=notrunc status=none
head -c 100 /dev/urandom | dd of=src.raw bs=1 seek=$((50 * 1048576 + 7)) conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=1M count=2 seek=40 conv=notrunc status=none  # written zeros

log "raw -> qed"
expect_rc 0 "$QEDIMG" convert -O qed src.raw out.qed
expect_rc 0 qemu-img check out.qed
qemu-img compare -f raw -F qed src.raw out.qed >/dev/null || fail "raw -> qed content differs"
M=1048576
unallocated out.qed 0 65536
unallocated out.qed $((256 * 1024)) $((15 * M))
unallocated out.qed $((40 * M)) $((2 * M))  # zeros written in the source stay unallocated
unallocated out.qed $((26 * M)) $((24 * M))
# Only clusters holding data were allocated: 3 + 80 + 1 + 1 clusters of 64 KiB.
qemu-img check --output=json out.qed | python3 -c 'import json,sys
d=json.load(sys.stdin); assert d["allocated-clusters"] == 85, d'

log "qed -> raw is byte-identical and sparse"
expect_rc 0 "$QEDIMG" convert -O raw out.qed back.raw
cmp src.raw back.raw || fail "raw -> qed -> raw is not byte-identical"
[ "$(stat -c %s back.raw)" = 67108864 ] || fail "raw output has the wrong size"
is_hole back.raw 0 65536 || fail "hole at 0 was filled"
is_hole back.raw $((40 * M)) $((2 * M)) || fail "zero run at 40M was written"
is_hole back.raw $((30 * M)) $((20 * M)) || fail "hole at 30M was filled"
used_kb=$(du -k back.raw | cut -f1)
[ "$used_kb" -lt 8192 ] || fail "raw output uses ${used_kb} KiB, expected holes"
qemu-img map --output=json back.raw | python3 -c 'import json,sys
z=[e for e in json.load(sys.stdin) if e["zero"] and not e["data"]]
assert any(e["start"] <= 40<<20 and e["start"]+e["length"] >= 42<<20 for e in z), z'

log "geometry options and progress"
expect_rc 0 "$QEDIMG" convert -p -O qed -o cluster_size=4k,table_size=8 src.raw small.qed
grep -q "100.00/100%" out.txt || fail "-p printed no progress: $(cat out.txt)"
qemu-img info --output=json small.qed | grep -q '"cluster-size": 4096' || fail "cluster size"
expect_rc 0 qemu-img check small.qed
qemu-img compare -f raw -F qed src.raw small.qed >/dev/null || fail "4k clusters differ"
expect_rc 0 "$QEDIMG" convert -q -O raw small.qed back2.raw
cmp src.raw back2.raw || fail "4k round trip"

log "qed -> qed and backing chains are flattened like qemu-img convert"
qemu-img create -q -f raw base.raw 2M
qemu-io -f raw -c 'write -P 0x55 0 1M' base.raw >/dev/null
qemu-img create -q -f qed -b base.raw -F raw ov.qed 4M
qemu-io -c 'write -P 1 64k 4k' -c 'write -z 512k 64k' -c 'write -P 2 3M 64k' ov.qed >/dev/null
expect_rc 0 "$QEDIMG" convert -O qed ov.qed flat.qed
qemu-img convert -O qed ov.qed ref.qed
qemu-img compare flat.qed ref.qed >/dev/null || fail "flattened QED differs from qemu-img's"
qemu-img info --output=json flat.qed | grep -q backing && fail "flattened image has a backing file"
expect_rc 0 "$QEDIMG" convert -O raw ov.qed flat.raw
qemu-img convert -O raw ov.qed ref.raw
cmp flat.raw ref.raw || fail "qed+backing -> raw differs from qemu-img convert"
expect_rc 0 qemu-img check flat.qed

log "huge sparse image: long zero runs are skipped, data in between and at the end is kept"
qemu-img create -q -f qed sparse.qed 1T
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 500G 3M' -c 'write -P 3 1023G 1M' \
  -c 'write -P 4 1073741823k 1k' sparse.qed >/dev/null
expect_rc 0 "$QEDIMG" convert -O qed sparse.qed sparse2.qed
qemu-img compare sparse.qed sparse2.qed >/dev/null || fail "sparse qed -> qed differs"
expect_rc 0 qemu-img check sparse2.qed
expect_rc 0 "$QEDIMG" convert -O raw sparse2.qed sparse.raw
qemu-img compare -f qed -F raw sparse.qed sparse.raw >/dev/null || fail "sparse qed -> raw differs"
[ "$(du -k sparse.raw | cut -f1)" -lt 16384 ] || fail "sparse raw output is not sparse"
rm -f sparse.raw

log "odd source size (not a multiple of 512) and a zero-length source"
head -c 1000001 /dev/urandom >odd.raw
expect_rc 0 "$QEDIMG" convert -O qed odd.raw odd.qed
expect_rc 0 "$QEDIMG" convert -O raw odd.qed odd2.raw
cmp -n 1000001 odd.raw odd2.raw || fail "odd size round trip"
: >zero.raw
expect_rc 0 "$QEDIMG" convert -O qed zero.raw zero.qed
expect_rc 0 qemu-img check zero.qed

log "existing raw target holding data, without -n: re-created (emptied, sparse), exact copy"
head -c 64M /dev/urandom >filled.raw
expect_rc 0 "$QEDIMG" convert -O raw out.qed filled.raw
cmp src.raw filled.raw || fail "re-created target differs from the source"
is_hole filled.raw $((30 * M)) $((20 * M)) || fail "re-created target is not sparse"

log "existing raw target holding data, with -n: written into, zero ranges zeroed"
head -c 64M /dev/urandom >filled.raw
ino=$(stat -c %i filled.raw)
expect_rc 0 "$QEDIMG" convert -n -O raw out.qed filled.raw
cmp src.raw filled.raw || fail "-n left old bytes in the target"
[ "$(stat -c %i filled.raw)" = "$ino" ] || fail "-n replaced the target file"
is_hole filled.raw $((30 * M)) $((20 * M)) || fail "-n did not punch the zero range"
qemu-img compare -f raw -F raw src.raw filled.raw >/dev/null || fail "qemu-img compare -n target"
log "a bigger -n target keeps its bytes past the image's end"
head -c 80M /dev/urandom >big.raw
tail -c 16M big.raw >big.tail
expect_rc 0 "$QEDIMG" convert -n -O raw out.qed big.raw
cmp -n 67108864 src.raw big.raw || fail "-n onto a bigger target"
tail -c 16M big.raw | cmp - big.tail || fail "-n wrote past the image's end"
log "a data granule with zeros inside a chunk of data (raw 4 KiB granules)"
python3 -c 'import sys; sys.stdout.buffer.write((b"\x11" * 4096 + b"\0" * 4096) * 512)' >mixed.raw
head -c 4M /dev/urandom >mixed-dst.raw
expect_rc 0 "$QEDIMG" convert -n -f raw -O raw mixed.raw mixed-dst.raw
cmp mixed.raw mixed-dst.raw || fail "zero granules between data granules kept old bytes"

log "-n onto an existing QED image with a backing file: zero ranges read as zeros"
qemu-img create -q -f raw nbase.raw 64M
qemu-io -f raw -c 'write -P 0x77 0 64M' nbase.raw >/dev/null
qemu-img create -q -f qed -b nbase.raw -F raw ntop.qed 64M
expect_rc 0 "$QEDIMG" convert -n -O qed out.qed ntop.qed
qemu-img compare -f qed -F qed out.qed ntop.qed >/dev/null || fail "-n onto a QED overlay differs"
expect_rc 0 qemu-img check ntop.qed

log "--target-is-zero trusts the target (only with -n)"
truncate -s 64M zeroed.raw
expect_rc 0 "$QEDIMG" convert -n --target-is-zero -O raw out.qed zeroed.raw
cmp src.raw zeroed.raw || fail "--target-is-zero onto a zero target"
expect_rc 1 "$QEDIMG" convert --target-is-zero -O raw out.qed zeroed.raw
grep -qx "qedimg: --target-is-zero requires use of -n flag" err.txt || fail "$(cat err.txt)"

log "-n errors: target smaller than the source, missing, -o given"
head -c 1M /dev/urandom >small.raw
cp small.raw small.orig
expect_rc 1 "$QEDIMG" convert -n -O raw out.qed small.raw
grep -q "^qedimg: output file is smaller than input file" err.txt || fail "$(cat err.txt)"
cmp small.raw small.orig || fail "a refused -n convert changed the target"
expect_rc 1 "$QEDIMG" convert -n -O raw out.qed missing.raw
grep -q "Could not open 'missing.raw'" err.txt || fail "$(cat err.txt)"
[ ! -e missing.raw ] || fail "-n created the target"
expect_rc 1 "$QEDIMG" convert -n -O qed -o cluster_size=4k out.qed small.raw
grep -qx "qedimg: -o has no effect when skipping image creation" err.txt || fail "$(cat err.txt)"
expect_rc 1 "$QEDIMG" convert -n -O qed out.qed small.raw  # not a QED image
cmp small.raw small.orig || fail "a refused -n -O qed convert changed the target"

log "a target another process has open is not destroyed (as qemu-img refuses it)"
qemu-img create -q -f qed busy.qed 64M
qemu-io -c 'write -P 5 0 1M' busy.qed >/dev/null
cp busy.qed busy.orig
hold_image busy.qed
expect_rc 1 "$QEDIMG" convert -O raw out.qed busy.qed
grep -q "busy.qed: error while converting raw: .*locked" err.txt || fail "$(cat err.txt)"
grep -q "stop that process or unmount it" err.txt || fail "no advice: $(cat err.txt)"
expect_rc 1 "$QEDIMG" convert -O qed out.qed busy.qed
expect_rc 1 "$QEDIMG" create busy.qed 64M
cmp busy.qed busy.orig || fail "a busy target was changed"
log "-U reads a source another process has open"
expect_rc 1 "$QEDIMG" convert -O raw busy.qed busy.raw
grep -q "Use -U" err.txt || fail "no -U advice: $(cat err.txt)"
expect_rc 0 "$QEDIMG" convert -U -O raw busy.qed busy.raw
qemu-img compare -U -f qed -F raw busy.qed busy.raw >/dev/null || fail "-U copy differs"
release_image

log "errors"
expect_rc 1 "$QEDIMG" convert -O qcow2 src.raw x.img
expect_rc 1 "$QEDIMG" convert -O raw -o cluster_size=4k src.raw x.raw
expect_rc 1 "$QEDIMG" convert -O qed missing.raw x.qed
expect_rc 1 "$QEDIMG" convert -O qed src.raw src.raw
grep -q "same file" err.txt || fail "same file: $(cat err.txt)"
expect_rc 1 "$QEDIMG" convert src.raw
mkdir adir
expect_rc 1 "$QEDIMG" convert -O raw src.raw adir
grep -qx "qedimg: adir: error while converting raw: Could not create 'adir': Is a directory" err.txt ||
  fail "$(cat err.txt)"
echo PASS
