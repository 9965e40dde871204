#!/usr/bin/env python3
"""Side-by-side fio/dd benchmark of qedfuse against QEMU's FUSE export.

Called by scripts/bench.sh (see there for the user-facing description). Targets:

  qedfuse   qedfuse over a fresh QED image
  qsd       qemu-storage-daemon --export type=fuse over a QED image of the same geometry
  null      the same daemon over a null-co device (read-zeroes=on): the FUSE transport ceiling
  plain     a sparse raw file on the host filesystem (no FUSE at all)

Every target runs the same phases, each phase on a fresh image:

  set W  seq-write   1 MiB sequential writes into the fresh image (allocating, size-based)
  set A  seq-read    1 MiB sequential reads of a fully written image (time-based)
         rand-read-qd1 / rand-read-qd32   4 KiB random reads (time-based)
         rand-write-qd32                  4 KiB random writes over the allocated data
         loop-rand-read-qd32 / loop-rand-write-qd32
                     the 4 KiB pair through `losetup --direct-io=on` on the mount
  set B  alloc-write-64k  64 KiB random writes at iodepth 16 into a fresh image (size-based:
                     fio's random map writes every 64 KiB block once, so each write allocates)
  set C  dd-write    dd bs=1M conv=fsync,notrunc (buffered) into a fresh image

Time-based jobs run each target in turn, repeat times, each round starting with another target;
the best round counts. Jobs that write fresh images (sets W, B and C) do the same on new images
every round, with the page cache synced and dropped before each target.

fio uses ioengine=libaio, direct=1, fallocate=none (so nothing is preallocated behind our back).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
GiB = 1 << 30

# Workloads in table order: key, label, kind ("bw" reports MiB/s, "iops" reports IOPS).
WORKLOADS = [
    ("seq-write", "seq write 1M qd8 (alloc)", "bw"),
    ("seq-read", "seq read 1M qd8", "bw"),
    ("rand-read-qd1", "rand read 4k qd1", "iops"),
    ("rand-read-qd32", "rand read 4k qd32", "iops"),
    ("rand-write-qd32", "rand write 4k qd32", "iops"),
    ("alloc-write-64k", "rand write 64k qd16 (alloc)", "iops"),
    ("dd-write", "dd 1M buffered conv=fsync", "bw"),
    ("loop-rand-read-qd32", "loop: rand read 4k qd32", "iops"),
    ("loop-rand-write-qd32", "loop: rand write 4k qd32", "iops"),
]
WORKLOAD_KIND = {k: kind for k, _, kind in WORKLOADS}
# Workloads where the null-device ceiling is a meaningful reference.
CEILING_WORKLOADS = {"rand-read-qd1", "rand-read-qd32", "rand-write-qd32", "seq-read",
                     "loop-rand-read-qd32", "loop-rand-write-qd32"}

TARGETS = ["qedfuse", "qedfuse_uring", "qsd", "null", "plain"]
# qedfuse over each FUSE transport: /dev/fuse (--io-uring=off) and FUSE over io_uring
# (--io-uring=on; the kernel's switch is turned on for the run and restored afterwards).
QEDFUSE_TARGETS = ["qedfuse", "qedfuse_uring"]
TRANSPORT_SHORT = {"qedfuse": "dev", "qedfuse_uring": "uring"}  # in ratio column headers
TARGET_LABEL = {
    "qedfuse": "qedfuse-dev",
    "qedfuse_uring": "qedfuse-uring",
    "qsd": "qsd-qed",
    "null": "qsd-null",
    "plain": "plain-file",
}

PROFILES = {
    # data: sets W and A region; alloc64: set B region; dd: set C bytes; runtime: time-based jobs.
    # repeat: every job runs that many times, the targets interleaved and rotated (jobs that
    # write fresh images on new images each time); the best run counts (load from elsewhere on
    # the machine only ever slows a run down).
    "quick": dict(data=1 * GiB, alloc64=2 * GiB, dd=512 * MiB, runtime=2, ramp=0, repeat=3),
    "full": dict(data=4 * GiB, alloc64=8 * GiB, dd=2 * GiB, runtime=15, ramp=0, repeat=3),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failure(Exception):
    pass


class Interrupted(Exception):
    pass


def run(cmd, check=True, capture=False, timeout=None, **kw):
    res = subprocess.run(cmd, check=False, text=True, timeout=timeout,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None, **kw)
    if check and res.returncode != 0:
        detail = (res.stderr or "").strip() if capture else ""
        raise Failure(f"command failed ({res.returncode}): {' '.join(cmd)}"
                      + (f": {detail}" if detail else ""))
    return res


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == path:
                return True
    return False


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"warning: cannot drop caches ({e}); results may carry cached state")
        return False


def proc_mem(pid):
    """VmRSS / VmHWM of a live process in KiB, or None."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        return None
    return out


