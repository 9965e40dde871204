#!/usr/bin/env bash
# qedimg info agrees with qemu-img info: every key qemu-img's JSON reports is present with the
# same value (qedimg adds only "format-specific"), the human lines qemu-img prints come first
# and identical, --backing-chain agrees layer by layer, and the need-check flag shown is the one
# on disk (qemu-img 7.2 shows dirty-flag false for QED even when it is set: quirk Q6). Plain info
# shows an image whose backing file is missing or unreadable as qemu-img does (neither opens it);
# --backing-chain fails on it, as qemu-img's does.
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
python3 -c 'import json; d=json.load(open("ours.json"))["format-specific"]["data"]
assert "backing-chain" not in d, d'  # plain info does not open the backing file
"$QEDIMG" info --output=json --backing-chain ov.qed >ours.json
python3 - <<'PY'
import json
d = json.load(open("ours.json"))[0]["format-specific"]
assert d["type"] == "qed", d
x = d["data"]
assert x["table-size"] == 4 and x["header-size"] == 1, x
assert x["features"] == 5 and x["need-check"] is False, x
assert x["l1-table-offset"] == 65536, x
assert x["backing-chain"] == ["base.raw"], x
PY
"$QEDIMG" info --backing-chain top.qed >ours.txt
grep -q "backing chain: ov.qed (qed) -> base.raw (raw)" ours.txt || fail "chain: $(cat ours.txt)"
"$QEDIMG" info top.qed >ours.txt
! grep -q "backing chain:" ours.txt || fail "plain info opened the chain: $(cat ours.txt)"

log "a backing file that cannot be opened: shown as qemu-img shows it, refused with --backing-chain"
# chain_refused IMAGE NAME REASON [PATH]: qemu-img and qedimg both fail info --backing-chain with
# one line; ours names the image, the stored backing NAME and REASON, and the file opened (PATH,
# default NAME) once.
chain_refused() {
  local img=$1 name=$2 reason=$3 path=${4:-$2} rc=0 out
  for out in human json; do
    rc=0
    ${AS_USER:-} qemu-img info --backing-chain --output=$out "$img" >q.out 2>q.err || rc=$?
    [ "$rc" = 1 ] && [ "$(wc -l <q.err)" = 1 ] && grep -q "^qemu-img: Could not open '" q.err ||
      fail "qemu-img info --backing-chain $img (oracle): rc $rc: $(cat q.err)"
    expect_rc 1 ${AS_USER:-} "$QEDIMG" info --backing-chain --output=$out "$img"
    [ ! -s out.txt ] || fail "--backing-chain $img printed: $(cat out.txt)"
    [ "$(wc -l <err.txt)" = 1 ] || fail "--backing-chain $img: $(cat err.txt)"
    grep -qF "qedimg: Could not open '$img': " err.txt || fail "no image named: $(cat err.txt)"
    grep -qF "backing file '$name'$reason" err.txt || fail "$name$reason: $(cat err.txt)"
    [ "$(grep -oF "$path" err.txt | wc -l)" = 1 ] || fail "$path named twice: $(cat err.txt)"
  done
}
chmod 755 "$TMP"
qemu-img create -q -f raw gone.raw 1M
qemu-img create -q -f qed -b gone.raw -F raw lost.qed 2M
qemu-img create -q -f qed -b ../gone.raw -F raw sub/lost.qed 2M
qemu-img create -q -f qed -b "$TMP/gone.raw" -F raw abs.qed 2M
qemu-img create -q -f qed -b lost.qed -F qed lost2.qed 2M  # two levels: lost2 -> lost -> gone
qemu-io -c 'write -P 3 0 64k' lost.qed >/dev/null
chmod 644 ./*.qed sub/*.qed
rm gone.raw
for img in lost.qed sub/lost.qed "$TMP/sub/lost.qed" abs.qed lost2.qed; do
  agree "$img"
done
chain_refused lost.qed gone.raw ": no such file"
chain_refused sub/lost.qed ../gone.raw " (sub/../gone.raw): no such file" sub/../gone.raw
chain_refused lost2.qed gone.raw ": no such file"
grep -qF "backing file 'lost.qed': backing file 'gone.raw'" err.txt || fail "two levels: the chain: $(cat err.txt)"
mkdir gone.raw
agree lost.qed
chain_refused lost.qed gone.raw " is a directory"
rmdir gone.raw
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  qemu-img create -q -f raw gone.raw 1M
  chmod 000 gone.raw
  AS_USER="setpriv --reuid=65534 --regid=65534 --clear-groups"
  for out in human json; do  # agree, as the user who cannot read the backing file
    $AS_USER qemu-img info --output=$out lost.qed >theirs.$out
    expect_rc 0 $AS_USER "$QEDIMG" info --output=$out lost.qed
    cp out.txt ours.$out
  done
  json_agree ours.json theirs.json format-specific || fail "info --output=json, mode 000 backing"
  grep -v '^    \|^Format specific information:' ours.human | diff theirs.human - ||
    fail "human info, mode 000 backing"
  chain_refused lost.qed gone.raw ": permission denied"
  AS_USER=
  rm -f gone.raw
else
  log "(not root: the unreadable backing file case is skipped)"
fi

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
