#!/usr/bin/env python3
"""Client side of fault_test.sh: runs a list of operations on the mounted file and checks each
outcome, keeping a model of what the device must hold (a sparse file of the same size that gets
every acknowledged write).

  fault_client.py DEVICE MODEL ARMDIR OP...

OPs (BLOCK counts 64 KiB blocks; ERR is an errno name such as EIO or ENOSPC):
  w:BLOCK:SEED         O_DIRECT write of a block with a seeded pattern; must succeed
  W:BLOCK:SEED:ERR     the same write must fail with ERR (the model is unchanged: an injected
                       failure happens before the image file is touched)
  r:BLOCK              O_DIRECT read; must succeed and match the model
  R:BLOCK:ERR          O_DIRECT read must fail with ERR
  s / S:ERR            fsync must succeed / fail with ERR
  arm:NAME / disarm:NAME   create / remove ARMDIR/NAME (arms the daemon's armed=PATH rules)
  fill:BLOCK:SEED:ERR  writes blocks from BLOCK on until one fails; it must fail with ERR
  verify               reads the whole device (O_DIRECT) and compares it with the model
Prints one line per failure it expected, and at the end `client errors: N`.
"""
import errno
import mmap
import os
import random
import sys

BLOCK = 64 * 1024


def pattern(block, seed):
    rng = random.Random(block * 1000003 + seed)
    return rng.randbytes(BLOCK)


class Client:
    def __init__(self, device, model, armdir):
        self.fd = os.open(device, os.O_RDWR | os.O_DIRECT)
        self.size = os.fstat(self.fd).st_size
        self.model = os.open(model, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self.model, self.size)
        self.armdir = armdir
        self.buf = mmap.mmap(-1, BLOCK)  # page aligned, as O_DIRECT wants
        self.errors = 0

    def fail(self, msg):
        sys.exit(f"fault_client: {msg}")

    def expect_error(self, what, err_name, fn):
        want = getattr(errno, err_name)
        try:
            fn()
        except OSError as e:
            if e.errno != want:
                self.fail(f"{what}: got {errno.errorcode.get(e.errno, e.errno)}, want {err_name}")
            self.errors += 1
            print(f"{what}: {err_name} as expected")
            return
        self.fail(f"{what}: succeeded, want {err_name}")

    def write(self, block, seed):
        data = pattern(block, seed)
        self.buf[:] = data
        n = os.pwritev(self.fd, [self.buf], block * BLOCK)
        if n != BLOCK:
            self.fail(f"short write at block {block}: {n}")
        os.pwrite(self.model, data, block * BLOCK)

    def read(self, block):
        n = os.preadv(self.fd, [self.buf], block * BLOCK)
        if n != BLOCK:
            self.fail(f"short read at block {block}: {n}")
        if self.buf[:] != os.pread(self.model, BLOCK, block * BLOCK):
            self.fail(f"block {block} does not match the model")

    def run(self, op):
        f = op.split(":")
        k = f[0]
        if k == "w":
            self.write(int(f[1]), int(f[2]))
        elif k == "W":
            blk, seed = int(f[1]), int(f[2])
            self.buf[:] = pattern(blk, seed)
            self.expect_error(f"write block {blk}", f[3],
                              lambda: os.pwritev(self.fd, [self.buf], blk * BLOCK))
        elif k == "r":
            self.read(int(f[1]))
        elif k == "R":
            blk = int(f[1])
            self.expect_error(f"read block {blk}", f[2],
                              lambda: os.preadv(self.fd, [self.buf], blk * BLOCK))
        elif k == "s":
            os.fsync(self.fd)
        elif k == "S":
            self.expect_error("fsync", f[1], lambda: os.fsync(self.fd))
        elif k == "arm":
            open(os.path.join(self.armdir, f[1]), "w").close()
        elif k == "disarm":
            os.unlink(os.path.join(self.armdir, f[1]))
        elif k == "fill":
            blk, seed, want = int(f[1]), int(f[2]), f[3]
            start = blk
            while True:
                if blk * BLOCK >= self.size:
                    self.fail(f"fill reached the end of the device without {want}")
                try:
                    self.write(blk, seed)
                except OSError as e:
                    if e.errno != getattr(errno, want):
                        self.fail(f"fill: block {blk} failed with "
                                  f"{errno.errorcode.get(e.errno, e.errno)}, want {want}")
                    self.errors += 1
                    print(f"fill: {blk - start} blocks written, block {blk} failed with {want}")
                    return
                blk += 1
        elif k == "verify":
            for blk in range(self.size // BLOCK):
                self.read(blk)
            print(f"verify: {self.size // BLOCK} blocks match the model")
        else:
            self.fail(f"unknown op {op!r}")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    c = Client(sys.argv[1], sys.argv[2], sys.argv[3])
    for op in sys.argv[4:]:
        c.run(op)
    os.close(c.fd)
    print(f"client errors: {c.errors}")


if __name__ == "__main__":
    main()
