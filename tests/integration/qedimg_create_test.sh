#!/usr/bin/env bash
# qedimg create writes the same bytes as `qemu-img create -f qed` for the same options, and
# refuses what it must refuse with a message and exit code 1.
source "$(dirname "$0")/qedimg_lib.sh"

same_as_qemu() {  # SIZE OPTS...: both tools create with OPTS; files must be identical
  local size=$1
  shift
  rm -f ref.qed our.qed
  qemu-img create -q -f qed "$@" ref.qed $size
  expect_rc 0 "$QEDIMG" create -q "$@" our.qed $size
  cmp ref.qed our.qed || fail "create $* $size differs from qemu-img"
  expect_rc 0 qemu-img check our.qed
}

log "geometries"
same_as_qemu 1G
same_as_qemu 1G -o cluster_size=4096
same_as_qemu 16G -o cluster_size=4k,table_size=4
same_as_qemu 1G -o table_size=16
same_as_qemu 1G -o table_size=2
same_as_qemu 1G -o cluster_size=1M,table_size=2
same_as_qemu 64T
same_as_qemu 0
log "sizes are rounded up to 512 like qemu-img"
same_as_qemu 1000
same_as_qemu 1.5M
same_as_qemu 0x100000

log "backing files"
qemu-img create -q -f raw base.raw 3M
qemu-img create -q -f qed base.qed 5M
same_as_qemu 4M -b base.raw -F raw
same_as_qemu "" -b base.raw -F raw
same_as_qemu "" -b base.qed -F qed
same_as_qemu 8M -b "$TMP/base.raw" -F raw
# Without -F the backing file is probed; a raw one is recorded as raw (qemu-img requires -F).
expect_rc 0 "$QEDIMG" create -q -b base.raw noformat.qed
qemu-img create -q -f qed -b base.raw -F raw ref.qed
cmp ref.qed noformat.qed || fail "-b base.raw without -F should equal -F raw"
[ "$(qemu-img info --output=json noformat.qed | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 3145728 ] ||
  fail "size should default to the backing file's"
# A backing file in another directory is resolved against the image's directory.
mkdir -p d1
qemu-img create -q -f raw d1/b.raw 1M
expect_rc 0 "$QEDIMG" create -q -b b.raw -F raw d1/ov.qed
expect_rc 0 qemu-img info d1/ov.qed

log "the Formatting line matches qemu-img's"
qemu-img create -f qed -b base.raw -F raw -o table_size=8 ref.qed 4M >ref.txt
"$QEDIMG" create -b base.raw -F raw -o table_size=8 our.qed 4M | sed 's/our.qed/ref.qed/' >our.txt
diff ref.txt our.txt || fail "Formatting line differs"

log "refusals"
expect_rc 1 "$QEDIMG" create bad.qed
grep -q "needs a size" err.txt || fail "missing size: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create bad.qed 1Q
grep -q "Invalid image size" err.txt || fail "bad size: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -o cluster_size=1000 bad.qed 1G
grep -qi "cluster size" err.txt || fail "bad cluster size: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -o table_size=3 bad.qed 1G
grep -qi "table size" err.txt || fail "bad table size: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -o table_size=1 bad.qed 1G
grep -qi "table size 1" err.txt || fail "table_size=1 (QEMU cannot open it): $(cat err.txt)"
expect_rc 1 "$QEDIMG" create bad.qed 65T
grep -qi "maximum" err.txt || fail "too big: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -o cluster_size=4M bad.qed 0
expect_rc 1 "$QEDIMG" create -o foo=1 bad.qed 1G
grep -q "Invalid parameter 'foo'" err.txt || fail "unknown option: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -b missing.raw -F raw bad.qed 1G
grep -q "missing.raw" err.txt || fail "missing backing file: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -b base.raw -F qcow2 bad.qed 1G
echo PASS
