#!/usr/bin/env python3
"""Mixed workload for scripts/soak.sh on a mounted qedfuse file (Python 3 standard library only).

  soak.py DEVICE MODEL --seconds S [--workers N] [--seed N] [--pid DAEMON_PID]
          [--grow-mib M] [--max-mib M] [--rss-limit-mib M]

Worker processes run random operations on the mounted DEVICE: buffered and O_DIRECT reads and
writes, zero writes (fallocate PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE) and fsync. The device is cut
into 1 MiB chunks and worker w owns the chunks k with k % N == w, so each worker knows exactly
what its chunks hold: every write and zero write is applied to MODEL (a file of the same size;
the workers' ranges are disjoint, so together they form the model of the whole device) and
every read is compared with it. The coordinator (this process) grows the device with truncate
every few seconds (publishing the new size to the workers only once the truncate returned) and
samples the daemon's VmRSS/VmHWM from /proc/PID/status.

Prints a summary and, last, one line `RESULT key=value ...`; exits 1 on any mismatch, failed
operation or a resident-memory sample above --rss-limit-mib.
"""
import argparse
import ctypes
import ctypes.util
import mmap
import multiprocessing as mp
import os
import random
import sys
import time

CHUNK = 1 << 20
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd, mode, offset, length):
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# Operation mix (weights).
OPS = [
    ("read", 20),
    ("read_direct", 15),
    ("write", 20),
    ("write_direct", 20),
    ("punch", 5),
    ("zero_range", 5),
    ("fsync", 3),
]