def human(nbytes):
    if nbytes % GiB == 0:
        return f"{nbytes // GiB}G"
    return f"{nbytes // MiB}M"


class Cleanup:
    """Everything that must be undone, in reverse order, whatever happens."""

    def __init__(self):
        self.loops = []
        self.daemons = []  # (Target, )

    def run_all(self):
        for dev in reversed(self.loops):
            subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
        self.loops.clear()
        for t in list(reversed(self.daemons)):
            try:
                t.stop()
            except Exception as e:  # keep cleaning up the rest
                log(f"warning: stopping {t.name}: {e}")
        self.daemons.clear()


CLEANUP = Cleanup()


class Target:
    """A mounted (or plain) raw view of a fresh image."""

    name = "?"

    def __init__(self, work, args):
        self.work = work
        self.args = args
        self.proc = None
        self.path = None  # what fio/dd use
        self.log_path = None

    def daemon_pid(self):
        return self.proc.pid if self.proc else None

    def start(self, size, tag):
        raise NotImplementedError

    def _spawn_and_wait_mount(self, cmd, mnt, tag):
        open(mnt, "a").close()  # FUSE mounts over a file need an existing regular file
        self.log_path = os.path.join(self.work, f"{self.name}-{tag}.log")
        logf = open(self.log_path, "w")
        logf.write(" ".join(cmd) + "\n")
        logf.flush()
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        CLEANUP.daemons.append(self)
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):
            if self.proc.poll() is not None:
                raise Failure(f"{self.name} exited with {self.proc.returncode} before mounting; "
                              f"log: {self.log_path}:\n{open(self.log_path).read().strip()}")
            if time.monotonic() > deadline:
                raise Failure(f"{self.name}: mount did not appear within 30 s")
            time.sleep(0.02)
        self.mnt = mnt
        self.path = mnt

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"warning: {self.name} ignored SIGTERM for 60 s; killing it")
                self.proc.kill()
                self.proc.wait()
        mnt = getattr(self, "mnt", None)
        if mnt and is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
            if is_mounted(mnt):
                subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
        if self in CLEANUP.daemons:
            CLEANUP.daemons.remove(self)
        rc = self.proc.returncode
        self.proc = None
        if rc not in (0, -signal.SIGTERM):
            log(f"warning: {self.name} exited with status {rc} (log: {self.log_path})")


def create_qed(img, size):
    if os.path.exists(img):
        os.unlink(img)
    run(["qemu-img", "create", "-q", "-f", "qed", "-o", "cluster_size=65536,table_size=4",
         img, str(size)])


class QedfuseTarget(Target):
    name = "qedfuse"
    transport = "--io-uring=off"

    def start(self, size, tag):
        img = os.path.join(self.work, f"{self.name}-{tag}.qed")
        create_qed(img, size)
        self.image = img
        mnt = os.path.join(self.work, f"{self.name}-{tag}.raw")
        cmd = [self.args.qedfuse, "-f", self.transport] + self.args.qedfuse_opts + [img, mnt]
        self._spawn_and_wait_mount(cmd, mnt, tag)


class QedfuseUringTarget(QedfuseTarget):
    name = "qedfuse_uring"
    transport = "--io-uring=on"


class QsdTarget(Target):
    name = "qsd"

    def start(self, size, tag):
        img = os.path.join(self.work, f"qsd-{tag}.qed")
        create_qed(img, size)
        self.image = img
        mnt = os.path.join(self.work, f"qsd-{tag}.raw")
        cmd = ["qemu-storage-daemon",
               "--blockdev", f"driver=file,node-name=file,filename={img}",
               "--blockdev", "driver=qed,node-name=qed,file=file",
               "--export", f"type=fuse,id=exp,node-name=qed,mountpoint={mnt},writable=on"]
        self._spawn_and_wait_mount(cmd, mnt, tag)


