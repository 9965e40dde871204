#!/usr/bin/env bash
# The manual pages render without a single warning (groff -ww, and mandoc -Tlint when mandoc is
# installed), and document every option the programs' --help lists (when the programs are
# given in QEDFUSE / QEDIMG).
# Usage: man_lint.sh MAN-DIR
set -euo pipefail
man_dir=${1:?usage: man_lint.sh MAN-DIR}
pages=("$man_dir"/*.1)
[ -e "${pages[0]}" ] || { echo "FAIL: no manual pages in $man_dir" >&2; exit 1; }
command -v groff >/dev/null || { echo "SKIP: groff is not installed"; exit 77; }

status=0
out=$(groff -man -ww -z "${pages[@]}" 2>&1)
if [ -n "$out" ]; then
  echo "FAIL: groff -man -ww -z reports:" >&2
  echo "$out" >&2
  status=1
fi
if command -v mandoc >/dev/null; then
  # -W style: report everything mandoc can find, style hints included.
  if ! out=$(mandoc -Tlint -W style "${pages[@]}" 2>&1) || [ -n "$out" ]; then
    echo "FAIL: mandoc -Tlint reports:" >&2
    echo "$out" >&2
    status=1
  fi
else
  echo "note: mandoc is not installed; only groff checked"
fi

# documented PAGE OPTION: the page mentions OPTION (troff escapes hyphens as \-).
documented() {
  local escaped=${2//-/\\-}
  grep -qF -- "$escaped" "$1" || grep -qF -- "$2" "$1"
}

if [ -n "${QEDFUSE:-}" ] && [ -x "$QEDFUSE" ]; then
  opts=$("$QEDFUSE" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)
  for o in $opts; do
    documented "$man_dir/qedfuse.1" "$o" || { echo "FAIL: qedfuse.1 does not document $o" >&2; status=1; }
  done
  # -o options listed by --help (words before '=' or alone, in the -o paragraph).
  for o in ro rw allow_other allow_root uid gid umask cache aio writeback_cache format need_check_delay poll_us nosuid nodev \
    noexec fsname debug defaults noauto user _netdev; do
    grep -qE -- "(^|[ ,\"])${o//_/\\\\?_}([ ,=\"]|\$)" "$man_dir/qedfuse.1" ||
      documented "$man_dir/qedfuse.1" "$o" || { echo "FAIL: qedfuse.1 does not document -o $o" >&2; status=1; }
  done
fi
if [ -n "${QEDIMG:-}" ] && [ -x "$QEDIMG" ]; then
  for c in create info check map resize convert; do
    for o in $("$QEDIMG" "$c" --help | grep -oE -- '(^|[ [])--?[a-zA-Z][a-z-]*' | tr -d ' [' | sort -u); do
      documented "$man_dir/qedimg.1" "$o" || { echo "FAIL: qedimg.1 does not document $c $o" >&2; status=1; }
    done
  done
fi
[ "$status" = 0 ] && echo PASS
exit "$status"
