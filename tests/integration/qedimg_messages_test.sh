#!/usr/bin/env bash
# qedimg's error messages: the same text as qemu-img where both tools fail the same way (checked
# against qemu-img itself, with the program name swapped), short and to the point where qedimg
# says more (the capacity of a QED geometry, what to do about an image another process has open),
# and bounded and printable when they quote names taken from an image.
source "$(dirname "$0")/qedimg_lib.sh"

# same_as_qemu ARGS...: qedimg and qemu-img both exit 1 with the same stderr (program name
# swapped). qemu-img runs first, on files of its own, so that it cannot create anything ours
# then sees.
same_as_qemu() {
  local rc=0
  qemu-img "$@" >q.out 2>q.err || rc=$?
  [ "$rc" = 1 ] || fail "qemu-img $* exited with $rc (oracle)"
  sed 's/qemu-img/qedimg/g' q.err >q.want
  expect_rc 1 "$QEDIMG" "$@"
  diff -u q.want err.txt >&2 || fail "'qedimg $*' does not say what qemu-img says"
}

log "an unknown command or option: one line and a pointer to --help"
same_as_qemu bogus
[ "$(wc -l <err.txt)" = 2 ] || fail "bogus command: $(cat err.txt)"
same_as_qemu --bogus
[ ! -s out.txt ] || fail "usage errors print to stdout"
expect_rc 1 "$QEDIMG"
grep -qx "qedimg: Not enough arguments" err.txt || fail "$(cat err.txt)"
grep -qx "Try 'qedimg --help' for more information" err.txt || fail "$(cat err.txt)"
[ "$(wc -l <err.txt)" = 2 ] || fail "no arguments: $(cat err.txt)"

log "create: sizes out of range give qemu-img's range, then the QED geometry's own limit"
qemu-img create -f qed q16e.qed 16E >/dev/null 2>q.err || true
expect_rc 1 "$QEDIMG" create x.qed 16E
head -n1 err.txt | diff - <(sed 's/qemu-img/qedimg/' q.err) >&2 || fail "16E: $(cat err.txt)"
grep -q "Must be between 0 and 9223372036854775807\." err.txt || fail "16E: no range"
grep -qx "qedimg: x.qed: with cluster_size=65536 and table_size=4 a QED image holds at most \
70368744177664 bytes (64 TiB)" err.txt || fail "16E: no geometry limit: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create -o cluster_size=4k x.qed 8E  # 2^63: one past qemu-img's range
grep -q "Must be between 0 and 9223372036854775807\." err.txt || fail "8E: $(cat err.txt)"
grep -q "holds at most 17179869184 bytes (16 GiB)" err.txt || fail "8E, 4k: $(cat err.txt)"
expect_rc 1 "$QEDIMG" create x.qed 100T  # within qemu-img's range, beyond the geometry's
grep -q "exceeds the maximum 70368744177664" err.txt || fail "100T: $(cat err.txt)"
same_as_qemu create -f qed x.qed 12Q
same_as_qemu create -f qed -o cluster_size=abc x.qed 1M
same_as_qemu create -f qed -o cluster_size=16E x.qed 1M
[ ! -e x.qed ] || fail "a refused create left x.qed behind"

log "map and resize: qemu-img's words for bad numbers"
qemu-img create -q -f qed img.qed 64M
cp img.qed ref.qed
same_as_qemu map --start-offset=foo img.qed
same_as_qemu map --start-offset=16E img.qed
same_as_qemu map --max-length=1Z img.qed
same_as_qemu resize img.qed foo
same_as_qemu resize img.qed 16E
same_as_qemu resize img.qed +16E
expect_rc 1 "$QEDIMG" resize img.qed 100T
grep -q "holds at most 70368744177664 bytes (64 TiB)" err.txt || fail "resize 100T: $(cat err.txt)"
cmp img.qed ref.qed || fail "a refused resize changed the image"

log "an image another process has open: the way out is named"
hold_image img.qed
for cmd in info check map; do
  expect_rc 1 "$QEDIMG" "$cmd" img.qed
  grep -q "^qedimg: Could not open 'img.qed': " err.txt || fail "$cmd: $(cat err.txt)"
  grep -q "^Use -U (--force-share) to read it" err.txt || fail "$cmd: no -U hint: $(cat err.txt)"
  expect_rc 0 "$QEDIMG" "$cmd" -U img.qed
done
for cmd in "resize img.qed 128M" "check -r all img.qed"; do
  # shellcheck disable=SC2086
  expect_rc 1 "$QEDIMG" $cmd
  grep -q "stop that process or unmount it first" err.txt || fail "$cmd: $(cat err.txt)"
  ! grep -q -- "-U" err.txt || fail "$cmd: -U cannot help a command that writes: $(cat err.txt)"
done
release_image

log "names from an image are shown bounded and printable"
long=$(printf 'evil\033[2J%.0s' $(seq 400))  # 3.6 KB with terminal escapes
qemu-img create -q -f qed -u -b "$long" -F raw hostile.qed 1M
expect_rc 1 "$QEDIMG" convert -O raw hostile.qed out.raw
grep -q "bytes not shown" err.txt || fail "the long name was not shortened: $(head -c 300 err.txt)"
! grep -q $'\033' err.txt || fail "a terminal escape from the image reached the terminal"
grep -q 'evil\\x1b\[2J' err.txt || fail "escapes are not shown escaped: $(head -c 300 err.txt)"
awk 'length($0) > 600 { exit 1 }' err.txt || fail "a message line is longer than 600 bytes"
log "names from an image in info and map: control characters escaped, no forged lines"
bad_name=$(printf 'b\033[31mad\nname.raw')
truncate -s 1M "$bad_name"
qemu-img create -q -f qed -b "$bad_name" -F raw esc.qed 1M
expect_rc 0 "$QEDIMG" info esc.qed
grep -qx 'backing file: b\\x1b\[31mad\\x0aname.raw' out.txt || fail "info: $(cat -v out.txt)"
expect_rc 0 "$QEDIMG" info --backing-chain esc.qed
expect_rc 0 "$QEDIMG" map esc.qed
qemu-io -f raw -c 'write 0 4k' "$bad_name" >/dev/null
expect_rc 0 "$QEDIMG" map esc.qed
grep -q 'b\\x1b\[31mad\\x0aname.raw$' out.txt || fail "map: $(cat -v out.txt)"
for cmd in "info esc.qed" "info --backing-chain esc.qed" "map esc.qed"; do
  # shellcheck disable=SC2086
  "$QEDIMG" $cmd | grep -q $'\033' && fail "$cmd printed a terminal escape from the image"
  # shellcheck disable=SC2086
  "$QEDIMG" $cmd | grep -qx 'name.raw.*' && fail "$cmd printed a line forged by a name"
done
echo PASS