class NullTarget(Target):
    name = "null"

    def start(self, size, tag):
        self.image = None
        mnt = os.path.join(self.work, f"null-{tag}.raw")
        cmd = ["qemu-storage-daemon",
               "--blockdev", f"driver=null-co,node-name=null,size={size},read-zeroes=on",
               "--export", f"type=fuse,id=exp,node-name=null,mountpoint={mnt},writable=on"]
        self._spawn_and_wait_mount(cmd, mnt, tag)


class PlainTarget(Target):
    name = "plain"

    def start(self, size, tag):
        path = os.path.join(self.work, f"plain-{tag}.raw")
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: writes allocate, like a fresh image
        self.image = path
        self.path = path

    def stop(self):
        pass


TARGET_CLASSES = {"qedfuse": QedfuseTarget, "qedfuse_uring": QedfuseUringTarget,
                  "qsd": QsdTarget, "null": NullTarget, "plain": PlainTarget}

URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def enable_fuse_uring():
    """Turns the kernel's FUSE-over-io_uring switch on; returns (value to restore or None,
    reason it is unavailable or None)."""
    try:
        with open(URING_PARAM) as f:
            old = f.read().strip()
    except OSError:
        return None, (f"this kernel has no FUSE over io_uring ({URING_PARAM} is missing; "
                      "needs Linux >= 6.14 with CONFIG_FUSE_IO_URING)")
    if old == "Y":
        return None, None
    try:
        with open(URING_PARAM, "w") as f:
            f.write("Y")
    except OSError as e:
        return None, f"cannot turn on {URING_PARAM}: {e}"
    return old, None


def restore_fuse_uring(old):
    if old is not None:
        with open(URING_PARAM, "w") as f:
            f.write(old)


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def fio(args, name, filename, rw, bs, iodepth, size, time_based, extra=(), pid=None):
    """Run one fio job; returns a result dict (iops, MiB/s, latency, daemon CPU per I/O).

    No ramp time: the daemon's CPU time is measured over the whole job and divided by every
    I/O fio issued."""
    args.fio_seq += 1
    out = os.path.join(args.fio_dir, f"{args.fio_seq:03d}-{name}.json")
    cmd = ["fio", f"--name={name}", f"--filename={filename}", "--ioengine=libaio", "--direct=1",
           f"--rw={rw}", f"--bs={bs}", f"--iodepth={iodepth}", f"--size={size}",
           "--fallocate=none", "--numjobs=1", "--thread", "--output-format=json",
           f"--output={out}"]
    if time_based:
        cmd += ["--time_based", f"--runtime={args.runtime:g}", f"--ramp_time={args.ramp:g}"]
        if rw.startswith("rand"):
            cmd.append("--norandommap")
    else:
        cmd.append(f"--runtime={args.cap}")  # safety cap; normally the size ends the job
    cmd += list(extra)
    cpu0 = cpu_seconds(pid)
    res = run(cmd, check=False, capture=True)
    cpu1 = cpu_seconds(pid)
    if res.returncode != 0:
        raise Failure(f"fio {name} failed ({res.returncode}): {(res.stderr or '').strip()[-400:]}")
    with open(out) as f:
        data = json.load(f)
    job = data["jobs"][0]
    if job.get("error"):
        raise Failure(f"fio {name}: job error {job['error']}")
    side = job["write"] if "write" in rw else job["read"]
    r = {
        "iops": side["iops"],
        "mib_s": side["bw_bytes"] / MiB,
        "bytes": side["io_bytes"],
        "runtime_s": side["runtime"] / 1000.0,
        "lat_mean_us": side["clat_ns"]["mean"] / 1000.0,
        "fio": " ".join(cmd[:-2]),
    }
    if cpu0 is not None and cpu1 is not None and side["total_ios"]:
        r["daemon_cpu_us_per_io"] = (cpu1 - cpu0) * 1e6 / side["total_ios"]
    pct = side["clat_ns"].get("percentile") or {}
    if "99.000000" in pct:
        r["lat_p99_us"] = pct["99.000000"] / 1000.0
    if not time_based and side["io_bytes"] < size_bytes(size):
        r["note"] = f"stopped by the {args.cap} s cap after {side['io_bytes'] // MiB} MiB"
    return r