def worker(w, nworkers, device, model_path, seed, deadline, size_val, out_q):
    rng = random.Random(seed * 7919 + w)
    counts = {"read": 0, "write": 0, "zero": 0, "fsync": 0, "mismatch": 0, "error": 0}
    errors = []
    fdb = os.open(device, os.O_RDWR)
    fdd = os.open(device, os.O_RDWR | os.O_DIRECT)
    model = os.open(model_path, os.O_RDWR)
    dbuf = mmap.mmap(-1, 256 << 10)  # page aligned, for O_DIRECT
    names = [n for n, _ in OPS]
    weights = [wt for _, wt in OPS]

    def check(off, got, what):
        want = os.pread(model, len(got), off)
        if got != want:
            counts["mismatch"] += 1
            first = next(i for i in range(len(got)) if got[i] != want[i]) if len(got) == len(
                want) else 0
            errors.append(f"worker {w}: {what} at {off}+{len(got)} differs from the model "
                          f"(first at byte {off + first})")

    while time.monotonic() < deadline and counts["mismatch"] == 0 and counts["error"] == 0:
        nchunks = size_val.value // CHUNK
        mine = (nchunks - w + nworkers - 1) // nworkers
        if mine <= 0:
            time.sleep(0.01)
            continue
        base = (w + nworkers * rng.randrange(mine)) * CHUNK
        op = rng.choices(names, weights)[0]
        try:
            if op == "read":
                off = base + rng.randrange(CHUNK)
                n = rng.randint(1, min(128 << 10, base + CHUNK - off))
                check(off, os.pread(fdb, n, off), "buffered read")
                counts["read"] += 1
            elif op == "read_direct":
                off = base + 4096 * rng.randrange(CHUNK // 4096)
                n = 4096 * rng.randint(1, min(64, (base + CHUNK - off) // 4096))
                view = memoryview(dbuf)[:n]
                got = os.preadv(fdd, [view], off)
                if got != n:
                    raise OSError(0, f"short O_DIRECT read {got} of {n}")
                check(off, bytes(view), "O_DIRECT read")
                view.release()
                counts["read"] += 1
            elif op == "write":
                off = base + rng.randrange(CHUNK)
                n = rng.randint(1, min(128 << 10, base + CHUNK - off))
                data = rng.randbytes(n)
                if os.pwrite(fdb, data, off) != n:
                    raise OSError(0, "short buffered write")
                os.pwrite(model, data, off)
                counts["write"] += 1
            elif op == "write_direct":
                off = base + 4096 * rng.randrange(CHUNK // 4096)
                n = 4096 * rng.randint(1, min(64, (base + CHUNK - off) // 4096))
                data = rng.randbytes(n)
                dbuf[:n] = data
                view = memoryview(dbuf)[:n]
                got = os.pwritev(fdd, [view], off)
                view.release()
                if got != n:
                    raise OSError(0, f"short O_DIRECT write {got} of {n}")
                os.pwrite(model, data, off)
                counts["write"] += 1
            elif op in ("punch", "zero_range"):
                off = base + 512 * rng.randrange(CHUNK // 512)
                n = 512 * rng.randint(1, (base + CHUNK - off) // 512)
                mode = (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                        if op == "punch" else FALLOC_FL_ZERO_RANGE)
                fallocate(fdb, mode, off, n)
                os.pwrite(model, bytes(n), off)
                counts["zero"] += 1
            elif op == "fsync":
                os.fsync(fdb)
                counts["fsync"] += 1
        except OSError as e:
            counts["error"] += 1
            errors.append(f"worker {w}: {op} failed: {e}")
    try:
        os.fsync(fdb)
        counts["fsync"] += 1
    except OSError as e:
        counts["error"] += 1
        errors.append(f"worker {w}: final fsync failed: {e}")
    os.close(fdb)
    os.close(fdd)
    os.close(model)
    out_q.put((w, counts, errors))


def read_status(pid):
    """(VmRSS, VmHWM) of |pid| in KiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            vals = {}
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    vals[k] = int(v.split()[0])
            return vals.get("VmRSS", 0), vals.get("VmHWM", 0)
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("device")
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--grow-mib", type=int, default=16)
    ap.add_argument("--max-mib", type=int, default=512)
    ap.add_argument("--rss-limit-mib", type=int, default=512)
    a = ap.parse_args()

    size = os.stat(a.device).st_size
    with open(a.model, "wb") as m:
        m.truncate(size)
    start = time.monotonic()
    deadline = start + a.seconds
    size_val = mp.Value("q", size, lock=False)
    out_q = mp.Queue()
    procs = [
        mp.Process(target=worker,
                   args=(w, a.workers, a.device, a.model, a.seed, deadline, size_val, out_q))
        for w in range(a.workers)
    ]
    for p in procs:
        p.start()

    truncates = 0
    grow_every = max(2.0, a.seconds / 10)
    next_grow = start + grow_every
    rss_max = hwm = rss_last = 0
    samples = 0
    problems = []
    while any(p.is_alive() for p in procs):
        now = time.monotonic()
        if now >= next_grow and now < deadline:
            next_grow = now + grow_every
            new = min(size + (a.grow_mib << 20), a.max_mib << 20)
            if new > size:
                try:
                    os.truncate(a.device, new)
                    os.truncate(a.model, new)
                    size = new
                    size_val.value = new  # workers use the new chunks from now on
                    truncates += 1
                except OSError as e:
                    problems.append(f"growing the device to {new} failed: {e}")
        if a.pid:
            st = read_status(a.pid)
            if st is None:
                problems.append(f"the daemon (pid {a.pid}) is gone")
                break
            rss_last, hwm = st
            rss_max = max(rss_max, rss_last)
            samples += 1
        time.sleep(0.5)

    results = [out_q.get() for _ in procs]
    for p in procs:
        p.join()
    if a.pid:
        st = read_status(a.pid)
        if st is not None:
            rss_last, hwm = st
            rss_max = max(rss_max, rss_last)
    total = {"read": 0, "write": 0, "zero": 0, "fsync": 0, "mismatch": 0, "error": 0}
    for _, counts, errs in sorted(results):
        for k in total:
            total[k] += counts[k]
        problems.extend(errs[:5])
    if os.stat(a.device).st_size != size:
        problems.append(f"device size {os.stat(a.device).st_size} != expected {size}")
    ops = total["read"] + total["write"] + total["zero"] + total["fsync"] + truncates
    elapsed = time.monotonic() - start
    mib = lambda kib: kib / 1024.0  # noqa: E731
    print(f"soak: {elapsed:.0f} s, {a.workers} workers, device grown to {size >> 20} MiB "
          f"by {truncates} truncates")
    print(f"soak: {ops} ops ({ops / elapsed:.0f}/s): {total['read']} reads, {total['write']} "
          f"writes, {total['zero']} zero writes, {total['fsync']} fsyncs, {truncates} truncates")
    if a.pid:
        print(f"soak: daemon VmRSS max {mib(rss_max):.1f} MiB, final {mib(rss_last):.1f} MiB, "
              f"VmHWM {mib(hwm):.1f} MiB ({samples} samples)")
        if rss_max > a.rss_limit_mib * 1024:
            problems.append(f"daemon resident memory {mib(rss_max):.1f} MiB exceeds the "
                            f"{a.rss_limit_mib} MiB bound")
    for p in problems:
        print(f"soak: FAIL: {p}")
    print(f"RESULT ops={ops} reads={total['read']} writes={total['write']} zeros={total['zero']} "
          f"fsyncs={total['fsync']} truncates={truncates} mismatches={total['mismatch']} "
          f"errors={total['error']} rss_max_mib={mib(rss_max):.1f} "
          f"rss_final_mib={mib(rss_last):.1f} size={size}")
    sys.exit(1 if problems or total["mismatch"] or total["error"] else 0)


if __name__ == "__main__":
    main()
