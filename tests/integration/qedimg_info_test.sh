#!/usr/bin/env bash
# qedimg info agrees with qemu-img info: every key qemu-img's JSON reports is present with the
# same value (qedimg adds only "format-specific"), the human lines qemu-img prints come first
# and identical, --backing-chain agrees layer by layer, and the need-check flag shown is the one
# on disk (qemu-img 7.2 shows dirty-flag false for QED even when it is set: quirk Q6).
source "$(dirname "$0")/qedimg_lib.sh"

agree() {  # IMAGE [INFO-OPTIONS...]
  local img=$1
  shift
  qemu-img info --output=json "$@" "$img" >theirs.json
  expect_rc 0 "$QEDIMG" info --output=json "$@" "$img"
  cp out.txt ours.json
  json_agree ours.json theirs.json format-specific || fail "info --output=json $* $img"
  # Human output: qemu-img's lines are a prefix of ours (we add "Format specific information").
  qemu-img info "$@" "$img" >theirs.txt
  expect_rc 0 "$QEDIMG" info "$@" "$img"
  grep -v '^    \|^Format specific information:' out.txt >ours.txt
  diff theirs.txt ours.txt || fail "human info $* $img differs from qemu-img's"
}

log "images written by qemu-io"
qemu-img create -q -f qed plain.qed 1G
agree plain.qed
qemu-io -c 'write -P 0xab 0 64k' -c 'write -z 1M 128k' -c 'write -P 1 3M 4k' plain.qed >/dev/null
agree plain.qed
qemu-img create -q -f qed -o cluster_size=4k,table_size=16 small.qed 100M
qemu-io -c 'write -P 7 10M 1M' small.qed >/dev/null
agree small.qed
agree "$TMP/small.qed"

log "backing chains"
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c 'write -P 0x55 0 512k' base.raw >/dev/null
qemu-img create -q -f qed -b base.raw -F raw ov.qed 4M
qemu-io -c 'write -P 1 64k 64k' ov.qed >/dev/null
agree ov.qed
agree ov.qed --backing-chain
agree "$TMP/ov.qed" --backing-chain
qemu-img create -q -f qed -b ov.qed -F qed top.qed
agree top.qed --backing-chain
mkdir -p sub
qemu-img create -q -f qed -b ../base.raw -F raw sub/rel.qed 2M
agree sub/rel.qed --backing-chain
agree base.raw

log "our extra keys"
"$QEDIMG" info --output=json ov.qed >ours.json
python3 - <<'PY'
import json
d = json.load(open("ours.json"))["format-specific"]
assert d["type"] == "qed", d
x = d["data"]
assert x["table-size"] == 4 and x["header-size"] == 1, x
assert x["features"] == 5 and x["need-check"] is False, x
assert x["l1-table-offset"] == 65536, x
assert x["backing-chain"] == ["base.raw"], x
PY
"$QEDIMG" info top.qed >ours.txt
grep -q "backing chain: ov.qed (qed) -> base.raw (raw)" ours.txt || fail "chain: $(cat ours.txt)"

log "need-check as stored on disk"
qemu-img create -q -f qed dirty.qed 16M
{ qemu-io -c 'write 0 64k' -c abort dirty.qed >/dev/null || true; } 2>/dev/null
[ "$(xxd -s 16 -l 1 -p dirty.qed)" = 02 ] || fail "qemu-io abort should leave NEED_CHECK set"
expect_rc 0 "$QEDIMG" info --output=json dirty.qed
cp out.txt ours.json
python3 -c 'import json; d=json.load(open("ours.json")); assert d["dirty-flag"] is True and d["format-specific"]["data"]["need-check"] is True, d'
expect_rc 0 "$QEDIMG" info dirty.qed
grep -q "need check: yes" out.txt || fail "human need check: $(cat out.txt)"
[ "$(xxd -s 16 -l 1 -p dirty.qed)" = 02 ] || fail "info must not clear NEED_CHECK"

log "errors"
expect_rc 1 "$QEDIMG" info missing.qed
grep -q "missing.qed" err.txt || fail "missing file: $(cat err.txt)"
cp plain.qed badfeat.qed
printf '\x08' | dd of=badfeat.qed bs=1 seek=16 conv=notrunc status=none
expect_rc 1 "$QEDIMG" info badfeat.qed
expect_rc 1 "$QEDIMG" info --output=xml plain.qed
echo PASS
