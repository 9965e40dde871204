#!/usr/bin/env bash
# Checks that the project's C++ sources follow .clang-format; `--fix` rewrites them instead.
# Optional paths restrict the check (default: every tracked .h/.cc file).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
if [[ ${1:-} == --fix ]]; then
  fix=1
  shift
fi
if (($# > 0)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.h' '*.cc')
fi
((${#files[@]} > 0)) || exit 0

if ((fix)); then
  clang-format -i "${files[@]}"
else
  clang-format --dry-run -Werror "${files[@]}"
fi