def size_bytes(s):
    s = str(s)
    mult = {"K": 1 << 10, "M": MiB, "G": GiB}
    if s[-1] in mult:
        return int(s[:-1]) * mult[s[-1]]
    return int(s)


def dd_write(args, path, nbytes, pid=None):
    src = args.dd_source
    # The source lives in the page cache so dd measures the target, not the host disk.
    with open(src, "rb") as f:
        while f.read(8 * MiB):
            pass
    count = nbytes // MiB
    cmd = ["dd", f"if={src}", f"of={path}", "bs=1M", f"count={count}", "conv=fsync,notrunc",
           "status=none"]
    t0 = time.monotonic()
    cpu0 = cpu_seconds(pid)
    run(cmd, capture=True)
    cpu1 = cpu_seconds(pid)
    dt = time.monotonic() - t0
    extra = {}
    if cpu0 is not None and cpu1 is not None:
        extra["daemon_cpu_us_per_io"] = (cpu1 - cpu0) * 1e6 / count  # per MiB written
    return extra | {"iops": count / dt, "mib_s": count / dt, "bytes": nbytes, "runtime_s": dt,
            "cmd": " ".join(cmd)}


class LoopDevice:
    def __init__(self, path):
        self.path = path
        self.dev = None

    def __enter__(self):
        res = run(["losetup", "-f", "--show", "--direct-io=on", self.path], capture=True)
        self.dev = res.stdout.strip()
        CLEANUP.loops.append(self.dev)
        return self.dev

    def __exit__(self, *exc):
        run(["losetup", "-d", self.dev], check=False, capture=True)
        if self.dev in CLEANUP.loops:
            CLEANUP.loops.remove(self.dev)
        # losetup -d detaches asynchronously; wait until the backing file is released.
        name = os.path.basename(self.dev)
        for _ in range(200):
            if not os.path.exists(f"/sys/block/{name}/loop/backing_file"):
                break
            time.sleep(0.01)
        return False


def record_mem(target, results, phase):
    pid = target.daemon_pid()
    if pid is None:
        return
    mem = proc_mem(pid)
    if mem:
        results.setdefault("_memory", {})[phase] = mem


def loadavg(args=None, label=None):
    try:
        with open("/proc/loadavg") as f:
            value = float(f.read().split()[0])
    except (OSError, ValueError):
        return None
    if args is not None:
        args.loads[label] = value
    return value


SET_A = ["seq-read", "rand-read-qd1", "rand-read-qd32", "rand-write-qd32",
         "loop-rand-read-qd32", "loop-rand-write-qd32"]


