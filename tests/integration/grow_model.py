#!/usr/bin/env python3
"""Model test of everything that grows the mounted disk (run by grow_test.sh).

  grow_model.py run MOUNT EXPECT      applies the operations below to MOUNT and to a model of
                                      the file, checking the size and the whole content after
                                      each one, then fsyncs and saves in EXPECT what the image
                                      must hold: the model's bytes, zeros up to a multiple of 512
  grow_model.py verify MOUNT EXPECT   after a remount: MOUNT holds exactly the bytes of EXPECT

The model is a regular file that never shrinks. A write that ends past the end (a shell `>>`,
`dd seek=END conv=notrunc`, a pwrite straddling the end, an O_DIRECT write past it, an O_APPEND
write, writes from several threads at once), fallocate mode 0 and ZERO_RANGE without KEEP_SIZE
grow it to exactly that end; the bytes between read as zeros, also to an O_DIRECT read while the
data past them is still in the kernel's cache; fallocate with KEEP_SIZE never grows it. Every
byte written reads back and no call fails or comes back short. The image stores the size in
512-byte sectors, so after a remount the file is the model rounded up to 512, the rest zeros.
"""
import ctypes
import mmap
import os
import random
import subprocess
import sys
import tempfile
import threading

SECTOR = 512
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_ZERO_RANGE = 0x10

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def fallocate(fd, mode, offset, length):
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(mode={mode:#x}, {offset}, {length}): {os.strerror(err)}")


def round_up(n, unit):
    return (n + unit - 1) // unit * unit


class Model:
    def __init__(self, data):
        self.data = bytearray(data)

    @property
    def size(self):
        return len(self.data)

    def grow(self, end):
        if end > self.size:
            self.data.extend(bytes(end - self.size))

    def write(self, offset, payload):
        self.grow(offset + len(payload))
        self.data[offset:offset + len(payload)] = payload


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def check(path, model, step):
    size = os.stat(path).st_size
    if size != model.size:
        sys.exit(f"after {step}: size {size}, expected {model.size}")
    data = read_all(path)
    if data != model.data:
        first = next(i for i in range(min(len(data), model.size)) if data[i] != model.data[i]) \
            if len(data) == model.size else min(len(data), model.size)
        sys.exit(f"after {step}: content differs from the model at byte {first} "
                 f"(read {len(data)} bytes)")
    print(f"ok: {step} (size {size})")


def aligned_buffer(payload):
    buf = mmap.mmap(-1, len(payload))  # page-aligned, as O_DIRECT needs
    buf.write(payload)
    return buf


def run(path, expect_path):
    rng = random.Random(20240613)
    model = Model(read_all(path))
    check(path, model, "mount")

    for text in ("hello\n", "world\n"):
        subprocess.run(["sh", "-c", 'printf "%s" "$1" >> "$2"', "sh", text, path], check=True)
        model.write(model.size, text.encode())
        check(path, model, f"shell append of {text!r}")

    chunk = rng.randbytes(10000)
    with tempfile.NamedTemporaryFile() as t:
        t.write(chunk)
        t.flush()
        end = model.size
        res = subprocess.run(["dd", f"if={t.name}", f"of={path}", "bs=4096", f"seek={end}",
                              "oflag=seek_bytes", "conv=notrunc", "status=none"],
                             capture_output=True, text=True)
        if res.returncode != 0 or res.stderr:
            sys.exit(f"dd seek=END conv=notrunc: exit {res.returncode}: {res.stderr}")
    model.write(end, chunk)
    check(path, model, "dd seek=END conv=notrunc")

    # The reported case: 4 bytes at EOF-2; write, fsync and close succeed, all 4 bytes stay.
    fd = os.open(path, os.O_RDWR)
    end = model.size
    n = os.pwrite(fd, b"ABCD", end - 2)
    assert n == 4, f"pwrite straddling the end returned {n}"
    os.fsync(fd)
    os.close(fd)
    model.write(end - 2, b"ABCD")
    check(path, model, "pwrite of 4 bytes at EOF-2, fsync")

    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    off = round_up(model.size, 4096) + 8192  # leaves a gap that must read as zeros
    payload = rng.randbytes(12288)
    n = os.pwritev(fd, [aligned_buffer(payload)], off)
    assert n == len(payload), f"O_DIRECT write past the end returned {n}"
    model.write(off, payload)
    off = model.size - 4096  # and one straddling the end
    payload = rng.randbytes(8192)
    n = os.pwritev(fd, [aligned_buffer(payload)], off)
    assert n == len(payload), f"O_DIRECT write straddling the end returned {n}"
    model.write(off, payload)
    os.close(fd)
    check(path, model, "O_DIRECT writes past and across the end")

    fd = os.open(path, os.O_RDWR)
    end = model.size
    os.posix_fallocate(fd, end - 100, 1000)  # mode 0 past the end
    model.grow(end + 900)
    os.close(fd)
    check(path, model, "fallocate mode 0 past the end")

    fd = os.open(path, os.O_RDWR)
    end = model.size
    fallocate(fd, FALLOC_FL_KEEP_SIZE, end - 10, 5000)  # never grows
    model.write(end - 300, rng.randbytes(300))  # data that ZERO_RANGE then clears
    os.pwrite(fd, bytes(model.data[end - 300:end]), end - 300)
    fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, end - 200, 4000)
    model.write(end - 200, bytes(200))
    os.close(fd)
    check(path, model, "fallocate KEEP_SIZE and ZERO_RANGE|KEEP_SIZE past the end")

    fd = os.open(path, os.O_RDWR)
    end = model.size
    payload = rng.randbytes(700)
    os.pwrite(fd, payload, end - 700)
    model.write(end - 700, payload)
    fallocate(fd, FALLOC_FL_ZERO_RANGE, end - 300, 2000)  # clears and grows
    model.write(end - 300, bytes(2000))
    os.close(fd)
    check(path, model, "fallocate ZERO_RANGE past the end")

    fd = os.open(path, os.O_RDWR)
    off = model.size + (1 << 20) + 3
    payload = rng.randbytes(5000)
    assert os.pwrite(fd, payload, off) == len(payload)
    model.write(off, payload)
    os.close(fd)
    check(path, model, "buffered write 1 MiB past the end")

    # Written far past the end and not written back yet (with the kernel write-back cache only
    # the kernel has it): an O_DIRECT read of the gap before it gets zeros, not an early end.
    # (An O_DIRECT open has the kernel write everything back, so it comes first.)
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    fd = os.open(path, os.O_RDWR)
    gap = round_up(model.size, 4096)
    payload = rng.randbytes(3000)
    assert os.pwrite(fd, payload, gap + (1 << 20)) == len(payload)
    model.write(gap + (1 << 20), payload)
    buf = mmap.mmap(-1, 65536)
    n = os.preadv(dfd, [buf], gap)
    assert n == 65536 and buf[:] == bytes(65536), f"O_DIRECT read in the gap returned {n} bytes"
    os.close(dfd)
    os.close(fd)
    check(path, model, "O_DIRECT read between the end and unsynced data past it")

    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    payload = rng.randbytes(777)
    assert os.write(fd, payload) == len(payload)
    model.write(model.size, payload)
    os.close(fd)
    check(path, model, "O_APPEND write")

    # Many writes past the end at once, in shuffled order, from 8 threads: buffered (with the
    # kernel write-back cache they reach the daemon at write-back, several in flight at once)
    # and O_DIRECT. The last block ends unaligned.
    for flags, name in ((0, "buffered"), (os.O_DIRECT, "O_DIRECT")):
        base = round_up(model.size, 65536) + 65536
        blocks = [(base + i * 65536, rng.randbytes(65536)) for i in range(48)]
        if not flags:
            blocks[-1] = (blocks[-1][0], blocks[-1][1][:65536 - 1000])
        order = list(blocks)
        rng.shuffle(order)
        errors = []

        def writer(items):
            try:
                fd = os.open(path, os.O_RDWR | flags)
                for off, payload in items:
                    n = os.pwritev(fd, [aligned_buffer(payload)], off)
                    if n != len(payload):
                        errors.append(f"{name} write at {off} returned {n}")
                os.close(fd)
            except OSError as e:
                errors.append(f"{name}: {e}")

        threads = [threading.Thread(target=writer, args=(order[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("; ".join(errors))
        for off, payload in blocks:
            model.write(off, payload)
        check(path, model, f"8 threads writing past the end at once ({name})")

    subprocess.run(["sh", "-c", 'printf "the end\\n" >> "$1"', "sh", path], check=True)
    model.write(model.size, b"the end\n")
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    check(path, model, "final append and fsync")
    with open(expect_path, "wb") as f:
        f.write(model.data + bytes(round_up(model.size, SECTOR) - model.size))


def verify(path, expect_path):
    model = Model(read_all(expect_path))
    check(path, model, "remount")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("run", "verify"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else verify)(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
