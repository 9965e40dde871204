#!/bin/bash
# The apps (fusefs/ and qedimg in src/tools/) use only the public API under include/qedfuse/:
# no #include of a header under src/ other than their own (src/tools/), and none of the block
# library's private paths (block/..., base/..., coro/...) that the library itself uses.
# The build enforces most of it (src/ is not on the apps' include path); this catches a
# "src/block/..." spelled from the project root, which the root on their path would resolve.
set -u
root=${1:?usage: layering_test.sh SOURCE_ROOT}
cd "$root" || exit 1
bad=$(grep -rnE '^\s*#\s*include\s*"(src/(block|base|coro)/|block/|base/|coro/)' \
  fusefs src/tools --include='*.cc' --include='*.h')
if [[ -n $bad ]]; then
  echo "private block-layer headers included by an app:"
  echo "$bad"
  exit 1
fi
echo "fusefs/ and src/tools/ include only qedfuse/ public headers and their own"
