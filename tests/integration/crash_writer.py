#!/usr/bin/env python3
"""Writer for the crash test: rewrites random 64 KiB blocks of a file, fsyncing after each, and
logs "start BLOCK GEN" before a write and "ack BLOCK GEN" once fsync() returned. It runs until an
I/O error (the daemon was killed) and then exits. Block content is a pure function of
(block, generation, log name), so `verify` can tell which generation a block holds.

  crash_writer.py write FILE LOG NBLOCKS
  crash_writer.py verify FILE LOG NBLOCKS
"""
import hashlib
import os
import random
import sys

BLOCK = 64 << 10


def content(block, gen, salt):
    head = f"block {block} gen {gen} {salt} ".encode()
    seed = hashlib.sha256(head).digest()
    body = (seed * (BLOCK // len(seed) + 1))[: BLOCK - len(head)]
    return head + body


def write(path, log_path, nblocks):
    fd = os.open(path, os.O_RDWR)
    log = open(log_path, "a", buffering=1)
    gens = [0] * nblocks
    rnd = random.Random(os.getpid())
    salt = os.path.basename(log_path)  # distinguishes runs that share an image
    try:
        while True:
            b = rnd.randrange(nblocks)
            gens[b] += 1
            log.write(f"start {b} {gens[b]}\n")
            data = content(b, gens[b], salt)
            if rnd.random() < 0.5:
                os.pwrite(fd, data, b * BLOCK)
            else:  # two halves, so torn writes are possible at a crash
                os.pwrite(fd, data[: BLOCK // 2], b * BLOCK)
                os.pwrite(fd, data[BLOCK // 2 :], b * BLOCK + BLOCK // 2)
            os.fsync(fd)
            log.write(f"ack {b} {gens[b]}\n")
    except OSError as e:
        print(f"writer stopped: {e}")


def verify(path, log_path, nblocks):
    acked = [0] * nblocks
    started = [set() for _ in range(nblocks)]
    for line in open(log_path):
        parts = line.split()
        if len(parts) != 3:
            continue  # a line torn by the kill
        kind, b, g = parts[0], int(parts[1]), int(parts[2])
        if kind == "ack":
            acked[b] = max(acked[b], g)
        else:
            started[b].add(g)
    total = sum(acked)
    assert total > 0, "nothing was acknowledged before the kill"
    fd = os.open(path, os.O_RDONLY)
    checked = 0
    for b in range(nblocks):
        if acked[b] == 0:
            continue
        data = os.pread(fd, BLOCK, b * BLOCK)
        # Each half (the unit the writer splits on, and one WRITE request each when the kernel
        # writes the halves back separately) holds the acknowledged generation or a later one
        # that was in flight at the kill: an unacknowledged write may be torn, an acknowledged
        # one never.
        salt = os.path.basename(log_path)
        half = BLOCK // 2
        for lo in (0, half):
            ok = [g for g in started[b] if g >= acked[b]
                  and data[lo:lo + half] == content(b, g, salt)[lo:lo + half]]
            if not ok:
                first = data[lo:lo + 40]
                raise SystemExit(f"block {b} (bytes {lo}+{half}): acknowledged gen {acked[b]} "
                                 f"lost; found {first!r}")
        checked += 1
    print(f"{checked} acknowledged blocks intact ({total} acknowledged writes)")


if __name__ == "__main__":
    mode, path, log_path, nblocks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    (write if mode == "write" else verify)(path, log_path, nblocks)
