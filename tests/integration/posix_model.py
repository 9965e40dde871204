#!/usr/bin/env python3
"""Model-based random exerciser of a mounted qedfuse file (Python 3.11, standard library + ctypes).

  posix_model.py --dir DIR [--qedfuse PATH] [--seed N] [--ops N] [--phases N]
                 [--cache writeback|none] [--writeback-cache on|off] [--aio io_uring|threads]
                 [--extra-opt OPT ...] [--foreground] [--skip CLASS,...] [--size BYTES]
                 [--cluster-size N] [--table-size N] [--max-size BYTES] [--verbose]

It creates DIR/img.qed with qemu-img (geometry and size from the seed unless given), mounts it
on DIR/disk.raw with qedfuse as the user running this script (scripts/posix-model.sh runs it as
root and, through setpriv, as uid 65534 mounting its own image), and runs a random sequence of
operations on the mounted file, derived from --seed alone: buffered, vectored, positional and
O_DIRECT reads and writes at any offset (unaligned, across the end, past it), appends (O_APPEND,
RWF_APPEND, `cat >>`, dd oflag=append), dd with and without conv=notrunc, `cat >` (O_TRUNC),
mmap reads and writes with msync, truncate/ftruncate up, down and to the same size, fallocate
in every mode, copy_file_range within the file and with a file elsewhere, sendfile both ways,
cp --sparse=always, lseek SEEK_SET/CUR/END/DATA/HOLE, fsync/fdatasync, O_SYNC/O_DSYNC and
RWF_DSYNC writes, stat, chmod/chown, utimes, growing past the format's maximum, descriptors
opened and closed throughout. Every operation is applied to an in-memory model of the disk and
every byte read back is compared with it. The model implements the decided semantics of the
mounted file:

  * a write, append or fallocate (mode 0 or ZERO_RANGE without KEEP_SIZE) that ends past the end
    grows the disk as a truncate grow does; the image holds the size rounded up to 512 bytes and
    the extra bytes read as zeros, so stat may report either size; a write is never short;
  * every shrink (truncate, ftruncate, open with O_TRUNC) fails with EPERM and changes nothing; a
    truncate to the current size succeeds;
  * fallocate mode 0 / KEEP_SIZE: success, nothing changes inside; PUNCH_HOLE|KEEP_SIZE and
    ZERO_RANGE read as zeros and leave whole clusters as holes (SEEK_HOLE and `qemu-img map`
    report them); COLLAPSE/INSERT/UNSHARE/WRITE_ZEROES and PUNCH_HOLE without KEEP_SIZE fail
    with EOPNOTSUPP and change nothing;
  * SEEK_DATA/SEEK_HOLE never skip data (a hole reads as zeros) and report every cluster that
    was never written or was punched as a whole as a hole, also with the kernel writeback cache;
  * the disk belongs to the mounting user, mode 0600 (umask=/uid=/gid= in --extra-opt change
    that); chmod/chown/utimes work for the mount's lifetime;
  * growing past the format's maximum size fails with EFBIG and changes nothing.

Descriptors (O_RDONLY/O_WRONLY/O_RDWR, O_APPEND, O_DIRECT, O_SYNC/O_DSYNC, O_TRUNC) are opened and
closed during the run. Between phases the file is unmounted cleanly (everything must be there)
or the daemon is killed with SIGKILL (everything fsync'd must be there: each byte must hold its
value as of the last fsync or a value written since). At the end: clean unmount, `qemu-img
check` (exit 0), `qemu-img map` (punched clusters hold no data) and `qemu-img convert -O raw`
equal to the model byte for byte, with the model's size rounded up to 512.

Output: on the first failure, `FAIL check=NAME ...` with the seed, the operation, what was
expected and what was seen, the tail of the operation log and a command that repeats the run;
exit status 1. The last line is `RESULT status=pass|fail ops=N remounts=N crashes=N kinds=K:N,...`.
--skip takes feature classes (for debugging only; the test command runs everything): grow,
shrink, append, shell, direct, vector, mmap, falloc, punch, unsupported, copy, sendfile, cp, seek,
sync, osync, perm, times, limit, blocks, remount, crash, map.
"""

import argparse
import collections
import ctypes
import errno
import json
import mmap
import os
import random
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback

PAGE = 4096
SECTOR = 512
MIB = 1 << 20

# fallocate(2) itself, shared with the soak workload (os.posix_fallocate would emulate mode 0 by
# writing zeros).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from soak import (  # noqa: E402
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate)

FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40
FALLOC_FL_WRITE_ZEROES = 0x80
PR_SET_CHILD_SUBREAPER = 36

SKIP_CLASSES = {
    "grow", "shrink", "append", "shell", "direct", "vector", "mmap", "falloc", "punch",
    "unsupported", "copy", "sendfile", "cp", "seek", "sync", "osync", "perm", "times", "limit",
    "blocks", "remount", "crash", "map"
}


def round_up(x, a):
    return (x + a - 1) // a * a


def errname(e):
    return errno.errorcode.get(e, str(e))


def hexdump(b, n=16):
    return b[:n].hex(" ") + (" ..." if len(b) > n else "")


class Failure(Exception):
    """A property of the mounted file does not hold."""

    def __init__(self, check, message):
        super().__init__(message)
        self.check = check
        self.message = message


# ---------------------------------------------------------------------------------------------
# The model of the disk.
# ---------------------------------------------------------------------------------------------