def run_all(args, targets, all_res):
    """Runs every phase, workload-major.

    Each set mounts a fresh image for every target at once; each workload then runs on the
    targets back to back, so a change in machine load during the run hits all targets alike
    instead of skewing one target's whole column.
    """
    p = args.profile
    wanted = lambda key: not args.only or key in args.only
    for t in targets:
        all_res.setdefault(t, {})

    samples = {}  # (target, key) -> [result, ...] of a repeated job

    def rotated(live, rep):
        # Each repetition starts with a different target, so no target always runs first.
        items = list(live.items())
        k = rep % len(items) if items else 0
        return items[k:] + items[:k]

    def sample(t, key, fn):
        if "error" in all_res[t].get(key, {}):
            return  # failed once: not repeated
        try:
            r = fn()
            samples.setdefault((t, key), []).append(r)
            unit = f"{r['mib_s']:.1f} MiB/s" if WORKLOAD_KIND[key] == "bw" else \
                f"{r['iops']:.0f} IOPS"
            log(f"  {key:22s} {TARGET_LABEL[t]:10s} {unit}"
                + (f"  ({r['note']})" if "note" in r else ""))
        except Failure as e:
            all_res[t][key] = {"error": str(e)}
            log(f"  {key:22s} {TARGET_LABEL[t]:10s} FAILED: {e}")

    def finish(key):
        """The best sample stands for the job; all samples are kept in the JSON."""
        field = "mib_s" if WORKLOAD_KIND[key] == "bw" else "iops"
        for t in targets:
            got = samples.pop((t, key), None)
            if not got or "error" in all_res[t].get(key, {}):
                continue
            best = dict(max(got, key=lambda r: r[field]))
            best["samples"] = [round(r[field], 1) for r in got]
            all_res[t][key] = best

    def start_all(size, tag, keys):
        live = {}
        for t in targets:
            obj = TARGET_CLASSES[t](args.work, args)
            try:
                obj.start(size, tag)
                live[t] = obj
            except Failure as e:
                obj.stop()
                log(f"  {TARGET_LABEL[t]}: cannot start for set {tag}: {e}")
                for k in keys:
                    if wanted(k):
                        all_res[t][k] = {"error": f"start failed: {e}"}
        return live

    def stop_all(live, phase_name):
        for t, obj in live.items():
            record_mem(obj, all_res[t], phase_name)
            obj.stop()

    def settle():
        os.sync()
        if args.cold:
            drop_caches()

    def fresh_image_job(key, size, tag, run_one):
        """A job that writes into fresh images (allocating writes, dd): run args.repeat times,
        each time on new images with another target first, each target after a sync and a
        drop of the page cache.

        Run once per target, one target after the other, such a job is unfair to the later
        targets: they start while the host still writes back the earlier targets' gigabytes,
        and even after a sync alone the writer that came later measured up to 4x slower
        (scripts/bench/profiling.md, "Fair allocating-write rows")."""
        log(f"set {tag}: fresh {human(size)} images, {key} (load average "
            f"{loadavg(args, 'set ' + tag)})")
        for rep in range(args.repeat):
            live = start_all(size, f"{tag}{rep + 1}", [key])
            try:
                for t, obj in rotated(live, rep):
                    drop_caches()
                    sample(t, key, lambda: run_one(t, obj))
            finally:
                stop_all(live, f"set {tag} end")
        finish(key)

    # --- set W: allocating sequential 1 MiB writes into fresh images.
    if wanted("seq-write"):
        fresh_image_job("seq-write", p["data"], "W", lambda t, obj: fio(
            args, f"{t}-seq-write", obj.path, "write", "1M", 8, human(p["data"]), False,
            pid=obj.daemon_pid()))

    # --- set A: reads and overwrites of a fully written image.
    if any(wanted(k) for k in SET_A):
        drop_caches()
        log(f"set A: fresh {human(p['data'])} images (load average {loadavg(args, 'set A')})")
        live = start_all(p["data"], "A", SET_A)
        sz = human(p["data"])
        try:
            for t, obj in live.items():  # the reads need allocated data
                fio(args, f"{t}-fill", obj.path, "write", "1M", 8, sz, False)
            jobs = [("seq-read", "read", "1M", 8), ("rand-read-qd1", "randread", "4k", 1),
                    ("rand-read-qd32", "randread", "4k", 32),
                    ("rand-write-qd32", "randwrite", "4k", 32)]
            for key, rw, bs, qd in jobs:
                if not wanted(key):
                    continue
                for rep in range(args.repeat):
                    for t, obj in rotated(live, rep):
                        if rw.endswith("read"):
                            settle()
                        sample(t, key, lambda: fio(args, f"{t}-{key}", obj.path, rw, bs, qd, sz,
                                                   True, pid=obj.daemon_pid()))
                finish(key)
            for t, obj in live.items():
                record_mem(obj, all_res[t], "set A direct")
            loop_jobs = [("loop-rand-read-qd32", "randread"),
                         ("loop-rand-write-qd32", "randwrite")]
            if not args.no_loop and any(wanted(k) for k, _ in loop_jobs):
                devs = {}
                for t, obj in live.items():
                    try:
                        devs[t] = LoopDevice(obj.path)
                        devs[t].__enter__()
                    except Failure as e:
                        del devs[t]
                        for k, _ in loop_jobs:
                            all_res[t][k] = {"error": f"losetup failed: {e}"}
                try:
                    for key, rw in loop_jobs:
                        if not wanted(key):
                            continue
                        for rep in range(args.repeat):
                            for t, d in rotated(devs, rep):
                                if rw.endswith("read"):
                                    settle()
                                sample(t, key, lambda: fio(args, f"{t}-{key}", d.dev, rw, "4k",
                                                           32, sz, True,
                                                           pid=live[t].daemon_pid()))
                        finish(key)
                finally:
                    for d in devs.values():
                        d.__exit__(None, None, None)
        finally:
            stop_all(live, "set A end")

    # --- set B: 64 KiB random allocating writes into a fresh image.
    if wanted("alloc-write-64k"):
        fresh_image_job("alloc-write-64k", p["alloc64"], "B", lambda t, obj: fio(
            args, f"{t}-alloc64k", obj.path, "randwrite", "64k", 16, human(p["alloc64"]), False,
            pid=obj.daemon_pid()))

    # --- set C: buffered dd with a final fsync into a fresh image.
    if wanted("dd-write"):
        fresh_image_job("dd-write", p["dd"], "C", lambda t, obj: dd_write(
            args, obj.path, p["dd"], pid=obj.daemon_pid()))


