#!/bin/bash
# The bounded run of the POSIX model exerciser (tests/integration/posix_model.py) through
# scripts/posix-model.sh: one run per configuration (root and uid 65534 mounting its own image,
# kernel writeback cache on/off and --cache=none, io_uring and threads), each with its own seed,
# 400 random operations over the whole POSIX surface of the mounted file (150 against a sanitizer
# build) and two remounts, clean or after kill -9, every read checked against the model, then
# qemu-img check and qemu-img convert compared with the model. Prints a COUNTS line; any failed
# run names the failed check, its seed and a command that repeats it.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img python3 setpriv unshare mknod dd cp

chmod 711 "$TMP"  # uid 65534 works in a directory below it
# An operation that takes longer than op_timeout seconds is reported as a hang (the mount is
# then aborted), so a deadlock fails this test instead of stalling the suite.
ops=${POSIX_MODEL_OPS:-400} op_timeout=30
if [ "${QEDFUSE_TEST_SANITIZED:-0}" = 1 ]; then
  ops=150 op_timeout=60
fi
bash "$(dirname "$0")/../../scripts/posix-model.sh" --qedfuse "$QEDFUSE" --base "$TMP/model" \
  --rounds 1 --ops "$ops" --phases 3 --first-seed "${POSIX_MODEL_FIRST_SEED:-1}" \
  -- --op-timeout "$op_timeout"
echo PASS
