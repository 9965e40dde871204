#!/bin/bash
# The short soak: scripts/soak.sh for 50 s (20 s against a sanitizer build, whose daemon is
# several times slower and bigger): several processes doing buffered and O_DIRECT reads and
# writes, zero writes, fsyncs and growing truncates on one mount; every read checked against a
# model, then the image checked with qemu-img and compared with the model byte for byte, and the
# daemon's resident memory bounded.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 cmp

seconds=${SOAK_SECONDS:-50} rss_limit=512
if [ "${QEDFUSE_TEST_SANITIZED:-0}" = 1 ]; then
  seconds=20 rss_limit=1024
fi
bash "$(dirname "$0")/../../scripts/soak.sh" --qedfuse "$QEDFUSE" --keep "$TMP/soak" \
  --rss-limit-mib "$rss_limit" "$seconds"
echo PASS