class Model:
    """Sparse byte model of the disk: 4 KiB pages (absent = zeros).

    size is the size a regular file would have; the image holds round_up(size, 512) and the
    bytes in between are zeros (so every byte at or past size is zero in the model). touched
    holds the clusters that may hold data; every other cluster was never written since the image
    was created, or was last covered by a punch or zero range as a whole, and must be reported
    as a hole (zeroing part of a cluster counts as writing it). versions[page] lists the contents the page had since the last fsync (the first
    is the durable one): after a crash each byte must equal that byte of one of them.
    """

    def __init__(self, size, cluster):
        self.pages = {}
        self.size = size
        self.cluster = cluster
        self.touched = set()
        self.last_op = {}  # page -> (op number, kind) that last changed it
        self.versions = {}
        self.durable_size = size
        self.dirty_clusters = set()  # clusters changed since the last fsync
        self.nversions = 0

    def disk_size(self):
        return round_up(self.size, SECTOR)

    def read(self, off, n):
        out = bytearray(n)
        pos, end = off, off + n
        while pos < end:
            pi, po = divmod(pos, PAGE)
            take = min(PAGE - po, end - pos)
            p = self.pages.get(pi)
            if p is not None:
                out[pos - off:pos - off + take] = p[po:po + take]
            pos += take
        return bytes(out)

    def first_nonzero(self, off, end):
        """First offset in [off, end) whose byte is not zero, or None."""
        pos = off
        while pos < end:
            pi, po = divmod(pos, PAGE)
            take = min(PAGE - po, end - pos)
            p = self.pages.get(pi)
            if p is not None:
                chunk = p[po:po + take]
                if any(chunk):
                    return pos + next(i for i, b in enumerate(chunk) if b)
            pos += take
        return None

    def _change(self, off, n, data, op):
        pos, end = off, off + n
        while pos < end:
            pi, po = divmod(pos, PAGE)
            take = min(PAGE - po, end - pos)
            p = self.pages.get(pi)
            if pi not in self.versions:
                self.versions[pi] = [bytes(p) if p is not None else bytes(PAGE)]
                self.nversions += 1
            if p is None:
                if data is None:
                    pos += take
                    self.versions[pi].append(bytes(PAGE))
                    self.nversions += 1
                    continue
                p = self.pages[pi] = bytearray(PAGE)
            if data is None:
                p[po:po + take] = bytes(take)
            else:
                p[po:po + take] = data[pos - off:pos - off + take]
            self.versions[pi].append(bytes(p))
            self.nversions += 1
            if data is None and not any(p):
                del self.pages[pi]
            self.last_op[pi] = op
            pos += take
        for c in range(off // self.cluster, (end - 1) // self.cluster + 1):
            self.dirty_clusters.add(c)

    def write(self, off, data, op):
        if not data:
            return
        self._change(off, len(data), data, op)
        for c in range(off // self.cluster, (off + len(data) - 1) // self.cluster + 1):
            self.touched.add(c)
        self.size = max(self.size, off + len(data))

    def zero(self, off, n, op, grow):
        """Zeroes [off, off+n) (clipped to the disk unless grow) like a punch or zero range."""
        if grow:
            self.size = max(self.size, off + n)
        end = min(off + n, self.disk_size())
        if end <= off:
            return
        self._change(off, end - off, None, op)
        cs = self.cluster
        for c in range(off // cs, (end - 1) // cs + 1):
            # Whole clusters inside the disk become holes. Zeroing part of a cluster may write
            # zeros into it (as QEMU does), so a partial cluster may hold data afterwards.
            if c * cs >= off and (c + 1) * cs <= end:
                self.touched.discard(c)
            else:
                self.touched.add(c)

    def mark_touched(self, off, n):
        for c in range(off // self.cluster, (off + n - 1) // self.cluster + 1):
            self.touched.add(c)

    def known_hole(self, pos):
        return pos // self.cluster not in self.touched

    def next_known_hole(self, pos, end):
        """First offset >= pos (below end) inside a cluster that must be a hole, or None."""
        c = pos // self.cluster
        while c * self.cluster < end:
            if c not in self.touched:
                return max(pos, c * self.cluster)
            c += 1
        return None

    def synced(self):
        """Everything so far is durable (a successful fsync/fdatasync)."""
        self.versions.clear()
        self.nversions = 0
        self.dirty_clusters.clear()
        self.durable_size = self.size

    def synced_range(self, off, n):
        """[off, off+n) is durable (an O_SYNC/O_DSYNC write, msync(MS_SYNC))."""
        end = off + n
        for pi in range(off // PAGE, (end - 1) // PAGE + 1 if n else off // PAGE):
            vs = self.versions.get(pi)
            if vs is None:
                continue
            lo, hi = max(off, pi * PAGE) - pi * PAGE, min(end, (pi + 1) * PAGE) - pi * PAGE
            cur = self.pages.get(pi)
            cur = bytes(cur) if cur is not None else bytes(PAGE)
            self.versions[pi] = [v[:lo] + cur[lo:hi] + v[hi:] for v in vs]
        self.durable_size = max(self.durable_size, min(end, self.size))

    def allowed_after_crash(self, pi, got):
        """None if page pi may read as got after a crash, else the first bad offset in it."""
        vs = self.versions.get(pi)
        cur = self.pages.get(pi)
        cur = bytes(cur) if cur is not None else bytes(PAGE)
        if vs is None:
            vs = [cur]
        if any(got == v[:len(got)] for v in vs):
            return None
        for i, b in enumerate(got):
            if all(v[i] != b for v in vs):
                return i
        return None

    def adopt(self, size, pages):
        """After a crash: the disk now is what was read back (already checked)."""
        self.pages = pages
        self.size = size
        self.touched |= self.dirty_clusters
        self.synced()


# ---------------------------------------------------------------------------------------------
# The mount.
# ---------------------------------------------------------------------------------------------


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == path:
                return True
    return False


class Mount:
    """The qedfuse daemon serving the image. By default the mount command itself is run (it
    returns once the mount is live, as users run it); with --foreground the daemon runs with -f
    and the mount counts as live when it shows in /proc/self/mountinfo."""

    def __init__(self, args, img, mnt, logpath):
        self.args = args
        self.img = img
        self.mnt = mnt
        self.logpath = logpath
        self.pid = None
        self.proc = None  # with --foreground
        self.conn = None  # the FUSE connection's number in /sys/fs/fuse/connections

    def command(self):
        a = self.args
        cmd = [a.qedfuse] + (["-f"] if a.foreground else [])
        cmd += [f"--cache={a.cache}", f"--aio={a.aio}"]
        if a.writeback_cache:
            cmd.append(f"--writeback-cache={a.writeback_cache}")
        return cmd + a.extra_opts + [self.img, self.mnt]

    def env(self):
        """The daemon's environment: sanitizer reports go to files next to the log (a detached
        daemon has no stderr)."""
        env = dict(os.environ)
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            prefix = env[var] + ":" if env.get(var) else ""
            env[var] = f"{prefix}log_path={self.logpath}.sanitizer"
        return env

    def sanitizer_reports(self, n=40):
        d, base = os.path.split(self.logpath)
        out = []
        for name in sorted(os.listdir(d)):
            if name.startswith(base + ".sanitizer"):
                with open(os.path.join(d, name), errors="replace") as f:
                    out += [f"{name}: {line.rstrip()}" for line in f.readlines()[:n]]
        return out

    def mount(self):
        with open(self.logpath, "ab") as log:
            log.write(f"=== {shlex.join(self.command())}\n".encode())
            log.flush()
            if self.args.foreground:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log, start_new_session=True,
                                             env=self.env())
                self.pid = self.proc.pid
                deadline = time.monotonic() + 60
                while not is_mounted(self.mnt):
                    if self.proc.poll() is not None:
                        self.proc = self.pid = None
                        raise Failure("mount", f"qedfuse -f exited: {self.log_tail()}")
                    if time.monotonic() > deadline:
                        raise Failure("mount", "qedfuse -f did not mount within 60 s")
                    time.sleep(0.001)
                self.conn = os.minor(os.stat(self.mnt).st_dev)
                return
            r = subprocess.run(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               timeout=120, env=self.env())
        if r.returncode != 0:
            raise Failure("mount", f"qedfuse exited with status {r.returncode}: "
                          f"{self.log_tail()}")
        if not is_mounted(self.mnt):
            raise Failure("mount", "qedfuse returned 0 but the file is not mounted")
        self.conn = os.minor(os.stat(self.mnt).st_dev)
        self.pid = self.find_daemon()
        if self.pid is None:
            raise Failure("mount", "no qedfuse process serves the mount")

    def find_daemon(self):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if (argv and os.path.basename(argv[0]) == b"qedfuse" and
                    self.mnt.encode() in argv):
                return int(d)
        return None

    def wait_gone(self, timeout):
        """Waits for the daemon to exit: (True, exit status or None if unknown) or (False,
        None). This process is a child subreaper, so the daemonised qedfuse is our child."""
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False, None
            self.proc = None
            return True, rc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == self.pid:
                    return True, os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # not our child: watch /proc (a zombie counts as gone)
                try:
                    with open(f"/proc/{self.pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            return True, None
                except OSError:
                    return True, None
            time.sleep(0.005)
        return False, None

    def unmount(self):
        r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure("unmount", f"fusermount3 -u failed: {r.stderr.strip()}")
        gone, rc = self.wait_gone(120)
        if not gone:
            raise Failure("daemon_exit", "qedfuse did not exit within 120 s of the unmount")
        self.pid = None
        if rc:  # (None: unknown)
            raise Failure("daemon_exit", f"qedfuse exited with status {rc} after a clean "
                          f"unmount: {self.log_tail()}")

    def crash(self):
        os.kill(self.pid, signal.SIGKILL)
        self.wait_gone(60)
        self.pid = None
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)
        if is_mounted(self.mnt):
            raise Failure("unmount", "the dead mount is still there after fusermount3 -u -z")

    def cleanup(self):
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.wait_gone(30)
            self.pid = None
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

    def abort(self):
        """After a hang: kill the daemon and abort its FUSE connection (root only), so that
        nothing stays blocked on the mount."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.conn is not None:
            try:
                with open(f"/sys/fs/fuse/connections/{self.conn}/abort", "w") as f:
                    f.write("1")
            except OSError:
                return
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

    def log_tail(self, n=8):
        try:
            with open(self.logpath, errors="replace") as f:
                lines = [line.rstrip() for line in f if not line.startswith("=== ")]
            return " | ".join(lines[-n:]) or "(none)"
        except OSError:
            return "(no log)"


# ---------------------------------------------------------------------------------------------
# Descriptors.
# ---------------------------------------------------------------------------------------------


class Fd:

    def __init__(self, num, fd, access, flags, names):
        self.num = num
        self.fd = fd
        self.access = access  # "r", "w" or "rw"
        self.flags = flags
        self.names = names
        self.pos = 0

    @property
    def readable(self):
        return "r" in self.access

    @property
    def writable(self):
        return "w" in self.access

    @property
    def append(self):
        return bool(self.flags & os.O_APPEND)

    @property
    def direct(self):
        return bool(self.flags & os.O_DIRECT)

    @property
    def sync(self):
        return bool(self.flags & (os.O_SYNC | os.O_DSYNC))

    def __str__(self):
        return f"fd#{self.num}[{'|'.join(self.names)}]"


ACCESS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}

# (kind, weight, classes that --skip can turn off)
OPS = [
    ("read", 13, ()),
    ("write", 14, ()),
    ("rw_pos", 4, ()),
    ("append", 5, ("append", "grow")),
    ("shell", 1.5, ("shell",)),
    ("direct_read", 5, ("direct",)),
    ("direct_write", 5, ("direct",)),
    ("mmap_read", 2, ("mmap",)),
    ("mmap_write", 3, ("mmap",)),
    ("truncate", 4, ()),
    ("open_trunc", 1.5, ("shrink",)),
    ("fallocate", 7, ("falloc",)),
    ("copy_range", 3, ("copy",)),
    ("copy_scratch", 1.5, ("copy",)),
    ("sendfile", 2, ("sendfile",)),
    ("cp", 0.5, ("cp", "seek")),
    ("lseek", 3, ()),
    ("seek_data_hole", 5, ("seek",)),
    ("write_seek", 2, ("seek",)),
    ("punch_seek", 2, ("punch", "seek")),
    ("fsync", 3, ("sync",)),
    ("reopen", 4, ()),
    ("stat", 3, ()),
    ("chmod", 1, ("perm",)),
    ("utime", 1, ("times",)),
    ("limit", 1, ("limit",)),
]


class Exerciser:

    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.dir = os.path.abspath(args.dir)
        self.img = os.path.join(self.dir, "img.qed")
        self.mnt = os.path.join(self.dir, "disk.raw")
        self.scratch_path = os.path.join(self.dir, "scratch.bin")
        self.mount = Mount(args, self.img, self.mnt, os.path.join(self.dir, "daemon.log"))
        self.skip = set(args.skip)
        self.wb = (args.writeback_cache == "on" if args.writeback_cache else args.cache
                   == "writeback")
        self.fds = []
        self.fd_count = 0
        self.op_no = 0
        self.kind = "setup"
        self.log = collections.deque(maxlen=args.log_tail)
        self.counts = collections.Counter()
        self.remounts = 0
        self.crashes = 0
        self.dbuf = mmap.mmap(-1, 4 * MIB)  # page aligned, for O_DIRECT
        self.uid, self.gid = os.getuid(), os.getgid()
        self.expect_mode, self.expect_uid, self.expect_gid = self.default_owner()
        self.last_progress = time.monotonic()
        self.max_image = self.max_image_size()
        self.cap = min(args.max_size, self.max_image)

    # -- plumbing ------------------------------------------------------------------------------

    def default_owner(self):
        """Mode, uid and gid the mounted file must have, from the mount options."""
        mode, uid, gid = 0o600, self.uid, self.gid
        for opt in self.a.extra_opts:
            for item in opt.removeprefix("-o").split(","):
                k, _, v = item.partition("=")
                k = k.lstrip("-")
                if k == "umask":
                    mode = 0o666 & ~int(v, 8)
                elif k == "uid":
                    uid = int(v)
                elif k == "gid":
                    gid = int(v)
        return mode, uid, gid

    def max_image_size(self):
        entries = self.a.table_size * self.a.cluster_size // 8
        return entries * entries * self.a.cluster_size

    def allow(self, cls):
        return cls not in self.skip

    def note(self, text):
        self.log.append(f"#{self.op_no} {text}")
        if self.a.verbose:
            print(f"#{self.op_no} {text}", flush=True)

    def fail(self, check, message):
        raise Failure(check, message)

    def sizes(self):
        m = self.m
        return m.size, m.disk_size()

    def observe_size(self, s, what):
        """s is a size the kernel reported: the model's size or that rounded up to 512."""
        L, D = self.sizes()
        if s == L:
            return
        if s == D:
            self.m.size = D
            return
        self.fail("size", f"{what}: size {s}, expected {L}" + (f" or {D}" if D != L else "") +
                  (" (the disk shrank)" if s < L else ""))

    def fstat_size(self, fd, what):
        s = os.fstat(fd).st_size
        self.observe_size(s, what)
        return self.m.size

    def expect_error(self, check, what, errnos, fn, *fargs):
        try:
            fn(*fargs)
        except OSError as e:
            if e.errno in errnos:
                return e.errno
            self.fail(check, f"{what}: expected {'/'.join(errname(x) for x in errnos)}, got "
                      f"{errname(e.errno)} ({e.strerror})")
        self.fail(check, f"{what}: succeeded, expected "
                  f"{'/'.join(errname(x) for x in errnos)}")

    def call(self, check, what, fn, *fargs):
        """fn(*fargs), a failure named check if it raises."""
        try:
            return fn(*fargs)
        except OSError as e:
            self.fail(check, f"{what}: failed with {errname(e.errno)} ({e.strerror})")

    def describe_page(self, pos):
        op = self.m.last_op.get(pos // PAGE)
        return f"; that page was last changed by op #{op[0]} ({op[1]})" if op else \
            "; the model never wrote that page"

    def check_data(self, what, off, got, check="read_data"):
        want = self.m.read(off, len(got))
        if got == want:
            return
        i = next(i for i in range(len(got)) if got[i] != want[i])
        self.fail(check, f"{what}: byte {off + i} is {got[i]:#04x}, expected {want[i]:#04x} "
                  f"(got {hexdump(got[i:])}, expected {hexdump(want[i:])})"
                  f"{self.describe_page(off + i)}")

    def check_read(self, what, off, n, got):
        """A read of n bytes at off returned got: length and contents against the model."""
        L, D = self.sizes()
        cands = {max(0, min(n, s - off)) for s in (L, D)}
        if len(got) not in cands:
            exp = " or ".join(str(c) for c in sorted(cands))
            self.fail("read_length", f"{what}: returned {len(got)} bytes, expected {exp} "
                      f"(model size {L})")
        self.check_data(what, off, got)

    def check_written(self, what, n, got):
        if got != n:
            self.fail("write_short", f"{what}: wrote {got} of {n} bytes (a short write)")

    def rand_data(self, n):
        return self.rng.randbytes(n)

    # -- offsets and lengths ------------------------------------------------------------------

    def pick_len(self, maxlen=256 * 1024):
        r = self.rng.random()
        cs = self.m.cluster
        if r < 0.3:
            n = self.rng.randint(1, 600)
        elif r < 0.55:
            n = self.rng.randint(1, 9000)
        elif r < 0.75:
            n = self.rng.choice([1, 511, 512, 513, 4095, 4096, 4097, cs - 1, cs, cs + 1, 2 * cs])
        else:
            n = self.rng.randint(1, maxlen)
        return max(1, min(n, maxlen))

    def pick_off(self, n, grow=True, align=1):
        """An offset for an n-byte access: inside, at cluster boundaries, straddling the end
        or past it (only if grow and growing is not skipped); the access stays below the cap."""
        L = self.m.size
        grow = grow and self.allow("grow")
        r = self.rng.random()
        cs = self.m.cluster
        if grow and (L == 0 or r < 0.12):
            off = L + self.rng.choice([0, 0, self.rng.randint(0, 4096), self.rng.randint(
                0, 2 * cs), self.rng.randint(0, MIB)])
        elif grow and r < 0.25:
            off = max(0, L - self.rng.randint(1, max(1, n)))
        elif r < 0.45 and L > 0:
            off = self.rng.randrange(0, L, 1) // cs * cs + self.rng.randint(-600, 600)
        elif L > 0:
            off = self.rng.randrange(0, L)
        else:
            off = 0
        off = max(0, off) // align * align
        if off + n > self.cap:
            off = max(0, self.cap - n) // align * align
        if not grow and off + n > L:
            off = max(0, L - n) // align * align
        return off

    def fit(self, off, n, grow=True, align=1):
        """n clipped so that [off, off+n) stays inside the disk when not growing."""
        if not (grow and self.allow("grow")):
            n = min(n, self.m.size - off)
            n = n // align * align
        return max(0, n)

    # -- descriptors ---------------------------------------------------------------------------

    def open_fd(self, access=None, flags=0, why="open"):
        rng = self.rng
        if access is None:
            access = rng.choice(["r", "w", "rw", "rw", "rw"])
            if access != "r":
                if self.allow("append") and self.allow("grow") and rng.random() < 0.2:
                    flags |= os.O_APPEND
                if self.allow("osync") and rng.random() < 0.15:
                    flags |= rng.choice([os.O_SYNC, os.O_DSYNC])
            if self.allow("direct") and rng.random() < 0.25:
                flags |= os.O_DIRECT
        names = [{"r": "O_RDONLY", "w": "O_WRONLY", "rw": "O_RDWR"}[access]]
        for bit, name in ((os.O_APPEND, "O_APPEND"), (os.O_DIRECT, "O_DIRECT"),
                          (os.O_SYNC, "O_SYNC"), (os.O_DSYNC, "O_DSYNC")):
            if flags & bit == bit and not (bit == os.O_DSYNC and flags & os.O_SYNC == os.O_SYNC):
                names.append(name)
        fd = self.call("open", f"{why}: open({'|'.join(names)})", os.open, self.mnt,
                       ACCESS[access] | flags | os.O_CLOEXEC)
        self.fd_count += 1
        f = Fd(self.fd_count, fd, access, flags, names)
        self.fds.append(f)
        return f

    def close_fd(self, f, check=True):
        self.fds.remove(f)
        self.close(f.fd, str(f), check)

    def close(self, fd, desc, check=True):
        """close(2) of a descriptor of the mounted file: an error there (the kernel writes back
        cached data on close) means written data may be lost."""
        try:
            os.close(fd)
        except OSError as e:
            if check:
                self.fail("close", f"close({desc}) failed with {errname(e.errno)} "
                          f"({e.strerror}): data written to the disk may be lost")

    def close_all(self, check=True):
        for f in list(self.fds):
            self.close_fd(f, check)

    def pick_fd(self, need=None, direct=None, append=None, keep=()):
        """A descriptor able to do `need` ("r"/"w"), opening one if none fits (and closing one
        not in keep if too many are open)."""
        cands = [
            f for f in self.fds if (need is None or need in f.access) and
            (direct is None or f.direct == direct) and (append is None or f.append == append)
        ]
        if cands and self.rng.random() < 0.9:
            return self.rng.choice(cands)
        flags = 0
        if direct:
            flags |= os.O_DIRECT
        if append:
            flags |= os.O_APPEND
        access = "rw" if need is None else ("rw" if self.rng.random() < 0.7 else need)
        if len(self.fds) >= self.a.max_fds:
            self.close_fd(self.rng.choice([f for f in self.fds if f not in keep]))
        return self.open_fd(access, flags, why="for the next op")

    # -- durability bookkeeping ----------------------------------------------------------------

    def after_write(self, f, off, n):
        """Bookkeeping after a successful write of [off, off+n) through f."""
        if f is not None and f.sync:
            self.m.synced_range(off, n)
        if self.m.nversions > 4096:
            f2 = self.pick_fd()
            self.note(f"  (bounding the crash model: fsync {f2})")
            self.call("fsync", "fsync", os.fsync, f2.fd)
            self.m.synced()

    # -- operations ----------------------------------------------------------------------------

    def io(self, allowed, check, what, fn, *fargs):
        """Notes and runs one I/O call: its result, or None when the descriptor does not allow
        it (the call must then fail with EBADF)."""
        self.note(what)
        if not allowed:
            self.expect_error("ebadf", what, (errno.EBADF,), fn, *fargs)
            return None
        return self.call(check, what, fn, *fargs)

    def split_iov(self, n, align=1):
        cuts = sorted(
            self.rng.randrange(0, n // align + 1) * align
            for _ in range(self.rng.randint(0, 3)))
        bounds = [0] + cuts + [n]
        return [(a, b) for a, b in zip(bounds, bounds[1:])]

    def rw_call(self, f, write, vector, n, off, data=None, rwf=0, flagname=""):
        """One pread/pwrite, or preadv/pwritev with several buffers, of n bytes at off through
        f: (description, bytes read or count written), None instead of the result when f does
        not allow the call (it then failed with EBADF)."""
        name = ("pwrite" if write else "pread") + ("v" if vector else "")
        if not vector:
            what = f"{name}({f}, {n}, {off})"
            if write:
                return what, self.io(f.writable, "write_error", what, os.pwrite, f.fd, data, off)
            return what, self.io(f.readable, "read_error", what, os.pread, f.fd, n, off)
        self.counts[name] += 1
        parts = self.split_iov(n)
        what = f"{name}({f}, {[b - a for a, b in parts]}, {off}{flagname})"
        if write:
            return what, self.io(f.writable, "write_error", what, os.pwritev, f.fd,
                                 [data[a:b] for a, b in parts], off, rwf)
        bufs = [bytearray(b - a) for a, b in parts]
        got = self.io(f.readable, "read_error", what, os.preadv, f.fd, bufs, off)
        return what, None if got is None else b"".join(bufs)[:got]

    def op_read(self):
        """pread, or preadv into several buffers."""
        vector = self.allow("vector") and self.rng.random() < 0.3
        f = self.pick_fd(need="r" if self.rng.random() < 0.95 else None, direct=False)
        n = self.pick_len()
        off = self.pick_off(n)
        if self.rng.random() < 0.1:
            off = self.m.size + self.rng.randint(0, 3 * self.m.cluster)  # at or past the end
        what, got = self.rw_call(f, False, vector, n, off)
        if got is None:
            return
        self.check_read(what, off, n, got)

    def op_write(self):
        """pwrite, or pwritev from several buffers (sometimes with RWF_DSYNC or RWF_APPEND)."""
        vector = self.allow("vector") and self.rng.random() < 0.35
        rwf, flagname = 0, ""
        r = self.rng.random()
        if vector and r < 0.15 and self.allow("osync"):
            rwf, flagname = os.RWF_DSYNC, ", RWF_DSYNC"
        elif vector and r < 0.3 and self.allow("append") and self.allow("grow"):
            rwf, flagname = os.RWF_APPEND, ", RWF_APPEND"
        f = self.pick_fd(need="w" if self.rng.random() < 0.95 else None, direct=False,
                         append=False)
        n = self.pick_len()
        off = self.pick_off(n)
        n = self.fit(off, n)
        if n == 0:
            return
        data = self.rand_data(n)
        if self.rng.random() < 0.05:
            data = bytes(n)  # zeros are data too
        if rwf == os.RWF_APPEND:
            off = self.fstat_size(f.fd, "fstat before pwritev(RWF_APPEND)")
        what, got = self.rw_call(f, True, vector, n, off, data, rwf, flagname)
        if got is None:
            return
        self.check_written(what, n, got)
        if rwf == os.RWF_APPEND:
            self.appended(what, off, data)
        else:
            self.m.write(off, data, (self.op_no, what.split("(")[0]))
        if rwf == os.RWF_DSYNC:
            self.m.synced_range(off, n)
        self.after_write(f, off, n)

    def op_rw_pos(self):
        """lseek(SEEK_SET) + read()/write() at the descriptor's position, as dd and cat do."""
        f = self.pick_fd(direct=False, append=False)
        n = self.pick_len()
        off = self.pick_off(n)
        self.call("lseek", f"lseek({f}, {off}, SEEK_SET)", os.lseek, f.fd, off, os.SEEK_SET)
        f.pos = off
        if f.writable and (not f.readable or self.rng.random() < 0.5):
            n = self.fit(off, n)
            if n == 0:
                return
            data = self.rand_data(n)
            what = f"lseek+write({f}, {n}) at {off}"
            self.note(what)
            got = self.call("write_error", what, os.write, f.fd, data)
            self.check_written(what, n, got)
            self.m.write(off, data, (self.op_no, "write"))
            f.pos = off + n
            self.after_write(f, off, n)
        else:
            what = f"lseek+read({f}, {n}) at {off}"
            self.note(what)
            got = self.call("read_error", what, os.read, f.fd, n)
            self.check_read(what, off, n, got)
            f.pos = off + len(got)
        pos = self.call("lseek", f"lseek({f}, 0, SEEK_CUR)", os.lseek, f.fd, 0, os.SEEK_CUR)
        if pos != f.pos:
            self.fail("file_position", f"after {what}: position {pos}, expected {f.pos}")

    def op_append(self):
        """write() and pwrite() on an O_APPEND descriptor: both append (Linux ignores pwrite's
        offset with O_APPEND)."""
        f = self.pick_fd(need="w", append=True)
        n = self.pick_len(maxlen=64 * 1024)
        L = self.fstat_size(f.fd, f"fstat({f}) before appending")
        if f.direct:
            # O_DIRECT appends: sector-sized, from an aligned buffer, onto a sector-aligned end.
            n = round_up(n, SECTOR)
            if L % SECTOR:
                return
        if L + n > self.cap:
            return
        data = self.rand_data(n)
        use_pwrite = self.rng.random() < 0.3
        what = f"{'pwrite(off=0)' if use_pwrite else 'write'}({f}, {n}) at the end ({L})"
        self.note(what)
        if f.direct:
            self.dbuf[:n] = data
            view = memoryview(self.dbuf)[:n]
            try:
                got = self.call("write_error", what, os.pwritev if use_pwrite else os.writev,
                                f.fd, [view], *([0] if use_pwrite else []))
            finally:
                view.release()
        elif use_pwrite:
            got = self.call("write_error", what, os.pwrite, f.fd, data, 0)
        else:
            got = self.call("write_error", what, os.write, f.fd, data)
        self.check_written(what, n, got)
        if not use_pwrite:
            pos = self.call("lseek", f"lseek({f}, 0, SEEK_CUR)", os.lseek, f.fd, 0,
                            os.SEEK_CUR)
            if pos != L + n:
                self.fail("append_position",
                          f"{what}: the descriptor is at {pos} afterwards, expected {L + n} "
                          "(the data did not go to the end)")
            f.pos = pos
        self.appended(what, L, data)
        self.after_write(f, L, n)

    def appended(self, what, L, data):
        """data was appended to a disk of L bytes: it must be at L (where stat said the end
        was) and nowhere else; read it back to be sure, then update the model."""
        fd = self.call("open", "open", os.open, self.mnt, os.O_RDONLY | os.O_CLOEXEC)
        try:
            got = self.call("read_error", f"pread after {what}", os.pread, fd, len(data), L)
            if got != data:
                where = [x for x in range(max(0, L - 4096), L + 4097)
                         if os.pread(fd, 16, x) == data[:16]][:1]
                self.fail("append_position", f"{what}: the data is not at {L}, where the disk "
                          "ended" + (f"; it starts at {where[0]}" if where else ""))
        except BaseException:
            self.close(fd, "", check=False)
            raise
        self.close(fd, "a descriptor opened to read the appended data back")
        self.m.write(L, data, (self.op_no, "append"))

    def run_tool(self, what, argv, data=None):
        r = subprocess.run(argv, input=data, capture_output=True, timeout=120)
        return r.returncode, r.stderr.decode(errors="replace").strip()

    def op_shell(self):
        """What people type: `cmd >> disk.raw`, `cmd > disk.raw`, dd with and without notrunc."""
        L = self.fstat_size_path("stat before a shell command")
        variants = ["dd_notrunc"]
        if self.allow("append") and self.allow("grow"):
            variants += ["sh_append", "dd_append"]
        if self.allow("shrink"):
            variants += ["sh_trunc", "dd_trunc"]
        v = self.rng.choice(variants)
        n = self.pick_len(maxlen=32 * 1024)
        data = self.rand_data(n)
        if v == "sh_append" or v == "dd_append":
            if L + n > self.cap:
                return
            argv = (["sh", "-c", 'cat >> "$1"', "sh", self.mnt] if v == "sh_append" else [
                "dd", f"of={self.mnt}", "bs=64k", "iflag=fullblock", "oflag=append",
                "conv=notrunc", "status=none"
            ])
            what = f"{v}: {n} bytes appended at {L}"
            self.note(what)
            rc, err = self.run_tool(what, argv, data)
            if rc != 0:
                self.fail("shell_append", f"{what}: exit status {rc}: {err}")
            self.appended(what, L, data)
        elif v == "dd_notrunc":
            off = self.pick_off(n)
            n = self.fit(off, n)
            if n == 0:
                return
            data = data[:n]
            what = f"dd conv=notrunc: {n} bytes at {off}"
            self.note(what)
            rc, err = self.run_tool(what, [
                "dd", f"of={self.mnt}", "bs=64k", "iflag=fullblock", f"seek={off}",
                "oflag=seek_bytes", "conv=notrunc", "status=none"
            ], data)
            if rc != 0:
                self.fail("shell_write", f"{what}: exit status {rc}: {err}")
            self.m.write(off, data, (self.op_no, "dd"))
        elif v == "sh_trunc":
            if L == 0:
                return
            what = f"sh -c 'cat > disk.raw' (O_TRUNC of a {L}-byte disk)"
            self.note(what)
            rc, err = self.run_tool(what, ["sh", "-c", 'cat > "$1"', "sh", self.mnt], data)
            self.tool_refused_shrink(what, rc, err, L)
        else:  # dd without conv=notrunc: it truncates the output to seek= first
            off = self.rng.choice([0, self.rng.randrange(0, L + 1), L, L + 512])
            if off + n > self.cap or (off + n > L and not self.allow("grow")):
                return
            what = f"dd seek={off} without conv=notrunc, {n} bytes (disk size {L})"
            self.note(what)
            rc, err = self.run_tool(what, [
                "dd", f"of={self.mnt}", "bs=64k", "iflag=fullblock", f"seek={off}",
                "oflag=seek_bytes", "status=none"
            ], data)
            if off == 0 and L > 0:  # dd opened the disk with O_TRUNC
                self.tool_refused_shrink(what, rc, err, L)
            elif off < L:
                # ftruncate(seek=) is refused; dd 9.1 warns and copies anyway (exit status 0),
                # older versions stop there.
                if "not permitted" not in err:
                    self.fail("shrink_refused", f"{what}: dd did not report EPERM from its "
                              f"ftruncate (exit status {rc}: {err or 'no message'})")
                self.observe_unchanged_size(what, L)
                if rc == 0:
                    self.m.write(off, data, (self.op_no, "dd"))
            else:
                if rc != 0:
                    self.fail("shell_write", f"{what}: exit status {rc}: {err}")
                self.m.size = max(self.m.size, off)
                self.m.write(off, data, (self.op_no, "dd"))

    def tool_refused_shrink(self, what, rc, err, size):
        """A command that truncates the disk must fail with EPERM and change nothing."""
        if rc == 0:
            self.fail("shrink_refused", f"{what}: exit status 0, expected it to fail truncating "
                      "the disk with EPERM")
        if "not permitted" not in err:
            self.fail("shrink_refused", f"{what}: failed, but not with EPERM: {err}")
        self.observe_unchanged_size(what, size)

    def fstat_size_path(self, what):
        s = self.call("stat", what, os.stat, self.mnt).st_size
        self.observe_size(s, what)
        return self.m.size

    def observe_unchanged_size(self, what, before, check="shrink_refused"):
        """After a refused call: the size is as before (or that rounded up to 512, which the
        image held already)."""
        s = self.call("stat", "stat", os.stat, self.mnt).st_size
        if s not in (before, round_up(before, SECTOR)):
            self.fail(check, f"after {what}: size {s}, expected it unchanged "
                      f"({before})")
        self.observe_size(s, f"stat after {what}")

    def op_direct_read(self):
        f = self.pick_fd(need="r", direct=True)
        n = round_up(self.pick_len(), SECTOR)
        off = self.pick_off(n, align=SECTOR)
        what = f"O_DIRECT preadv({f}, {n}, {off})"
        self.note(what)
        view = memoryview(self.dbuf)[:n]
        try:
            got_n = self.call("read_error", what, os.preadv, f.fd, [view], off)
            got = bytes(view[:got_n])
        finally:
            view.release()
        self.check_read(what, off, n, got)

    def op_direct_write(self):
        f = self.pick_fd(need="w", direct=True, append=False)
        n = round_up(self.pick_len(), SECTOR)
        off = self.pick_off(n, align=SECTOR)
        n = self.fit(off, n, align=SECTOR)
        if n == 0:
            return
        data = self.rand_data(n)
        self.dbuf[:n] = data
        parts = self.split_iov(n, SECTOR)
        what = f"O_DIRECT pwritev({f}, {[b - a for a, b in parts]}, {off})"
        self.note(what)
        views = [memoryview(self.dbuf)[a:b] for a, b in parts]
        try:
            got = self.call("write_error", what, os.pwritev, f.fd, views, off)
        finally:
            for v in views:
                v.release()
        self.check_written(what, n, got)
        self.m.write(off, data, (self.op_no, "O_DIRECT write"))
        self.after_write(f, off, n)

    def op_mmap(self, write):
        """Map part of the file (MAP_SHARED), read or write it, msync(MS_SYNC), munmap."""
        own = self.rng.random() < 0.6
        if own:
            fd = self.call("open", "open for mmap", os.open, self.mnt,
                           (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)
            fdesc = "a new descriptor"
        else:
            f = self.pick_fd(need="r", direct=False, append=False)
            if write and not f.writable:
                return
            fd, fdesc = f.fd, str(f)
        mm = None
        try:
            L = self.fstat_size(fd, "fstat before mmap")
            if L > 0:
                start = self.rng.randrange(0, L) // PAGE * PAGE
                length = min(L - start, self.rng.randint(1, 64 * 1024))
                mm = self.call("mmap", f"mmap({fdesc}, {length}, offset={start})", mmap.mmap,
                               fd, length, mmap.MAP_SHARED,
                               mmap.PROT_READ | (mmap.PROT_WRITE if write else 0), 0, start)
        except BaseException:
            if own:
                self.close(fd, "", check=False)
            raise
        if own:
            self.close(fd, "the descriptor just mapped")  # the mapping outlives it
        if mm is None:
            return
        try:
            a = self.rng.randrange(0, length)
            b = self.rng.randint(a + 1, length)
            if write:
                data = self.rand_data(b - a)
                what = f"mmap write {b - a} bytes at {start + a} (mapping of {fdesc})"
                self.note(what)
                mm[a:b] = data
                self.m.write(start + a, data, (self.op_no, "mmap write"))
                self.call("msync", f"{what}: msync(MS_SYNC)", mm.flush)
                self.m.synced_range(start, length)
            else:
                what = f"mmap read {b - a} bytes at {start + a} (mapping of {fdesc})"
                self.note(what)
                self.check_data(what, start + a, bytes(mm[a:b]))
        finally:
            mm.close()
        self.after_write(None, start, 0)

    def op_truncate(self):
        path = self.rng.random() < 0.4
        f = None if path else self.pick_fd(need="w")
        L = (self.fstat_size_path("stat before truncate")
             if path else self.fstat_size(f.fd, f"fstat({f}) before ftruncate"))
        r = self.rng.random()
        if r < 0.3 and self.allow("shrink") and L > 0:
            t = self.rng.choice([0, self.rng.randrange(0, L), L - 1, max(0, L - 512)])
        elif r < 0.4:
            t = L
        elif self.allow("grow"):
            t = min(self.cap, L + self.rng.choice(
                [1, 511, 512, self.rng.randint(1, 4096), self.m.cluster,
                 self.rng.randint(1, 2 * MIB)]))
        else:
            t = L
        call = (lambda: os.truncate(self.mnt, t)) if path else (lambda: os.ftruncate(f.fd, t))
        what = f"truncate(disk.raw, {t})" if path else f"ftruncate({f}, {t})"
        what += f" of a {L}-byte disk"
        self.note(what)
        if t < L:
            self.expect_error("shrink_refused", what, (errno.EPERM,), call)
            self.observe_unchanged_size(what, L)
            return
        self.call("grow" if t > L else "truncate_same", what, call)
        self.m.size = max(self.m.size, t)
        self.fstat_size_path(f"stat after {what}")

    def op_open_trunc(self):
        L = self.fstat_size_path("stat before open(O_TRUNC)")
        access = self.rng.choice(["w", "rw"])
        what = f"open(O_{'WRONLY' if access == 'w' else 'RDWR'}|O_TRUNC) of a {L}-byte disk"
        self.note(what)
        if L > 0:
            self.expect_error("shrink_refused", what, (errno.EPERM,), os.open, self.mnt,
                              ACCESS[access] | os.O_TRUNC | os.O_CLOEXEC)
            self.observe_unchanged_size(what, L)
        else:
            fd = self.call("open", what, os.open, self.mnt,
                           ACCESS[access] | os.O_TRUNC | os.O_CLOEXEC)
            self.close(fd, what)

    FALLOC_MODES = [
        ("0", 0, 3),
        ("KEEP_SIZE", FALLOC_FL_KEEP_SIZE, 2),
        ("PUNCH_HOLE|KEEP_SIZE", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5),
        ("ZERO_RANGE", FALLOC_FL_ZERO_RANGE, 4),
        ("ZERO_RANGE|KEEP_SIZE", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 3),
        ("PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE, 0.5),
        ("COLLAPSE_RANGE", FALLOC_FL_COLLAPSE_RANGE, 0.5),
        ("INSERT_RANGE", FALLOC_FL_INSERT_RANGE, 0.5),
        ("UNSHARE_RANGE", FALLOC_FL_UNSHARE_RANGE, 0.5),
        ("WRITE_ZEROES", FALLOC_FL_WRITE_ZEROES, 0.3),
    ]

    def op_fallocate(self):
        modes = [
            m for m in self.FALLOC_MODES
            if (self.allow("punch") or not m[1] & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
            and (self.allow("unsupported") or m[0] not in (
                "PUNCH_HOLE", "COLLAPSE_RANGE", "INSERT_RANGE", "UNSHARE_RANGE", "WRITE_ZEROES"))
        ]
        name, mode, _ = self.rng.choices(modes, [m[2] for m in modes])[0]
        f = self.pick_fd(need="w", append=False)
        keep = bool(mode & FALLOC_FL_KEEP_SIZE)
        grows = mode in (0, FALLOC_FL_ZERO_RANGE)
        cs = self.m.cluster
        r = self.rng.random()
        if r < 0.4:  # cluster aligned, so that whole clusters must become holes
            n = cs * self.rng.randint(1, 4)
            off = self.pick_off(n, grow=grows or keep, align=cs)
        else:
            n = self.pick_len()
            off = self.pick_off(n, grow=grows or keep)
        if grows and not self.allow("grow"):
            n = self.fit(off, n)
        if n == 0:
            return
        L = self.fstat_size(f.fd, f"fstat({f}) before fallocate")
        what = f"fallocate({f}, {name}, {off}, {n}) on a {L}-byte disk"
        self.note(what)
        if name in ("PUNCH_HOLE", "COLLAPSE_RANGE", "INSERT_RANGE", "UNSHARE_RANGE",
                    "WRITE_ZEROES"):
            self.expect_error("falloc_unsupported", what, (errno.EOPNOTSUPP,), fallocate, f.fd,
                              mode, off, n)
            got = os.pread(f.fd, n, off) if f.readable and not f.direct else None
            if got is not None:
                self.check_read(f"pread after the refused {what}", off, n, got)
            self.observe_unchanged_size(what, L, "falloc_unsupported")
            return
        self.call("falloc", what, fallocate, f.fd, mode, off, n)
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            self.m.zero(off, n, (self.op_no, f"fallocate {name}"), grow=not keep)
            self.after_write(f, off, 0)
        elif not keep:  # mode 0: grows like a truncate; a thin image allocates nothing
            if off + n > self.m.size:  # preallocating the new part may allocate it
                self.m.mark_touched(max(off, self.m.size), off + n - max(off, self.m.size))
            self.m.size = max(self.m.size, off + n)
        self.fstat_size(f.fd, f"fstat after {what}")

    def copy_loop(self, what, fn, total):
        """Calls fn(done) until total bytes moved or it returns 0, as cp does; the byte count."""
        done = 0
        while done < total:
            got = self.call("copy", what, fn, done)
            if got < 0 or got > total - done:
                self.fail("copy", f"{what}: returned {got} with {total - done} bytes left")
            if got == 0:
                break
            done += got
        return done

    def copy_file_range(self, what, fd_in, fd_out, n, off_in, off_out, limit=None):
        """copy_file_range until n bytes are moved or the source ends: the byte count, or None
        when the kernel refuses the pair of files before moving anything (EXDEV, EOPNOTSUPP:
        cp then reads and writes, which the caller does)."""
        try:
            first = os.copy_file_range(fd_in, fd_out, n, off_in, off_out)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EOPNOTSUPP):
                self.counts["copy_refused_" + errname(e.errno)] += 1
                self.note(f"  = {errname(e.errno)}: copying with pread/pwrite instead, as cp does")
                return None
            self.fail("copy", f"{what}: failed with {errname(e.errno)} ({e.strerror})")
        if first <= 0 or first > n:
            return first if first == 0 else self.fail("copy", f"{what}: returned {first}")
        if limit is not None and first >= limit:
            return first
        return first + self.copy_loop(
            what, lambda d: os.copy_file_range(fd_in, fd_out, n - first - d, off_in + first + d,
                                               off_out + first + d),
            (n if limit is None else limit) - first)

    def op_copy_range(self):
        """copy_file_range within the mounted file."""
        src = self.pick_fd(need="r", direct=False)
        dst = self.pick_fd(need="w", direct=False, append=False, keep=(src,))
        L = self.fstat_size(src.fd, "fstat before copy_file_range")
        if L == 0:
            return
        n = self.pick_len()
        off_in = self.rng.randrange(0, L)
        cnt = min(n, L - off_in)
        if self.rng.random() < 0.1 and L == self.m.disk_size():
            # Overlapping ranges in one file: EINVAL, nothing copied.
            off_out = max(0, off_in + self.rng.randint(-cnt + 1, cnt - 1))
            what = f"copy_file_range({src} @{off_in} -> {dst} @{off_out}, {n}), overlapping"
            self.note(what)
            self.expect_error("copy", what, (errno.EINVAL,), os.copy_file_range, src.fd, dst.fd,
                              n, off_in, off_out)
            return
        off_out = self.pick_off(cnt)
        if off_out < off_in + cnt and off_in < off_out + cnt:
            off_out = off_in + cnt
        if off_out + cnt > (self.cap if self.allow("grow") else L):
            return
        what = f"copy_file_range({src} @{off_in} -> {dst} @{off_out}, {n})"
        self.note(what)
        # Like cp, copy until the source's end as it was: the copy grows the file, and another
        # call would copy the bytes just copied.
        moved = self.copy_file_range(what, src.fd, dst.fd, n, off_in, off_out, limit=cnt)
        if moved is None:
            data = self.call("read_error", "pread", os.pread, src.fd, n, off_in)
            self.check_read(f"pread({src}, {n}, {off_in})", off_in, n, data)
            moved = self.call("write_error", "pwrite", os.pwrite, dst.fd, data, off_out)
            self.check_written(f"pwrite({dst}, {len(data)}, {off_out})", len(data), moved)
        elif moved not in self.expected_copy_len(off_in, n):
            self.fail("copy", f"{what}: copied {moved} bytes, expected {cnt} (the source ends at "
                      f"{L}; the file now has {os.fstat(src.fd).st_size} bytes)")
        self.m.write(off_out, self.m.read(off_in, moved), (self.op_no, "copy_file_range"))
        self.after_write(None, off_out, moved)

    def expected_copy_len(self, off, n):
        L, D = self.sizes()
        return {max(0, min(n, s - off)) for s in (L, D)}

    def op_copy_scratch(self):
        self.scratch_transfer("copy_file_range")

    def op_sendfile(self):
        self.scratch_transfer("sendfile")

    def scratch_transfer(self, how):
        """copy_file_range or sendfile between the mounted file and a file on another
        filesystem, both ways (sendfile writes at the destination's position)."""
        scratch = os.open(self.scratch_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                          0o600)
        cfr = how == "copy_file_range"
        check = "copy" if cfr else "sendfile"
        try:
            n = self.pick_len()
            if self.rng.random() < 0.5:  # disk -> scratch
                src = self.pick_fd(need="r", direct=False if cfr else None)
                L = self.fstat_size(src.fd, f"fstat before {how}")
                off = self.rng.randrange(0, L + 1) if L else 0
                what = f"{how}({src} @{off} -> scratch file, {n})"
                self.note(what)
                if cfr:
                    cnt = self.copy_file_range(what, src.fd, scratch, n, off, 0)
                    if cnt is None:
                        cnt = os.pwrite(scratch, os.pread(src.fd, n, off), 0)
                else:
                    cnt = self.copy_loop(what,
                                         lambda d: os.sendfile(scratch, src.fd, off + d, n - d), n)
                got = os.pread(scratch, n + 1, 0)
                if len(got) != cnt:
                    self.fail(check, f"{what}: the scratch file holds {len(got)} bytes, the call "
                              f"reported {cnt}")
                self.check_read(f"{what}: the scratch file", off, n, got)
                return
            # scratch -> disk
            dst = self.pick_fd(need="w", direct=False if cfr else None,
                               append=False if cfr else None)
            off = self.pick_off(n)
            n = self.fit(off, n)
            if n == 0:
                return
            data = self.rand_data(n)
            os.pwrite(scratch, data, 0)
            what = f"{how}(scratch file -> {dst} @{off}, {n})"
            self.note(what)
            if cfr:
                cnt = self.copy_file_range(what, scratch, dst.fd, n, 0, off)
                if cnt is None:
                    cnt = self.call("write_error", "pwrite", os.pwrite, dst.fd, data, off)
            else:
                self.call("lseek", "lseek", os.lseek, dst.fd, off, os.SEEK_SET)
                dst.pos = off
                if dst.append:
                    self.expect_error(check, f"{what} (O_APPEND destination)", (errno.EINVAL,),
                                      os.sendfile, dst.fd, scratch, 0, n)
                    return
                cnt = self.copy_loop(what, lambda d: os.sendfile(dst.fd, scratch, d, n - d), n)
                dst.pos = off + cnt
                pos = os.lseek(dst.fd, 0, os.SEEK_CUR)
                if pos != dst.pos:
                    self.fail("file_position", f"after {what}: position {pos}, expected "
                              f"{dst.pos}")
            if cnt != n:
                self.fail(check, f"{what}: moved {cnt} of {n} bytes")
            self.m.write(off, data, (self.op_no, how))
            self.after_write(None, off, n)
        finally:
            os.close(scratch)

    def op_cp(self):
        """cp --sparse=always of the whole disk (SEEK_DATA/SEEK_HOLE and copy_file_range as a
        real tool uses them); the copy must equal the model."""
        out = os.path.join(self.dir, "cp.out")
        L = self.fstat_size_path("stat before cp")
        what = f"cp --sparse=always disk.raw (size {L})"
        self.note(what)
        rc, err = self.run_tool(what, ["cp", "--sparse=always", self.mnt, out])
        if rc != 0:
            self.fail("cp", f"{what}: exit status {rc}: {err}")
        try:
            size = os.stat(out).st_size
            if size not in self.sizes():
                self.fail("cp", f"{what}: the copy has {size} bytes, expected {L}")
            with open(out, "rb") as fo:
                pos = 0
                while pos < size:
                    chunk = fo.read(MIB)
                    self.check_data(f"{what}: the copy", pos, chunk, check="cp")
                    pos += len(chunk)
        finally:
            os.unlink(out)

    def op_lseek(self):
        f = self.pick_fd()
        r = self.rng.random()
        if r < 0.4:
            L = self.m.size
            delta = self.rng.randint(-min(L, 8192), 8192)
            what = f"lseek({f}, {delta}, SEEK_END)"
            self.note(what)
            got = self.call("lseek", what, os.lseek, f.fd, delta, os.SEEK_END)
            self.observe_size(got - delta, f"{what} = {got}")
            f.pos = got
        elif r < 0.7:
            off = self.rng.randint(0, self.m.size + 8192)
            what = f"lseek({f}, {off}, SEEK_SET)"
            self.note(what)
            got = self.call("lseek", what, os.lseek, f.fd, off, os.SEEK_SET)
            if got != off:
                self.fail("lseek", f"{what} = {got}")
            f.pos = off
        else:
            delta = self.rng.randint(-f.pos, 8192)
            what = f"lseek({f}, {delta}, SEEK_CUR) from {f.pos}"
            self.note(what)
            got = self.call("lseek", what, os.lseek, f.fd, delta, os.SEEK_CUR)
            if got != f.pos + delta:
                self.fail("lseek", f"{what} = {got}, expected {f.pos + delta}")
            f.pos = got

    def seek(self, f, off, whence):
        """lseek SEEK_DATA/SEEK_HOLE: the offset, or None for ENXIO."""
        name = "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE"
        try:
            got = os.lseek(f.fd, off, whence)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return None
            self.fail("seek_error", f"lseek({f}, {off}, {name}) failed with "
                      f"{errname(e.errno)} ({e.strerror})")
        f.pos = got
        return got

    def op_seek_data_hole(self):
        f = self.pick_fd()
        L, D = self.sizes()
        cs = self.m.cluster
        r = self.rng.random()
        if r < 0.1:
            off = D + self.rng.randint(0, cs)
        elif r < 0.4 and D > 0:
            off = self.rng.randrange(0, D) // cs * cs + self.rng.choice([0, 0, 1, cs - 1])
        elif D > 0:
            off = self.rng.randrange(0, D)
        else:
            off = 0
        self.check_seek(f, off, self.rng.choice([os.SEEK_DATA, os.SEEK_HOLE]))

    def whole_hole_cluster(self):
        """A cluster inside the disk that must be a hole, or None."""
        cs = self.m.cluster
        n = self.m.disk_size() // cs
        start = self.rng.randrange(0, n) if n else 0
        for i in range(min(n, 4096)):
            c = (start + i) % n
            if c not in self.m.touched:
                return c
        return None

    def op_write_seek(self):
        """A buffered write into a hole, then SEEK_DATA/SEEK_HOLE at once (through another
        descriptor, too): data still in the kernel's cache must be found."""
        L = self.m.size
        if L == 0:
            return
        cs = self.m.cluster
        c = self.whole_hole_cluster()
        off = (c * cs if c is not None else 0) + self.rng.randrange(0, cs)
        if off >= L:
            off = self.rng.randrange(0, L)
        n = min(self.pick_len(maxlen=16384), L - off)
        f = self.pick_fd(need="w", direct=False, append=False)
        data = self.rand_data(n)
        what = f"pwrite({f}, {n}, {off}) into a hole"
        self.note(what)
        got = self.call("write_error", what, os.pwrite, f.fd, data, off)
        self.check_written(what, n, got)
        self.m.write(off, data, (self.op_no, "pwrite into a hole"))
        self.after_write(f, off, n)
        g = f if self.rng.random() < 0.5 else self.pick_fd(keep=(f,))
        self.check_seek(g, max(0, off - self.rng.choice([0, 1, cs, 3 * cs])), os.SEEK_DATA)
        self.check_seek(g, max(0, off - self.rng.choice([0, 1, cs])), os.SEEK_HOLE)

    def op_punch_seek(self):
        """Punch or zero whole clusters, then SEEK_HOLE/SEEK_DATA there must see the hole."""
        cs = self.m.cluster
        whole = self.m.disk_size() // cs
        if whole == 0:
            return
        c0 = self.rng.randrange(0, whole)
        k = self.rng.randint(1, min(4, whole - c0))
        off, n = c0 * cs, k * cs
        name, mode = self.rng.choice([
            ("PUNCH_HOLE|KEEP_SIZE", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
            ("ZERO_RANGE|KEEP_SIZE", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE),
            ("ZERO_RANGE", FALLOC_FL_ZERO_RANGE)
        ])
        f = self.pick_fd(need="w", append=False)
        what = f"fallocate({f}, {name}, {off}, {n}): whole clusters {c0}..{c0 + k - 1}"
        self.note(what)
        self.call("falloc", what, fallocate, f.fd, mode, off, n)
        self.m.zero(off, n, (self.op_no, f"fallocate {name}"), grow=False)
        self.after_write(f, off, 0)
        g = f if self.rng.random() < 0.5 else self.pick_fd(keep=(f,))
        self.check_seek(g, off + self.rng.randrange(0, n), os.SEEK_HOLE)
        self.check_seek(g, max(0, off - self.rng.choice([0, 1, cs])), os.SEEK_DATA)

    def check_seek(self, f, off, whence):
        """lseek(off, whence) on f, checked against the model."""
        L, D = self.sizes()
        cs = self.m.cluster
        whence = self.rng.choice([os.SEEK_DATA, os.SEEK_HOLE])
        name = "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE"
        what = f"lseek({f}, {off}, {name}) on a {L}-byte disk"
        self.note(what)
        got = self.seek(f, off, whence)
        self.note(f"  = {'ENXIO' if got is None else got}")
        if off >= D or (off >= L and got is None):
            if got is not None and off >= D:
                self.fail("seek_eof", f"{what} = {got}, expected ENXIO (at or past the end)")
            return
        if got is None and whence == os.SEEK_HOLE:
            self.fail("seek_hole", f"{what}: ENXIO inside the file (the end is a hole)")
        if whence == os.SEEK_DATA:
            d = D if got is None else got
            if d < off or d > D:
                self.fail("seek_data", f"{what} = {got}: outside [{off}, {D}]")
            bad = self.m.first_nonzero(off, d)
            if bad is not None:
                self.fail("seek_data", f"{what} = {'ENXIO' if got is None else got}: skips the "
                          f"data at {bad}{self.describe_page(bad)}")
            if got is not None and got < L and self.m.known_hole(got):
                self.fail("seek_exact", f"{what} = {got}: reports data inside cluster "
                          f"{got // cs}, which was never written or was punched as a whole")
        else:
            h = got
            if h < off or h > D:
                self.fail("seek_hole", f"{what} = {h}: outside [{off}, {D}]")
            kh = self.m.next_known_hole(off, L)
            if kh is not None and h > kh:
                self.fail("seek_exact", f"{what} = {h}: misses the hole at {kh} (cluster "
                          f"{kh // cs} was never written or was punched as a whole)")
            if h < L:
                nxt = self.seek(f, h, os.SEEK_DATA)
                self.note(f"  SEEK_DATA({h}) = {'ENXIO' if nxt is None else nxt}")
                end = D if nxt is None else nxt
                if end <= h:
                    self.fail("seek_data", f"SEEK_DATA({h}) = {nxt} right after {what} = {h} "
                              "reported a hole there")
                bad = self.m.first_nonzero(h, end)
                if bad is not None:
                    self.fail("seek_hole", f"{what} = {h}, the hole runs to {end} but holds data "
                              f"at {bad}{self.describe_page(bad)}")

    def op_fsync(self):
        f = self.pick_fd()
        data_only = self.rng.random() < 0.4
        what = f"{'fdatasync' if data_only else 'fsync'}({f})"
        self.note(what)
        self.call("fsync", what, os.fdatasync if data_only else os.fsync, f.fd)
        self.m.synced()

    def op_reopen(self):
        if self.fds and (len(self.fds) >= self.a.max_fds or self.rng.random() < 0.5):
            f = self.rng.choice(self.fds)
            self.note(f"close({f})")
            self.close_fd(f)
        else:
            f = self.open_fd()
            self.note(f"open -> {f}")

    def op_stat(self):
        if self.fds and self.rng.random() < 0.5:
            f = self.rng.choice(self.fds)
            what = f"fstat({f})"
            st = os.fstat(f.fd)
        else:
            what = "stat(disk.raw)"
            st = self.call("stat", what, os.stat, self.mnt)
        self.note(what)
        self.check_stat(what, st)

    def check_stat(self, what, st):
        self.observe_size(st.st_size, what)
        if not stat.S_ISREG(st.st_mode):
            self.fail("stat", f"{what}: not a regular file (mode {st.st_mode:o})")
        if st.st_nlink != 1:
            self.fail("stat", f"{what}: st_nlink {st.st_nlink}")
        if self.allow("perm"):
            if stat.S_IMODE(st.st_mode) != self.expect_mode:
                self.fail("stat_mode", f"{what}: mode {stat.S_IMODE(st.st_mode):04o}, expected "
                          f"{self.expect_mode:04o}")
            if (st.st_uid, st.st_gid) != (self.expect_uid, self.expect_gid):
                self.fail("stat_owner", f"{what}: owner {st.st_uid}:{st.st_gid}, expected "
                          f"{self.expect_uid}:{self.expect_gid} (the mounting user)")
        if self.allow("blocks"):
            img = os.stat(self.img)
            if st.st_blocks < 0 or st.st_blocks * 512 > round_up(img.st_size, PAGE) + MIB:
                self.fail("stat_blocks", f"{what}: st_blocks {st.st_blocks} "
                          f"({st.st_blocks * 512} bytes) for an image file of {img.st_size} "
                          "bytes")

    def op_chmod(self):
        mode = self.rng.choice([0o600, 0o640, 0o644, 0o660, 0o604])
        r = self.rng.random()
        if r < 0.3:
            # chown: root gives the file away and back; others may only "chown" to themselves.
            uid = self.rng.choice([self.uid, 65534, 0]) if self.uid == 0 else self.uid
            gid = self.rng.choice([self.gid, 65534]) if self.uid == 0 else self.gid
            what = f"chown(disk.raw, {uid}, {gid})"
            self.note(what)
            self.call("chown", what, os.chown, self.mnt, uid, gid)
            self.expect_uid, self.expect_gid = uid, gid
            if self.uid != 0 and self.rng.random() < 0.5:
                what = "chown(disk.raw, 0, -1) by a user"
                self.note(what)
                self.expect_error("chown", what, (errno.EPERM,), os.chown, self.mnt, 0, -1)
        else:
            f = self.rng.choice(self.fds) if self.fds and r < 0.6 else None
            what = f"fchmod({f}, {mode:04o})" if f else f"chmod(disk.raw, {mode:04o})"
            self.note(what)
            if f:
                self.call("chmod", what, os.fchmod, f.fd, mode)
            else:
                self.call("chmod", what, os.chmod, self.mnt, mode)
            self.expect_mode = mode
        st = os.stat(self.mnt)
        if stat.S_IMODE(st.st_mode) != self.expect_mode or (st.st_uid, st.st_gid) != (
                self.expect_uid, self.expect_gid):
            self.fail("chmod", f"after {what}: mode {stat.S_IMODE(st.st_mode):04o} owner "
                      f"{st.st_uid}:{st.st_gid}, expected {self.expect_mode:04o} "
                      f"{self.expect_uid}:{self.expect_gid} (the call was ignored)")

    def op_utime(self):
        t = 1_600_000_000 + self.rng.randrange(0, 10**8)
        ns = (t * 10**9 + self.rng.randrange(0, 10**9), t * 10**9 + self.rng.randrange(0, 10**9))
        what = f"utime(disk.raw, mtime={ns[1]})"
        self.note(what)
        self.call("utime", what, lambda: os.utime(self.mnt, ns=ns))
        st = os.stat(self.mnt)
        if st.st_mtime_ns != ns[1]:
            self.fail("utime", f"{what}: st_mtime_ns is {st.st_mtime_ns} afterwards (the call "
                      "was ignored)")

    def op_limit(self):
        """Growing past the format's maximum size fails with EFBIG and changes nothing."""
        mx = self.max_image
        L = self.fstat_size_path("stat before growing past the maximum")
        off = mx + self.rng.choice([0, 1, 512, self.rng.randint(0, 1 << 30)])
        variants = ["truncate", "direct_write", "falloc"]
        if not self.wb:
            # With the kernel writeback cache a buffered write past the end only reaches the
            # daemon at writeback: the daemon cannot refuse it in the write call.
            variants.append("write")
        v = self.rng.choice(variants)
        if v == "truncate":
            off += 512
        what = f"{v} {'to' if v == 'truncate' else 'at'} {off}, past the format maximum {mx}"
        self.note(what)
        if v == "truncate":
            self.expect_error("limit", what, (errno.EFBIG,), os.truncate, self.mnt, off)
        elif v == "falloc":
            f = self.pick_fd(need="w", append=False)
            self.expect_error("limit", what, (errno.EFBIG,), fallocate, f.fd,
                              self.rng.choice([0, FALLOC_FL_ZERO_RANGE]), off, 4096)
        elif v == "direct_write":
            f = self.pick_fd(need="w", direct=True, append=False)
            off = off // SECTOR * SECTOR
            self.dbuf[:4096] = self.rand_data(4096)
            view = memoryview(self.dbuf)[:4096]
            try:
                self.expect_error("limit", what, (errno.EFBIG,), os.pwritev, f.fd, [view], off)
            finally:
                view.release()
        else:
            f = self.pick_fd(need="w", direct=False, append=False)
            self.expect_error("limit", what, (errno.EFBIG,), os.pwrite, f.fd, b"x" * 100, off)
        self.observe_unchanged_size(what, L, "limit")

    # -- remounts and the final checks --------------------------------------------------------

    def read_all(self, what):
        """The whole mounted file, through a fresh descriptor, in 1 MiB reads."""
        fd = self.call("open", f"{what}: open", os.open, self.mnt, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            pos = 0
            while pos < size:
                chunk = self.call("read_error", f"{what}: pread at {pos}", os.pread, fd,
                                  min(MIB, size - pos), pos)
                if not chunk:
                    self.fail("read_length", f"{what}: end of file at {pos}, size {size}")
                yield pos, chunk
                pos += len(chunk)
        except BaseException:  # also GeneratorExit, when the caller found a mismatch
            self.close(fd, "", check=False)
            raise
        self.close(fd, f"{what}: the reading descriptor")

    def remount(self, crash):
        self.note(f"{'kill -9 the daemon' if crash else 'unmount'} and mount again")
        if crash:
            self.mount.crash()
            self.close_all(check=False)
            self.crashes += 1
        else:
            self.close_all()
            self.mount.unmount()
            self.qemu_check("qemu-img check after a clean unmount")
        self.mount.mount()
        self.remounts += 1
        self.expect_mode, self.expect_uid, self.expect_gid = self.default_owner()
        st = os.stat(self.mnt)
        what = "stat after the remount"
        L, D = self.sizes()
        if crash:
            lo = round_up(self.m.durable_size, SECTOR)
            if st.st_size % SECTOR or not lo <= st.st_size <= D:
                self.fail("crash_size", f"{what}: size {st.st_size}, expected a multiple of 512 "
                          f"in [{lo}, {D}] (size at the last fsync {self.m.durable_size})")
            pages = {}
            for pos, chunk in self.read_all("reading the disk after the crash"):
                for i in range(0, len(chunk), PAGE):
                    pi = (pos + i) // PAGE
                    got = chunk[i:i + PAGE]
                    bad = self.m.allowed_after_crash(pi, got)
                    if bad is not None:
                        want = self.m.read(pi * PAGE + bad, 1)[0]
                        self.fail("crash_data", f"after kill -9 and remount: byte "
                                  f"{pi * PAGE + bad} is {got[bad]:#04x}; it held "
                                  f"{want:#04x} and no value written since the last fsync "
                                  f"matches{self.describe_page(pi * PAGE + bad)}")
                    if any(got):
                        pages[pi] = bytearray(got.ljust(PAGE, b"\0"))
            self.m.adopt(st.st_size, pages)
        else:
            if st.st_size != D:
                self.fail("remount_size", f"{what}: size {st.st_size}, expected {D} (the "
                          f"model's {L} rounded up to 512)")
            self.m.size = D
            for pos, chunk in self.read_all("reading the disk after the remount"):
                self.check_data("after a clean unmount and remount", pos, chunk,
                                check="remount_data")
            self.m.synced()
        self.check_stat(what, os.stat(self.mnt))
        if self.allow("blocks"):
            img_blocks = os.stat(self.img).st_blocks
            if st.st_blocks != img_blocks:
                self.fail("stat_blocks", f"{what}: st_blocks {st.st_blocks}, the image file "
                          f"uses {img_blocks}")

    def qemu_check(self, what):
        r = subprocess.run(["qemu-img", "check", "-f", "qed", self.img], capture_output=True,
                           text=True)
        if r.returncode != 0:
            self.fail("qemu_check", f"{what}: exit status {r.returncode}: "
                      f"{(r.stdout + r.stderr).strip()[-800:]}")

    def final_checks(self):
        self.op_no += 1
        self.kind = "final"
        self.last_progress = time.monotonic()
        self.note("final: unmount, qemu-img check, map, convert")
        self.close_all()
        self.mount.unmount()
        self.qemu_check("qemu-img check after the final unmount")
        D = self.m.disk_size()
        if self.allow("map"):
            r = subprocess.run(["qemu-img", "map", "--output=json", "-f", "qed", self.img],
                               capture_output=True, text=True)
            if r.returncode != 0:
                self.fail("qemu_map", f"qemu-img map: {r.stderr.strip()}")
            cs = self.m.cluster
            for e in json.loads(r.stdout):
                if not e.get("data"):
                    continue
                start, end = e["start"], e["start"] + e["length"]
                c = start // cs
                while c * cs < end:
                    if c not in self.m.touched and (c + 1) * cs <= D:
                        self.fail("map_hole", f"qemu-img map reports data in cluster {c} "
                                  f"([{c * cs}, {(c + 1) * cs})), which was never written or "
                                  "was punched as a whole")
                    c += 1
        raw = os.path.join(self.dir, "image.raw")
        r = subprocess.run(["qemu-img", "convert", "-f", "qed", "-O", "raw", self.img, raw],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.fail("convert", f"qemu-img convert: {r.stderr.strip()}")
        try:
            size = os.stat(raw).st_size
            if size != D:
                self.fail("convert_size", f"qemu-img convert -O raw gives {size} bytes, expected "
                          f"{D} (the model's {self.m.size} rounded up to 512)")
            with open(raw, "rb") as f:
                pos = 0
                while pos < size:
                    chunk = f.read(MIB)
                    self.check_data("qemu-img convert -O raw", pos, chunk, check="convert_data")
                    pos += len(chunk)
        finally:
            os.unlink(raw)

    # -- the run -------------------------------------------------------------------------------

    def setup(self):
        a = self.a
        os.makedirs(self.dir, exist_ok=True)
        for p in (self.img, self.scratch_path):
            if os.path.exists(p):
                os.unlink(p)
        r = subprocess.run([
            "qemu-img", "create", "-q", "-f", "qed", "-o",
            f"cluster_size={a.cluster_size},table_size={a.table_size}", self.img,
            str(a.size)
        ], capture_output=True, text=True)
        if r.returncode != 0:
            self.fail("setup", f"qemu-img create: {r.stderr.strip()}")
        self.m = Model(a.size, a.cluster_size)
        self.mount.mount()
        self.check_stat("stat after mounting", os.stat(self.mnt))

    def run(self):
        a = self.a
        kinds = [(k, w) for k, w, classes in OPS if all(self.allow(c) for c in classes)]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        phases = max(1, a.phases)
        boundaries = {round(a.ops * i / phases) for i in range(1, phases)}
        self.setup()
        for i in range(a.ops):
            if i in boundaries and self.allow("remount"):
                self.op_no += 1
                self.kind = "remount"
                self.last_progress = time.monotonic()
                crash = self.allow("crash") and self.rng.random() < 0.4
                self.remount(crash)
                self.counts["crash_remount" if crash else "clean_remount"] += 1
            self.op_no += 1
            self.kind = self.rng.choices(names, weights)[0]
            self.last_progress = time.monotonic()
            if self.kind == "mmap_read":
                self.op_mmap(False)
            elif self.kind == "mmap_write":
                self.op_mmap(True)
            else:
                getattr(self, "op_" + self.kind)()
            self.counts[self.kind] += 1
        self.final_checks()


# Set once the watchdog reported a hang: it then ends the process, and the main thread (which
# aborting the mount wakes up) must not report anything more.
_hung = threading.Event()


def watchdog(ex, timeout):
    """Fails the run if one operation takes longer than timeout seconds (a hang)."""
    while True:
        time.sleep(1)
        if time.monotonic() - ex.last_progress > timeout:
            _hung.set()
            report(ex, Failure("hang", f"op #{ex.op_no} ({ex.kind}) did not finish within "
                               f"{timeout} s"))
            print(result_line(ex, False), flush=True)
            # Starting fusermount3 could block too (the child closes the mount's descriptors).
            ex.mount.abort()
            os._exit(1)


def result_line(ex, ok):
    kinds = ",".join(f"{k}:{v}" for k, v in sorted(ex.counts.items()))
    return (f"RESULT status={'pass' if ok else 'fail'} ops={ex.op_no} remounts={ex.remounts} "
            f"crashes={ex.crashes} kinds={kinds}")


def report(ex, failure):
    a = ex.a
    print(f"FAIL check={failure.check} seed={a.seed} op=#{ex.op_no} ({ex.kind}): "
          f"{failure.message}", flush=True)
    print(f"  configuration: cache={a.cache} writeback-cache={a.writeback_cache or 'default'} "
          f"aio={a.aio} uid={os.getuid()} extra={shlex.join(a.extra_opts) or '-'} "
          f"cluster_size={a.cluster_size} table_size={a.table_size} initial size={a.size}")
    print("  last operations:")
    for line in ex.log:
        print(f"    {line}")
    argv = sys.argv[1:]
    if not any(x.startswith("--qedfuse") for x in argv):
        argv += ["--qedfuse", a.qedfuse]
    if not any(x.startswith("--extra-opt") for x in argv):
        argv += [f"--extra-opt={x}" for x in a.extra_opts]
    print(f"  repeat: {shlex.join(['python3', os.path.abspath(sys.argv[0])] + argv)}")
    print(f"  daemon output: {ex.mount.log_tail(5)}", flush=True)
    for line in ex.mount.sanitizer_reports():
        print(f"  {line}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--dir", required=True, help="work directory (image, mountpoint, logs)")
    ap.add_argument("--qedfuse", default=os.environ.get("QEDFUSE"), help="daemon ($QEDFUSE)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--phases", type=int, default=3, help="mounts (remounts + 1)")
    ap.add_argument("--cache", choices=["writeback", "none"], default="writeback")
    ap.add_argument("--writeback-cache", choices=["on", "off"], default=None)
    ap.add_argument("--aio", choices=["io_uring", "threads"], default="io_uring")
    ap.add_argument("--foreground", action="store_true",
                    help="run qedfuse -f and use the file as soon as it is mounted")
    ap.add_argument("--extra-opt", dest="extra_opts", action="append", default=None,
                    help="extra qedfuse argument (repeatable; default: the words of "
                    "$QEDFUSE_EXTRA_OPTS)")
    ap.add_argument("--skip", default="", help="feature classes to leave out (debugging)")
    ap.add_argument("--size", type=int, default=None, help="initial disk size (random)")
    ap.add_argument("--cluster-size", type=int, default=None)
    ap.add_argument("--table-size", type=int, default=None)
    ap.add_argument("--max-size", type=int, default=24 * MIB, help="the disk grows up to this")
    ap.add_argument("--max-fds", type=int, default=6)
    ap.add_argument("--op-timeout", type=float, default=120)
    ap.add_argument("--log-tail", type=int, default=25)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if not a.qedfuse:
        ap.error("no daemon: use --qedfuse or set QEDFUSE")
    a.qedfuse = os.path.abspath(a.qedfuse)
    if a.extra_opts is None:
        a.extra_opts = shlex.split(os.environ.get("QEDFUSE_EXTRA_OPTS", ""))
    a.skip = [s for s in a.skip.split(",") if s]
    bad = [s for s in a.skip if s not in SKIP_CLASSES]
    if bad:
        ap.error(f"unknown --skip class {','.join(bad)} (known: {','.join(sorted(SKIP_CLASSES))})")
    # Geometry and initial size come from the seed unless given.
    g = random.Random(a.seed * 1000003 + 17)
    if a.cluster_size is None:
        a.cluster_size = g.choice([4096, 16384, 65536, 65536, 65536])
    if a.table_size is None:
        a.table_size = g.choice([2, 4, 4])
    if a.size is None:
        a.size = g.choice([
            0, 512, 4096, a.cluster_size, 3 * a.cluster_size - 512, MIB + 512, 3 * MIB,
            g.randrange(0, 8 * MIB, 512)
        ])

    # Become the daemon's parent when it detaches (to see its exit status and reap it at once).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    ex = Exerciser(a)
    threading.Thread(target=watchdog, args=(ex, a.op_timeout), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rc = 0
    try:
        ex.run()
    except Failure as f:
        if not _hung.is_set():
            report(ex, f)
        rc = 1
    except Exception as e:  # a bug in the exerciser or an unexpected error: still report it
        if not _hung.is_set():
            traceback.print_exc()
            report(ex, Failure("exerciser", f"{type(e).__name__}: {e}"))
        rc = 2
    finally:
        if _hung.is_set():
            threading.Event().wait()  # the watchdog ends the process
        ex.mount.cleanup()
    print(result_line(ex, rc == 0), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
