#!/usr/bin/env bash
# qedimg check agrees with qemu-img check on crafted images: same findings in the same JSON keys
# (qedimg adds image-end-offset), the same human text (qedimg adds "Image end offset: N"), the
# same exit codes (0 clean, 2 corruptions left, 3 only leaks left, 1 cannot check, 63 raw), and
# the same repairs with -r. Where QEMU's leak arithmetic is wrong (quirk Q4) qedimg reports the
# correct count; that difference is tested explicitly.
source "$(dirname "$0")/qedimg_lib.sh"

# compare IMAGE WANT_RC [CHECK-OPTIONS...]: runs both tools on copies of IMAGE and compares.
compare() {
  local img=$1 want=$2 rc=0
  shift 2
  cp "$img" q.qed
  cp "$img" o.qed
  qemu-img check --output=json "$@" q.qed >theirs.json 2>/dev/null || rc=$?
  [ "$rc" = "$want" ] || fail "qemu-img check $* $img exited with $rc, expected $want"
  expect_rc "$want" "$QEDIMG" check --output=json "$@" o.qed
  sed 's/"o.qed"/"q.qed"/' out.txt >ours.json
  json_agree ours.json theirs.json image-end-offset || fail "check --output=json $* $img"
  cmp q.qed o.qed || fail "check $* $img: the two tools left different files"
  # Human text, on fresh copies (a repair changes the file).
  cp "$img" q.qed
  cp "$img" o.qed
  qemu-img check "$@" q.qed >theirs.txt 2>/dev/null || true
  expect_rc "$want" "$QEDIMG" check "$@" o.qed
  grep -v '^Image end offset: ' out.txt >ours.txt
  diff theirs.txt ours.txt || fail "human check $* $img differs from qemu-img's"
  grep -q "^Image end offset: $(( $(stat -c %s o.qed) / cluster * cluster ))\$" out.txt ||
    fail "Image end offset missing or wrong: $(cat out.txt)"
}

cluster=65536
# Layout of a default image after one 64 KiB write at 0: L1 at 0x10000, data at 0x50000,
# L2 table at 0x60000-0x9ffff.
L1=0x10000
L2=0x60000

log "clean images"
qemu-img create -q -f qed clean.qed 1G
compare clean.qed 0
qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 1M 64k' -c 'write -z 2M 128k' clean.qed >/dev/null
compare clean.qed 0
compare clean.qed 0 -r all

log "leak: a cluster appended to the file"
cp clean.qed leak.qed
truncate -s +64K leak.qed
compare leak.qed 3
compare leak.qed 3 -r all  # leaks are never repaired, as in QEMU
compare leak.qed 3 -r leaks

qemu-img create -q -f qed one.qed 1G
qemu-io -c 'write -P 1 0 64k' one.qed >/dev/null

log "L2 entry past the end of the file: fixable corruption"
cp one.qed l2eof.qed
poke_u64 l2eof.qed $((L2 + 8)) 0x1000000
compare l2eof.qed 2
compare l2eof.qed 0 -r all
cp l2eof.qed fixed.qed
expect_rc 0 "$QEDIMG" check -q -r all fixed.qed
[ "$(peek_u64 fixed.qed $((L2 + 8)))" = 0 ] || fail "repair should clear the bad entry"
expect_rc 0 qemu-img check fixed.qed

log "misaligned L2 entry"
cp one.qed l2mis.qed
poke_u64 l2mis.qed $((L2 + 16)) 0x50001
compare l2mis.qed 2
compare l2mis.qed 0 -r leaks

log "two L2 entries for one cluster: not fixable"
cp one.qed dup.qed
poke_u64 dup.qed $((L2 + 8)) 0x50000
compare dup.qed 2
compare dup.qed 2 -r all

log "L2 entry pointing into the L1 table"
cp one.qed intol1.qed
poke_u64 intol1.qed $((L2 + 8)) $L1
compare intol1.qed 2

log "L1 entry past the end of the file"
cp one.qed l1eof.qed
poke_u64 l1eof.qed $((L1 + 8)) 0x40000000
compare l1eof.qed 2
compare l1eof.qed 0 -r all

log "L1 entry pointing at a live L2 table's clusters twice"
cp one.qed l1dup.qed
poke_u64 l1dup.qed $((L1 + 8)) $L2
compare l1dup.qed 2

log "quiet mode reports through the exit code only"
expect_rc 2 "$QEDIMG" check -q dup.qed
[ ! -s out.txt ] || fail "-q printed: $(cat out.txt)"

log "need-check flag: check leaves it, check -r clears it on a clean image"
qemu-img create -q -f qed dirty.qed 64M
{ qemu-io -c 'write -P 3 0 128k' -c abort dirty.qed >/dev/null || true; } 2>/dev/null
[ "$(xxd -s 16 -l 1 -p dirty.qed)" = 02 ] || fail "qemu-io abort should leave NEED_CHECK set"
expect_rc 0 "$QEDIMG" check dirty.qed
[ "$(xxd -s 16 -l 1 -p dirty.qed)" = 02 ] || fail "check without -r must not touch the image"
cp dirty.qed dirty2.qed
expect_rc 0 "$QEDIMG" check -r all dirty.qed
[ "$(xxd -s 16 -l 1 -p dirty.qed)" = 00 ] || fail "check -r all should clear NEED_CHECK"
qemu-img check -q -r all dirty2.qed
cmp dirty.qed dirty2.qed || fail "check -r all of a dirty image differs from qemu-img's"

log "QEMU quirk Q4: false leaks on large files with small clusters"
qemu-img create -q -f qed -o cluster_size=4k q4.qed 1G
qemu-io -c 'write -P 9 0 40M' q4.qed >/dev/null
rc=0
qemu-img check --output=json q4.qed >theirs.json || rc=$?
[ "$rc" = 3 ] || fail "qemu-img 7.2 should report false leaks here (rc $rc)"
expect_rc 0 "$QEDIMG" check --output=json q4.qed
cp out.txt ours.json
python3 - <<'PY'
import json
o, t = json.load(open("ours.json")), json.load(open("theirs.json"))
assert "leaks" not in o and t["leaks"] > 0, (o, t)
for k in t:
    if k != "leaks":
        assert o[k] == t[k], (k, o[k], t[k])
PY

log "cannot check"
qemu-img create -q -f raw disk.raw 1M
expect_rc 63 "$QEDIMG" check disk.raw
grep -q "does not support checks" err.txt || fail "raw: $(cat err.txt)"
expect_rc 1 "$QEDIMG" check missing.qed
expect_rc 1 "$QEDIMG" check -r bogus clean.qed
expect_rc 1 "$QEDIMG" check --output=xml clean.qed
cp clean.qed badfeat.qed
printf '\x08' | dd of=badfeat.qed bs=1 seek=16 conv=notrunc status=none
expect_rc 1 "$QEDIMG" check badfeat.qed
echo PASS
