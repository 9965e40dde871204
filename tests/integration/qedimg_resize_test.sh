#!/usr/bin/env bash
# qedimg resize grows images (qemu-img sees the new size, data is kept, check stays clean) and
# refuses to shrink them, leaving the file untouched.
source "$(dirname "$0")/qedimg_lib.sh"

vsize() {
  qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

qemu-img create -q -f qed img.qed 1G
qemu-io -c 'write -P 0x5a 1020M 4M' img.qed >/dev/null

log "grow to an absolute size and by a relative amount"
expect_rc 0 "$QEDIMG" resize img.qed 2G
grep -q "Image resized." out.txt || fail "no confirmation: $(cat out.txt)"
[ "$(vsize img.qed)" = 2147483648 ] || fail "size after resize 2G: $(vsize img.qed)"
expect_rc 0 "$QEDIMG" resize img.qed +512M
[ "$(vsize img.qed)" = 2684354560 ] || fail "size after +512M: $(vsize img.qed)"
expect_rc 0 qemu-img check img.qed
qemu-io -r -c 'read -P 0x5a 1020M 4M' -c 'read -P 0 2G 512M' img.qed >/dev/null ||
  fail "data changed or new space not zero"
# Writing into the new space works for QEMU too.
qemu-io -c 'write -P 0x77 2500M 1M' img.qed >/dev/null
expect_rc 0 qemu-img check img.qed
# Same size is a no-op.
expect_rc 0 "$QEDIMG" resize img.qed 2684354560

log "shrinking is refused and changes nothing"
sum=$(md5sum <img.qed)
expect_rc 1 "$QEDIMG" resize img.qed 1G
grep -q "Shrinking images is currently not supported" err.txt || fail "shrink: $(cat err.txt)"
expect_rc 1 "$QEDIMG" resize img.qed -1M
grep -q "Shrinking" err.txt || fail "relative shrink: $(cat err.txt)"
expect_rc 1 "$QEDIMG" resize img.qed -- -1M
[ "$(md5sum <img.qed)" = "$sum" ] || fail "a refused shrink modified the image"

log "sizes the geometry cannot hold"
expect_rc 1 "$QEDIMG" resize img.qed 3000000001
grep -q "multiple of 512" err.txt || fail "unaligned: $(cat err.txt)"
qemu-img create -q -f qed -o cluster_size=4k small.qed 1G
expect_rc 1 "$QEDIMG" resize small.qed 17G
grep -q "holds at most 17179869184 bytes (16 GiB)" err.txt || fail "too big for 4k clusters: $(cat err.txt)"
expect_rc 0 "$QEDIMG" resize small.qed 16G
[ "$(vsize small.qed)" = 17179869184 ] || fail "16G on 4k clusters"
[ "$(md5sum <img.qed)" = "$sum" ] || fail "a refused resize modified the image"
expect_rc 1 "$QEDIMG" resize img.qed 12X
expect_rc 1 "$QEDIMG" resize img.qed
expect_rc 1 "$QEDIMG" resize missing.qed 1G
echo PASS
