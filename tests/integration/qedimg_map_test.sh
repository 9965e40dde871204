#!/usr/bin/env bash
# qedimg map prints exactly what qemu-img map prints, in both output formats: data clusters,
# zero clusters, unallocated ranges, ranges from a raw or QED backing file (depth 1, 2),
# holes in a raw backing file, and ranges past the backing file's end.
source "$(dirname "$0")/qedimg_lib.sh"

same() {  # IMAGE [MAP-OPTIONS...]
  local img=$1 fmt
  shift
  for fmt in json human; do
    qemu-img map --output=$fmt "$@" "$img" >theirs.txt
    expect_rc 0 "$QEDIMG" map --output=$fmt "$@" "$img"
    diff theirs.txt out.txt || fail "map --output=$fmt $* $img differs from qemu-img's"
  done
}

log "empty and written images"
qemu-img create -q -f qed empty.qed 1G
same empty.qed
qemu-img create -q -f qed img.qed 64M
qemu-io -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 70000 5000' -c 'write -z 1M 128k' \
  -c 'write -z 3M 4k' -c 'write -P 0x11 32M 1M' -c 'write -P 2 200k 64k' img.qed >/dev/null
same img.qed
same "$TMP/img.qed"
same img.qed --start-offset=1M --max-length=33M
same img.qed --start-offset=64k

log "odd sizes and geometries"
qemu-img create -q -f qed -o cluster_size=4k,table_size=2 odd.qed 10000000
qemu-io -c 'write -P 1 0 12k' -c 'write -P 2 9999360 512' -c 'write -P 3 4M 3M' odd.qed >/dev/null
same odd.qed

log "backing chain: raw with holes, past its end, QED in the middle"
truncate -s 1M base.raw
qemu-io -f raw -c 'write -P 0x55 0 256k' -c 'write -P 0x56 512k 64k' base.raw >/dev/null
qemu-img create -q -f qed -b base.raw -F raw mid.qed 3M
qemu-io -c 'write -P 1 64k 64k' -c 'write -z 192k 64k' -c 'write -P 2 2M 64k' mid.qed >/dev/null
same mid.qed
qemu-img create -q -f qed -b mid.qed -F qed top.qed 4M
qemu-io -c 'write -P 3 128k 64k' -c 'write -z 2M 64k' top.qed >/dev/null
same top.qed
same "$TMP/top.qed"
same base.raw

log "errors"
expect_rc 1 "$QEDIMG" map missing.qed
expect_rc 1 "$QEDIMG" map --output=yaml img.qed
echo PASS
