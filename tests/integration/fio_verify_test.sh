#!/bin/bash
# fio with crc32c verification through the mount: O_DIRECT libaio at queue depth 32, random 4 KiB
# writes then verifying reads, and a mixed block-size run; several threads writing O_DIRECT at
# once (the kernel sends their writes concurrently: FOPEN_PARALLEL_DIRECT_WRITES), each write's
# payload owned by its request while others arrive; O_DIRECT I/O from a process that keeps
# getting signals (FUSE_INTERRUPT requests); random writes past the end (fio file_append), which
# grow the disk while many are in flight: libaio O_DIRECT, and buffered through the kernel
# write-back cache (its write-back sends them concurrently); the image stays clean.
source "$(dirname "$0")/lib.sh"
require_fuse
require_tools qemu-img fio

IMG=$TMP/img.qed MNT=$TMP/disk.raw
qemu-img create -q -f qed "$IMG" 128M
mount_image "$IMG" "$MNT"

run_fio() {
  fio --output="$TMP/fio.out" --filename="$MNT" --size=64M --ioengine=libaio --direct=1 \
    --iodepth=32 --verify=crc32c --do_verify=1 --verify_fatal=1 --exitall_on_error \
    --randrepeat=0 "$@" || { cat "$TMP/fio.out"; fail "fio $*"; }
  grep -E "(READ|WRITE):" "$TMP/fio.out" || true
}

log "randwrite 4k, then verify"
run_fio --name=rand4k --rw=randwrite --bs=4k
log "mixed block sizes (512 B .. 1 MiB), offset 32 MiB"
run_fio --name=mixed --rw=randwrite --bssplit=512/10:4k/40:64k/30:256k/10:1m/10 --offset=32M \
  --size=64M
log "4 threads of synchronous O_DIRECT writes at once (mixed sizes), each verifying its region"
run_fio --name=par --thread --numjobs=4 --ioengine=psync --iodepth=1 --rw=randwrite \
  --bssplit=4k/50:64k/30:1m/20 --size=16M --offset_increment=16M --group_reporting
log "O_DIRECT 64 KiB writes and read-backs while the process gets 2000 signals a second"
# A signal while a synchronous request waits makes the kernel send FUSE_INTERRUPT for it.
python3 - "$MNT" <<'PY' || fail "O_DIRECT I/O under signals"
import mmap, os, signal, sys
signal.signal(signal.SIGALRM, lambda *_: None)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)
for i in range(3000):
    off = (i * 7919 % 1024) * 65536
    pattern = i.to_bytes(4, "little") * 16384
    buf[:] = pattern
    if os.pwritev(fd, [buf], off) != 65536:
        sys.exit("short write at %d" % off)
    buf[:] = bytes(65536)
    if os.preadv(fd, [buf], off) != 65536 or buf[:] != pattern:
        sys.exit("wrong data read back at %d" % off)
signal.setitimer(signal.ITIMER_REAL, 0)
print("3000 writes and read-backs under signals: ok")
PY
# run_append: random writes past the end (each job starts where the file ends), then verify.
run_append() {
  local before
  before=$(stat -c %s "$MNT")
  run_fio --name=append-direct --file_append=1 --size=16M --rw=randwrite --iodepth=16 --bs=64k
  run_fio --name=append-buffered --file_append=1 --size=16M --rw=randwrite --direct=0 \
    --ioengine=psync --iodepth=1 --bs=4k --end_fsync=1
  [ "$(stat -c %s "$MNT")" = $((before + (32 << 20))) ] || fail "size after appending 32 MiB"
}
log "random writes past the end, 16 in flight (libaio O_DIRECT) and buffered (write-back)"
run_append
log "sequential 1 MiB write then verify, through cache=none and aio=threads after a remount"
unmount_image "$MNT"
qemu_check_clean "$IMG"
mount_image --cache=none --aio=threads "$IMG" "$MNT"
run_fio --name=seq1m --rw=write --bs=1m
log "4 threads x 8 libaio O_DIRECT writes at once into an O_DIRECT image (payload used in place)"
run_fio --name=parnone --thread --numjobs=4 --iodepth=8 --rw=randwrite \
  --bssplit=512/10:4k/50:64k/30:1m/10 --size=16M --offset_increment=16M --group_reporting
log "random writes past the end again (cache=none, aio=threads: no kernel write-back cache)"
run_append
unmount_image "$MNT"
qemu_check_clean "$IMG"
echo PASS