def value_of(res, key):
    r = res.get(key)
    if not r or "error" in r:
        return None
    return r["mib_s"] if WORKLOAD_KIND[key] == "bw" else r["iops"]


def fmt_val(v, kind):
    if v is None:
        return "-"
    if kind == "bw":
        return f"{v:.0f} MiB/s"
    return f"{v / 1000:.1f}k IOPS" if v >= 1000 else f"{v:.0f} IOPS"


def ratio_columns(targets):
    """(header, numerator target, denominator target, ceiling-only) of the ratio columns."""
    qs = [t for t in QEDFUSE_TARGETS if t in targets]
    cols = []
    for q in qs:
        if "qsd" in targets:
            cols.append((f"{TRANSPORT_SHORT[q]}/qsd", q, "qsd", False))
        if "null" in targets:
            cols.append((f"{TRANSPORT_SHORT[q]}/null", q, "null", True))
    if len(qs) == 2:
        cols.append(("uring/dev", "qedfuse_uring", "qedfuse", False))
    return cols


def print_table(all_res, targets, skipped):
    cols = [TARGET_LABEL[t] for t in targets]
    ratios = ratio_columns(targets)
    header = ["workload"] + cols + [r[0] for r in ratios]
    rows = []
    for key, label, kind in WORKLOADS:
        if not any(key in all_res.get(t, {}) for t in targets):
            continue
        row = [label]
        for t in targets:
            r = all_res.get(t, {}).get(key)
            row.append("FAIL" if r and "error" in r else fmt_val(value_of(all_res.get(t, {}), key),
                                                                  kind))
        for _, num, den, ceiling in ratios:
            a = value_of(all_res.get(num, {}), key)
            b = value_of(all_res.get(den, {}), key)
            ok = a and b and (not ceiling or key in CEILING_WORKLOADS)
            row.append(f"{a / b:.2f}x" if ok else "-")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(header))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                        for i, c in enumerate(r)))
    for t, why in skipped.items():
        print(f"({TARGET_LABEL[t]} skipped: {why})")


def print_cpu_table(all_res, targets):
    """Daemon CPU time per request: far less sensitive to other load on the machine."""
    daemons = [t for t in targets if t in QEDFUSE_TARGETS + ["qsd", "null"]]
    if not daemons:
        return
    header = ["daemon CPU us per request"] + [TARGET_LABEL[t] for t in daemons]
    qs = [t for t in QEDFUSE_TARGETS if t in daemons] if "qsd" in daemons else []
    header += [f"qsd/{TRANSPORT_SHORT[q]}" for q in qs]
    rows = []
    for key, label, kind in WORKLOADS:
        vals = [(all_res.get(t, {}).get(key) or {}).get("daemon_cpu_us_per_io") for t in daemons]
        if all(v is None for v in vals):
            continue
        row = [label + (" (per MiB)" if key == "dd-write" else "")]
        row += ["-" if v is None else f"{v:.1f}" for v in vals]
        for qt in qs:
            q, s_ = vals[daemons.index(qt)], vals[daemons.index("qsd")]
            row.append(f"{s_ / q:.2f}x" if q and s_ else "-")
        rows.append(row)
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print()
    line = "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(header))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                        for i, c in enumerate(r)))


