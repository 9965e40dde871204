#!/usr/bin/env bash
# qedimg's command line: --help/--version succeed and print to stdout; bad usage prints a
# message and the usage to stderr and exits 1, without creating or touching files.
source "$(dirname "$0")/qedimg_lib.sh"

expect_rc 0 "$QEDIMG" --help
for c in create info check map resize convert; do
  grep -q "qedimg $c" out.txt || fail "--help does not list $c"
done
expect_rc 0 "$QEDIMG" --version
grep -q "^qedimg version [0-9]" out.txt || fail "--version: $(cat out.txt)"
for c in create info check map resize convert; do
  expect_rc 0 "$QEDIMG" "$c" --help
  grep -q "qedimg $c" out.txt || fail "$c --help: $(cat out.txt)"
done

bad() {  # CMD...: must exit 1 with a message and a usage hint on stderr, nothing on stdout
  expect_rc 1 "$QEDIMG" "$@"
  [ -s err.txt ] || fail "'$*' printed no error"
  grep -q "^qedimg: " err.txt || fail "'$*': message not prefixed: $(cat err.txt)"
}
bad
grep -qx "Try 'qedimg --help' for more information" err.txt || fail "no hint: $(cat err.txt)"
[ "$(wc -l <err.txt)" = 2 ] || fail "more than one line and a hint: $(cat err.txt)"
bad frobnicate
grep -q "Command not found: frobnicate" err.txt || fail "$(cat err.txt)"
bad create
bad create --bogus x.qed 1G
bad create a.qed 1G extra
bad info
bad info a.qed b.qed
bad check --output
bad map -x a.qed
bad resize a.qed
bad convert -O qed onlyone
[ -z "$(ls -A | grep -v -e out.txt -e err.txt)" ] || fail "bad usage created files: $(ls)"
echo PASS
