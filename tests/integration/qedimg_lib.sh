# Shared helpers for the qedimg tests (sourced by every qedimg_*_test.sh).
#
# These tests need no mount and no root: they build images in a scratch directory with qemu-img
# and qemu-io (the oracle) and with qedimg, and compare the two tools' outputs. They skip
# (exit 77) when QEMU's tools or python3 are missing. The scratch directory is removed on exit.
set -euo pipefail

QEDIMG=${QEDIMG:?QEDIMG must point at the qedimg binary}

skip() {
  echo "SKIP: $*"
  exit 77
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

log() { echo "--- $*"; }

for tool in qemu-img qemu-io python3 xxd; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done

TMP=$(mktemp -d /tmp/qedimg-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

# expect_rc WANT CMD...: runs CMD, fails unless its exit code is WANT. Output goes to out.txt
# and err.txt in the scratch directory.
expect_rc() {
  local want=$1 rc=0
  shift
  "$@" >out.txt 2>err.txt || rc=$?
  if [ "$rc" != "$want" ]; then
    cat out.txt err.txt >&2
    fail "'$*' exited with $rc, expected $want"
  fi
}

# json_agree OURS THEIRS: every key THEIRS (qemu-img) reports is in OURS with the same value;
# OURS may have more keys only if they are listed after THEIRS (EXTRA...). Works on a JSON
# object or an array of objects.
json_agree() {
  python3 - "$@" <<'PY'
import json, sys
ours, theirs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
extra = set(sys.argv[3:])
def cmp(o, t, where):
    if isinstance(t, list):
        if not isinstance(o, list) or len(o) != len(t):
            sys.exit(f"{where}: lists differ in length: {o!r} vs {t!r}")
        for i, (a, b) in enumerate(zip(o, t)):
            cmp(a, b, f"{where}[{i}]")
        return
    for k, v in t.items():
        if k not in o:
            sys.exit(f"{where}: key {k!r} missing from qedimg's output")
        if o[k] != v:
            sys.exit(f"{where}: {k!r}: qedimg {o[k]!r} != qemu-img {v!r}")
    for k in o:
        if k not in t and k not in extra:
            sys.exit(f"{where}: unexpected key {k!r} = {o[k]!r} in qedimg's output")
cmp(ours, theirs, "$")
PY
}

# Writes the little-endian u64 VALUE at byte OFFSET of FILE (crafting corrupt images).
poke_u64() {
  python3 -c 'import struct,sys
f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2],0)); f.write(struct.pack("<Q",int(sys.argv[3],0)))' "$@"
}

# Reads the little-endian u64 at byte OFFSET of FILE.
peek_u64() {
  python3 -c 'import struct,sys
f=open(sys.argv[1],"rb"); f.seek(int(sys.argv[2],0)); print(struct.unpack("<Q",f.read(8))[0])' "$@"
}

# hold_image IMAGE: a qemu-io in the background keeps IMAGE open read-write, with QEMU's locks,
# until release_image (or the end of the test).
hold_image() {
  qemu-io -c 'sleep 20000' "$1" >/dev/null 2>"$TMP/holder.err" &
  HOLDER=$!
  trap 'kill $HOLDER 2>/dev/null || true; rm -rf "$TMP"' EXIT
  local i
  # Until qemu-io holds its locks (a loaded machine, e.g. a sanitizer build running beside it,
  # can take many seconds to start it); a qemu-io that exited fails at once, with its message.
  for i in $(seq 1200); do
    qemu-img info "$1" >/dev/null 2>&1 || return 0
    kill -0 "$HOLDER" 2>/dev/null || fail "qemu-io could not open $1: $(cat "$TMP/holder.err")"
    sleep 0.1
  done
  fail "qemu-io did not open $1 within 120 s"
}
release_image() {
  kill "$HOLDER"
  wait "$HOLDER" 2>/dev/null || true
}