def print_memory(all_res, targets):
    lines = []
    for t in targets:
        mem = all_res.get(t, {}).get("_memory")
        if not mem:
            continue
        parts = [f"{ph}: RSS {m['VmRSS'] / 1024:.1f} MiB, HWM {m['VmHWM'] / 1024:.1f} MiB"
                 for ph, m in mem.items()]
        lines.append(f"  {TARGET_LABEL[t]:10s} " + "; ".join(parts))
    if lines:
        print("Daemon resident memory (/proc/PID/status, sampled at the end of each set):")
        print("\n".join(lines))


def write_chart(args, all_res, targets, out_dir):
    if not shutil.which("gnuplot"):
        log("warning: gnuplot not found; no chart (scripts/install-deps.sh installs gnuplot-nox)")
        return None
    dat = {}
    for kind in ("bw", "iops"):
        keys = [(key, label) for key, label, k in WORKLOADS
                if k == kind and any(value_of(all_res.get(t, {}), key) for t in targets)]
        if not keys:
            continue
        path = os.path.join(out_dir, f"chart-{kind}.dat")
        with open(path, "w") as f:
            f.write("workload " + " ".join(TARGET_LABEL[t] for t in targets) + "\n")
            for key, label in keys:
                vals = []
                for t in targets:
                    v = value_of(all_res.get(t, {}), key)
                    vals.append("0" if v is None else (f"{v:.1f}" if kind == "bw"
                                                        else f"{v / 1000:.2f}"))
                f.write(f'"{label}" ' + " ".join(vals) + "\n")
        dat[kind] = path
    if not dat:
        return None
    png = os.path.join(out_dir, "results.png")
    gp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chart.gp")
    title = f"qedfuse bench ({args.mode}, {time.strftime('%Y-%m-%d %H:%M')})"
    res = run(["gnuplot", "-e", f"bwfile='{dat.get('bw', '')}'",
               "-e", f"iopsfile='{dat.get('iops', '')}'",
               "-e", f"outfile='{png}'", "-e", f"ntargets={len(targets)}",
               "-e", f"charttitle='{title}'", gp], check=False, capture=True)
    if res.returncode != 0:
        log(f"warning: gnuplot failed: {res.stderr.strip()}")
        return None
    return png


def tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick")
    g.add_argument("--full", dest="mode", action="store_const", const="full")
    ap.add_argument("--out", default=None, help="result directory (results.json, results.png)")
    ap.add_argument("--work", default=None, help="scratch directory for images and mounts")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--only", default=None, help="comma-separated workload keys")
    ap.add_argument("--qedfuse", default=None, help="qedfuse binary")
    ap.add_argument("--qedfuse-opt", dest="qedfuse_opts", action="append", default=[],
                    help="extra qedfuse option (repeatable), e.g. --qedfuse-opt=--aio=threads")
    ap.add_argument("--skip-reason", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runtime", type=float, default=None)
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs of each time-based job per target (the best is reported)")
    ap.add_argument("--cold", action="store_true",
                    help="also drop the page cache before every read phase")
    ap.add_argument("--no-loop", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    args.mode = args.mode or "quick"
    args.profile = PROFILES[args.mode]
    args.runtime = args.runtime or args.profile["runtime"]
    args.ramp = args.profile["ramp"]
    args.repeat = max(1, args.repeat or args.profile["repeat"])
    args.cap = 120
    args.loads = {}
    args.only = set(args.only.split(",")) if args.only else None
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (FUSE mounts, loop devices, drop_caches)")

    out_dir = os.path.abspath(args.out or os.path.join(
        os.getcwd(), "bench-results", time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    args.fio_dir = os.path.join(out_dir, "fio")
    os.makedirs(args.fio_dir, exist_ok=True)
    args.fio_seq = 0
    args.work = args.work or tempfile.mkdtemp(prefix="qedfuse-bench.", dir="/var/tmp")
    os.makedirs(args.work, exist_ok=True)

    skipped = {}
    for q in QEDFUSE_TARGETS:
        if q in targets and (not args.qedfuse or not os.access(args.qedfuse, os.X_OK)):
            skipped[q] = args.skip_reason or (
                f"binary not found or not executable: {args.qedfuse}")
            targets.remove(q)
            log(f"SKIPPING {TARGET_LABEL[q]} target: {skipped[q]}")
    uring_restore = None
    if "qedfuse_uring" in targets:
        uring_restore, why = enable_fuse_uring()
        if why:
            skipped["qedfuse_uring"] = why
            targets.remove("qedfuse_uring")
            log(f"SKIPPING {TARGET_LABEL['qedfuse_uring']} target: {why}")

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    all_res = {}
    started = time.monotonic()
    status = 0
    try:
        if not args.only or "dd-write" in args.only:
            args.dd_source = os.path.join(args.work, "dd-source.bin")
            log(f"writing {human(args.profile['dd'])} of random data for dd")
            with open("/dev/urandom", "rb") as src, open(args.dd_source, "wb") as dst:
                left = args.profile["dd"]
                while left:
                    chunk = src.read(min(left, 4 * MiB))
                    dst.write(chunk)
                    left -= len(chunk)
        run_all(args, targets, all_res)
    except Interrupted as e:
        log(f"interrupted by {e}; cleaning up")
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        CLEANUP.run_all()
        restore_fuse_uring(uring_restore)
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
        else:
            log(f"scratch directory kept: {args.work}")

    elapsed = time.monotonic() - started
    doc = {
        "mode": args.mode,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "command": os.environ.get("BENCH_COMMAND") or " ".join(sys.argv),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "fio": tool_version(["fio", "--version"]),
                 "qemu-storage-daemon": tool_version(["qemu-storage-daemon", "--version"])},
        "params": {"data_region": args.profile["data"], "alloc64_region": args.profile["alloc64"],
                   "dd_bytes": args.profile["dd"], "runtime_s": args.runtime,
                   "ramp_s": args.ramp, "repeat": args.repeat, "cold_reads": args.cold,
                   "image": "qemu-img create -f qed -o cluster_size=65536,table_size=4",
                   "qedfuse": args.qedfuse, "qedfuse_opts": args.qedfuse_opts,
                   "load_average": args.loads,
                   "cache_note": "page cache dropped before each set of fresh images; reads "
                                 "see the host page cache warm with the data just written"
                                 + ("" if not args.cold else
                                    ", except that it is also dropped before each read phase")},
        "targets": {TARGET_LABEL[t]: r for t, r in all_res.items()},
        "skipped": {TARGET_LABEL[t]: why for t, why in skipped.items()},
        "workloads": {k: {"label": label, "unit": "MiB/s" if kind == "bw" else "IOPS"}
                      for k, label, kind in WORKLOADS},
    }
    for qt in QEDFUSE_TARGETS:
        ratios = {}
        q = all_res.get(qt, {})
        for key, _, _ in WORKLOADS:
            qv = value_of(q, key)
            sv = value_of(all_res.get("qsd", {}), key)
            nv = value_of(all_res.get("null", {}), key)
            entry = {}
            if qv and sv:
                entry["vs_qsd"] = round(qv / sv, 3)
            if qv and nv and key in CEILING_WORKLOADS:
                entry["vs_null"] = round(qv / nv, 3)
            if entry:
                ratios[key] = entry
        doc["ratios_" + TARGET_LABEL[qt].replace("-", "_")] = ratios
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)

    print()
    print(f"Results ({args.mode}, {elapsed:.0f} s; 1 MiB seq jobs at iodepth 8; data region "
          f"{human(args.profile['data'])}; timed jobs: best of {args.repeat} x "
          f"{args.runtime:g} s; load average {', '.join(f'{v:g}' for v in args.loads.values())}):")
    print_table(all_res, targets, skipped)
    print_cpu_table(all_res, targets)
    print_memory(all_res, targets)
    png = write_chart(args, all_res, targets, out_dir)
    print(f"JSON: {os.path.join(out_dir, 'results.json')}")
    if png:
        print(f"Chart: {png}")
    failed = [f"{t}/{k}" for t, r in all_res.items() for k, v in r.items()
              if isinstance(v, dict) and "error" in v]
    failed += [f"{t} ({e})" for t, r in all_res.items() for e in r.get("_errors", [])]
    if failed:
        print(f"FAILED phases: {', '.join(failed)}")
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
