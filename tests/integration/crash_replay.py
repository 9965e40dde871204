#!/usr/bin/env python3
"""Crash-state replayer for logs written by qedfuse --debug-log-writes (the dm-log-writes /
CrashMonkey method).

Usage: crash_replay.py [options] BASE_IMAGE LOG

BASE_IMAGE is a copy of the QED image file taken before the logged mount (the log starts from
the image as it was when it was opened). LOG is the record stream described in
include/qedfuse/block/debug/write_log_driver.h.

Crash model. A crash at log position T (the records before T had happened) leaves on disk:
 - every image write, zero write or truncate recorded before the kImageFlushBegin of the last
   image flush that completed before T (mandatory), in log order;
 - any subset of the other image mutations recorded before T (optional). A host may persist
   unflushed writes in any order and the crash cuts that order anywhere, so every subset is a
   possible outcome. A host never puts an older write over a newer one at the same place, so the
   chosen subset is applied in log order (disjoint writes commute, so any other order gives the
   same bytes). In "torn" states each optional write is cut into 4 KiB pieces chosen one by one,
   as a page cache writes them back.
States checked:
 - flush boundaries: for every completed image flush k, everything recorded up to it;
 - in-between: for the interval between flushes k and k+1 (and before the first, after the
   last), several states at a random T in the interval with a random subset of the optional
   mutations (whole or torn), plus the state with every optional mutation dropped.
For each state the image is materialised, then:
 1. if NEED_CHECK is clear, `qemu-img check` must find no corruption (an image that claims to be
    consistent is opened without a check by QEMU);
 2. our repair runs (`qedimg check -r all`, the repair of a dirty read-write open);
 3. `qemu-img check` must exit 0 (clean) or 3 (leaked clusters only; counted);
 4. the guest view (`qemu-img convert -O raw`) must hold every guest write recorded before the
    kGuestFlushBegin of the last guest flush that completed before T, except bytes written again
    by any later guest write (which may hold either);
 5. optionally (--e2fsck) `e2fsck -fy` then `e2fsck -fn` on the guest view; the second must
    exit 0.
Random choices come from --seed (default: $QEDFUSE_SEED or a fresh one); the seed is printed and
every failure names its state so that it can be replayed with --seed and --only.
"""

import argparse
import bisect
import json
import mmap
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

FILE_MAGIC = b"QEDFWLOG"
REC_MAGIC = 0x5243574C
REC = struct.Struct("<IHHQQQQ")

IMAGE_WRITE, IMAGE_ZERO, IMAGE_TRUNCATE, IMAGE_FLUSH_BEGIN, IMAGE_FLUSH, IO_ERROR = 1, 2, 3, 4, 5, 6
GUEST_WRITE, GUEST_ZERO, GUEST_TRUNCATE, GUEST_FLUSH_BEGIN, GUEST_FLUSH_DONE = 16, 17, 18, 19, 20
END = 32
IMAGE_MUTATIONS = (IMAGE_WRITE, IMAGE_ZERO, IMAGE_TRUNCATE)
GUEST_MUTATIONS = (GUEST_WRITE, GUEST_ZERO, GUEST_TRUNCATE)
PAGE = 4096


class LogError(Exception):
    pass


class Record:
    __slots__ = ("idx", "type", "offset", "length", "data_pos")

    def __init__(self, idx, rtype, offset, length, data_pos):
        self.idx, self.type, self.offset, self.length, self.data_pos = (
            idx, rtype, offset, length, data_pos)


def parse_log(buf, allow_truncated):
    if len(buf) < 16 or buf[:8] != FILE_MAGIC:
        raise LogError("not a qedfuse write log (bad magic)")
    version, hsize = struct.unpack_from("<II", buf, 8)
    if version != 1:
        raise LogError("unsupported write log version %d" % version)
    pos, recs, ended = hsize, [], False
    while pos < len(buf):
        if pos + REC.size > len(buf):
            break  # a torn tail (killed daemon)
        magic, rtype, _, seq, off, length, payload = REC.unpack_from(buf, pos)
        if magic != REC_MAGIC or seq != len(recs):
            raise LogError("bad record %d at byte %d" % (len(recs), pos))
        if pos + REC.size + payload > len(buf):
            break
        if rtype == IO_ERROR:
            raise LogError("record %d: an I/O error was logged (type %d); not replayable" %
                           (seq, off))
        if rtype == END:
            ended = True
            break
        recs.append(Record(seq, rtype, off, length, pos + REC.size))
        pos += REC.size + payload
    if not ended and not allow_truncated:
        raise LogError("the log has no end record (daemon killed or log incomplete); "
                       "use --allow-truncated to replay the prefix")
    return recs


def pair_flushes(recs, begin_type, done_type):
    """[(done_idx, begin_idx)] per completed flush. A completion is paired with the earliest
    outstanding begin (the cautious choice when flushes overlap)."""
    outstanding, out = [], []
    for r in recs:
        if r.type == begin_type:
            outstanding.append(r.idx)
        elif r.type == done_type:
            if not outstanding:
                raise LogError("record %d: flush completion without a begin" % r.idx)
            out.append((r.idx, outstanding.pop(0)))
    return out


class IntervalMap:
    """Non-overlapping [start, end) -> value segments; later paints win."""

    def __init__(self):
        self.starts, self.ends, self.vals = [], [], []

    def paint(self, start, end, val):
        if start >= end:
            return
        s, e, v = self.starts, self.ends, self.vals
        i = bisect.bisect_right(s, start) - 1
        if i >= 0 and e[i] > start:
            i_first = i
        else:
            i_first = i + 1
        j = bisect.bisect_left(s, end)  # segments starting before |end| are [i_first, j)
        new_s, new_e, new_v = [], [], []
        if i_first < j and s[i_first] < start:
            new_s.append(s[i_first]); new_e.append(start); new_v.append(v[i_first])
        new_s.append(start); new_e.append(end); new_v.append(val)
        if i_first < j and e[j - 1] > end:
            new_s.append(end); new_e.append(e[j - 1]); new_v.append(v[j - 1])
        s[i_first:j], e[i_first:j], v[i_first:j] = new_s, new_e, new_v


class GuestModel:
    """The final guest contents and, per byte range, the index of the last guest mutation."""

    def __init__(self, buf, recs):
        self.last = IntervalMap()
        self.size = 0
        for r in recs:
            if r.type in (GUEST_WRITE, GUEST_ZERO):
                self.size = max(self.size, r.offset + r.length)
        truncs = [r for r in recs if r.type == GUEST_TRUNCATE]
        for r in truncs:
            self.size = max(self.size, r.offset)
        self.final = bytearray(self.size)
        for r in recs:
            if r.type == GUEST_WRITE:
                self.final[r.offset:r.offset + r.length] = buf[r.data_pos:r.data_pos + r.length]
                self.last.paint(r.offset, r.offset + r.length, r.idx)
            elif r.type == GUEST_ZERO:
                self.final[r.offset:r.offset + r.length] = bytes(r.length)
                self.last.paint(r.offset, r.offset + r.length, r.idx)
            elif r.type == GUEST_TRUNCATE and r.offset < self.size:
                # Bytes past a shrink read back as zeros once the device grows again.
                self.final[r.offset:] = bytes(self.size - r.offset)
                self.last.paint(r.offset, self.size, r.idx)

    def ranges(self, size):
        """(touched, untouched): merged ranges some guest mutation covers, and the rest of
        [0, size). Touched ranges closer than 1 MiB are joined (fewer reads)."""
        touched = []
        for s, e in zip(self.last.starts, self.last.ends):
            if touched and s - touched[-1][1] < (1 << 20):
                touched[-1][1] = max(touched[-1][1], e)
            else:
                touched.append([s, e])
        exact, untouched, pos = [], [], 0
        for s, e in zip(self.last.starts, self.last.ends):
            if s > pos:
                untouched.append((pos, s))
            pos = max(pos, e)
        if pos < size:
            untouched.append((pos, size))
        return [tuple(t) for t in touched], untouched

    def required(self, bound):
        """Merged ranges whose last guest mutation happened before record |bound|."""
        out = []
        lm = self.last
        for s, e, v in zip(lm.starts, lm.ends, lm.vals):
            if v < bound:
                if out and out[-1][1] == s:
                    out[-1][1] = e
                else:
                    out.append([s, e])
        return out


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def alive(pid):
    """True while |pid| runs (a zombie waiting for its reaper has finished)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def daemon_pids(text):
    """PIDs of qedfuse processes whose command line mentions |text|."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % d) as f:
                if f.read().strip() != "qedfuse":
                    continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


PHASE_SECONDS = {}


class RawView:
    """A raw guest view written sparsely by qemu-img convert: ranges are read on demand and
    holes are known to be zeros."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def get(self, s, e):
        data = os.pread(self.fd, e - s, s)
        return data + bytes(e - s - len(data)) if len(data) < e - s else data

    def is_zero(self, s, e):
        e = min(e, self.size)
        while s < e:
            try:
                d = os.lseek(self.fd, s, os.SEEK_DATA)
            except OSError:
                return True  # only a hole up to the end
            if d >= e:
                return True
            h = min(os.lseek(self.fd, d, os.SEEK_HOLE), e)
            while d < h:
                n = min(h - d, 8 << 20)
                if os.pread(self.fd, n, d) != bytes(n):
                    return False
                d += n
            s = h
        return True


def qed_virtual_size(path):
    """The image size field of a QED header (offset 48)."""
    with open(path, "rb") as f:
        head = f.read(56)
    if len(head) < 56 or head[:4] != b"QED\0":
        raise LogError("%s is not a QED image" % path)
    return struct.unpack_from("<Q", head, 48)[0]


def run(cmd, **kw):
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    key = os.path.basename(cmd[0]) + " " + cmd[1]
    PHASE_SECONDS[key] = PHASE_SECONDS.get(key, 0.0) + time.monotonic() - t0
    return p


class Replayer:
    def __init__(self, args):
        self.args = args
        fd = os.open(args.log, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            self.buf = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
        finally:
            os.close(fd)
        self.recs = parse_log(self.buf, args.allow_truncated)
        self.nrec = len(self.recs)
        self.image_flushes = pair_flushes(self.recs, IMAGE_FLUSH_BEGIN, IMAGE_FLUSH)
        self.guest_flushes = pair_flushes(self.recs, GUEST_FLUSH_BEGIN, GUEST_FLUSH_DONE)
        self.image_table = self.bound_table(self.image_flushes)
        self.guest_table = self.bound_table(self.guest_flushes)
        self.mutations = [r for r in self.recs if r.type in IMAGE_MUTATIONS]
        self.mut_idx = [r.idx for r in self.mutations]
        self.guest = GuestModel(self.buf, self.recs)
        self.virtual_size = qed_virtual_size(args.base)
        self.guest.touched, self.guest.untouched = self.guest.ranges(self.virtual_size)
        with open(args.base, "rb") as f:
            self.base = f.read()
        self.stats = dict(states=0, boundary=0, between=0, torn=0, leaks=0, repaired=0,
                          need_check=0, failed=0, e2fsck=0)
        self.failures = []

    # --- crash points ---------------------------------------------------------------------

    @staticmethod
    def bound_table(flushes):
        """(sorted completion indexes, running max of their begins) for bound lookups."""
        done, best, m = [], [], 0
        for d, b in sorted(flushes):
            m = max(m, b)
            done.append(d)
            best.append(m)
        return done, best

    @staticmethod
    def lookup(table, t):
        done, best = table
        k = bisect.bisect_left(done, t)  # completions before record t
        return best[k - 1] if k else 0

    def mandatory_bound(self, t):
        """Image mutations before this record index are on disk after a crash at |t|."""
        return self.lookup(self.image_table, t)

    def guest_bound(self, t):
        """Guest writes before this record index must read back after a crash at |t|."""
        return self.lookup(self.guest_table, t)

    def plan(self, rng):
        """A list of states (description dicts), in increasing mandatory bound."""
        a = self.args
        dones = [d for d, _ in self.image_flushes]
        states = []
        for k, d in enumerate(dones):
            states.append(dict(kind="boundary", flush=k, t=d + 1, keep="all"))
        # Crash points T between completions k-1 and k: T in [d(k-1) + 1, d(k)]; before the
        # first completion T in [0, d(0)], after the last one T in [d(last) + 1, records].
        lows = [0] + [d + 1 for d in dones]
        highs = dones + [self.nrec]
        for k, (lo, hi) in enumerate(zip(lows, highs)):
            if hi < lo:
                continue
            bound = self.mandatory_bound(hi)
            nopt = bisect.bisect_left(self.mut_idx, hi) - bisect.bisect_left(self.mut_idx, bound)
            if nopt == 0:
                continue  # nothing unflushed here: a boundary state covers it
            states.append(dict(kind="between", flush=k - 1, t=hi, keep="none"))
            for _ in range(a.per_interval):
                t = rng.randint(lo, hi)
                torn = rng.random() < a.torn_fraction
                states.append(dict(kind="between", flush=k - 1, t=t, torn=torn,
                                   keep="random", p=rng.choice((0.25, 0.5, 0.75)),
                                   seed=rng.getrandbits(32)))
        for n, s in enumerate(states):
            s["id"] = n
        if a.only is not None:
            return [s for s in states if s["id"] in a.only]
        if a.max_states and len(states) > a.max_states:
            keep = sorted(rng.sample(range(len(states)), a.max_states))
            states = [states[k] for k in keep]
        return states

    # --- materialising ----------------------------------------------------------------------

    @staticmethod
    def apply(img, r, buf, start=None, end=None):
        """Applies mutation |r| (or its piece [start, end) of the file) to bytearray |img|."""
        if r.type == IMAGE_TRUNCATE:
            if r.offset < len(img):
                del img[r.offset:]
            else:
                img.extend(bytes(r.offset - len(img)))
            return
        if start is None:
            start, end = r.offset, r.offset + r.length
        if end > len(img):
            img.extend(bytes(end - len(img)))
        if r.type == IMAGE_WRITE:
            p = r.data_pos + (start - r.offset)
            img[start:end] = buf[p:p + (end - start)]
        else:
            img[start:end] = bytes(end - start)

    def optional_records(self, state, bound):
        lo = bisect.bisect_left(self.mut_idx, bound)
        hi = bisect.bisect_left(self.mut_idx, state["t"])
        return self.mutations[lo:hi]

    def materialise(self, state, base_img, bound, path):
        img = bytearray(base_img)
        opt = self.optional_records(state, bound)
        rng = random.Random(state.get("seed", 0))
        kept = 0
        for r in opt:
            if state["keep"] == "all":
                self.apply(img, r, self.buf)
                kept += 1
            elif state["keep"] == "random":
                if state.get("torn") and r.type != IMAGE_TRUNCATE:
                    s = r.offset
                    while s < r.offset + r.length:
                        e = min((s // PAGE + 1) * PAGE, r.offset + r.length)
                        if rng.random() < state["p"]:
                            self.apply(img, r, self.buf, s, e)
                            kept += 1
                        s = e
                elif rng.random() < state["p"]:
                    self.apply(img, r, self.buf)
                    kept += 1
        with open(path, "wb") as f:
            f.write(img)
        return len(opt), kept

    # --- checks -------------------------------------------------------------------------------

    def check_state(self, state, img_path, raw_path):
        a = self.args
        problems = []
        with open(img_path, "rb") as f:
            head = f.read(24)
        need_check = len(head) >= 24 and (struct.unpack_from("<Q", head, 16)[0] & 2) != 0
        if need_check:
            self.stats["need_check"] += 1
        else:
            p = run(["qemu-img", "check", "-f", "qed", img_path])
            if p.returncode not in (0, 3):
                problems.append("NEED_CHECK clear but qemu-img check exits %d before repair:\n%s"
                                % (p.returncode, p.stdout.decode(errors="replace")))
        ours = None
        if a.qedfuse:
            # The real thing: a read-write mount repairs the dirty image at open; the guest view
            # is read through the mount (our read path), then the daemon closes the image.
            ours, msg = self.mount_and_read(img_path, self.guest.touched)
            if ours is None:
                problems.append(msg)
                return problems
            if "repaired" in msg:
                self.stats["repaired"] += 1
        else:
            p = run([a.qedimg, "check", "-r", "all", "--output=json", img_path])
            if p.returncode not in (0, 3):
                problems.append("qedimg check -r all exits %d:\n%s"
                                % (p.returncode, p.stdout.decode(errors="replace")))
            else:
                try:
                    rep = json.loads(p.stdout.decode())
                    if rep.get("corruptions-fixed") or rep.get("leaks-fixed"):
                        self.stats["repaired"] += 1
                except ValueError:
                    pass
        p = run(["qemu-img", "check", "-f", "qed", img_path])
        if p.returncode == 3 and not a.qedfuse:
            # qedimg check -r repairs like qemu-img, which never fixes QED leaks; the repair at
            # a read-write mount compacts them away, so after it a leak is a failure.
            self.stats["leaks"] += 1
            self.note = " [leaks]"
        elif p.returncode != 0:
            problems.append("qemu-img check exits %d after repair:\n%s"
                            % (p.returncode, p.stdout.decode(errors="replace")))
            return problems  # the guest view is meaningless
        p = run(["qemu-img", "convert", "-f", "qed", "-O", "raw", img_path, raw_path])
        if p.returncode != 0:
            problems.append("qemu-img convert exits %d:\n%s"
                            % (p.returncode, p.stdout.decode(errors="replace")))
            return problems
        gbound = self.guest_bound(state["t"])
        with RawView(raw_path) as view:
            self.verify_view(view, gbound, ours, problems)
        done_flushes = bisect.bisect_left(self.guest_table[0], state["t"])
        if a.e2fsck and not problems and done_flushes >= a.e2fsck_from:
            self.stats["e2fsck"] += 1
            run(["e2fsck", "-fy", raw_path])
            p = run(["e2fsck", "-fn", raw_path])
            if p.returncode != 0:
                problems.append("e2fsck -fn exits %d after e2fsck -fy:\n%s"
                                % (p.returncode, p.stdout.decode(errors="replace")[-3000:]))
        return problems

    def verify_view(self, view, gbound, ours, problems):
        bad = []
        for s, e in self.guest.required(gbound):
            got = view.get(s, e)
            if len(got) < e - s:
                got = got + bytes(e - s - len(got))
            if got != self.guest.final[s:e]:
                # Find the first differing 4 KiB block for the report.
                k = 0
                while k < e - s and got[k:k + PAGE] == self.guest.final[s + k:s + k + PAGE]:
                    k += PAGE
                bad.append("guest bytes [%d, %d) differ (first at block %d)" % (s, e, s + k))
                if len(bad) >= 3:
                    break
        if bad:
            problems.append("fsync-acknowledged data lost (guest writes before record %d): %s"
                            % (gbound, "; ".join(bad)))
        # Bytes the guest never wrote must read as zeros (no stale or foreign cluster exposed).
        for s, e in self.guest.untouched:
            if not view.is_zero(s, e):
                problems.append("guest bytes [%d, %d) were never written but are not zero"
                                % (s, e))
                break
        if view.size != self.virtual_size:
            problems.append("guest view is %d bytes, expected %d" % (view.size, self.virtual_size))
        # Our read path on the repaired image gives what QEMU reads.
        if ours is not None:
            for (s, e), got in zip(self.guest.touched, ours):
                theirs = view.get(s, e)
                if got != theirs:
                    k = 0
                    while k < e - s and got[k:k + PAGE] == theirs[k:k + PAGE]:
                        k += PAGE
                    problems.append("guest bytes [%d, %d) read through qedfuse differ from "
                                    "qemu-img's (first at block %d)" % (s, e, s + k))
                    break

    def mount_and_read(self, img_path, ranges):
        """Mounts |img_path| read-write with qedfuse (which returns once the mount is live),
        reads |ranges| of the device, unmounts and waits for the daemon to close the image. Returns
        (bytes, qedfuse messages) or (None, problem)."""
        mnt = os.path.join(os.path.dirname(img_path), "mnt.raw")
        p = run([self.args.qedfuse, img_path, mnt])
        msg = p.stdout.decode(errors="replace")
        if p.returncode != 0:
            return None, "qedfuse exits %d at open: %s" % (p.returncode, msg)
        pids = daemon_pids(mnt)
        data, problem = None, None
        try:
            t0 = time.monotonic()
            fd = os.open(mnt, os.O_RDONLY)
            try:
                data = [os.pread(fd, e - s, s) for s, e in ranges]
            finally:
                os.close(fd)
            PHASE_SECONDS["read via mount"] = (PHASE_SECONDS.get("read via mount", 0.0) +
                                               time.monotonic() - t0)
        except OSError as e:
            problem = "reading the guest view through qedfuse: %s" % e
        finally:
            u = run(["fusermount3", "-u", mnt])
            if u.returncode != 0:
                problem = problem or "fusermount3 -u: %s" % u.stdout.decode(errors="replace")
                run(["fusermount3", "-u", "-z", mnt])
            t0 = time.monotonic()
            deadline = t0 + 60
            while any(alive(pid) for pid in pids):
                if time.monotonic() > deadline:
                    problem = problem or "the qedfuse daemon did not exit after the unmount"
                    break
                time.sleep(0.002)
            PHASE_SECONDS["daemon exit"] = (PHASE_SECONDS.get("daemon exit", 0.0) +
                                            time.monotonic() - t0)
        if problem is not None:
            return None, problem
        with open(img_path, "rb") as f:
            head = f.read(24)
        if (struct.unpack_from("<Q", head, 16)[0] & 2) != 0:
            return None, "NEED_CHECK still set after qedfuse closed the image"
        return data, msg

    def describe(self, s, bound, nopt, kept):
        d = "state %d: %s after flush %d, crash before record %d" % (
            s["id"], s["kind"], s["flush"], s["t"])
        if s["kind"] == "between":
            d += ", kept %d %s of %d unflushed mutations (records >= %d optional)" % (
                kept, "4 KiB pieces" if s.get("torn") else "whole", nopt, bound)
        return d

    def run(self):
        a = self.args
        seed = a.seed
        rng = random.Random(seed)
        states = self.plan(rng)
        work = tempfile.mkdtemp(prefix="qedfuse-replay.", dir=a.workdir)
        img_path = os.path.join(work, "state.qed")
        raw_path = os.path.join(work, "view.raw")
        try:
            cur = bytearray(self.base)
            applied = 0  # mutations [0, applied) are in |cur|
            states.sort(key=lambda s: (self.mandatory_bound(s["t"]), s["id"]))
            for s in states:
                bound = self.mandatory_bound(s["t"])
                while applied < len(self.mutations) and self.mutations[applied].idx < bound:
                    self.apply(cur, self.mutations[applied], self.buf)
                    applied += 1
                t0 = time.monotonic()
                nopt, kept = self.materialise(s, cur, bound, img_path)
                PHASE_SECONDS["materialise"] = (PHASE_SECONDS.get("materialise", 0.0) +
                                                time.monotonic() - t0)
                if a.save_states:
                    os.makedirs(a.save_states, exist_ok=True)
                    shutil.copyfile(img_path, os.path.join(a.save_states, "state%d.qed" % s["id"]))
                self.note = ""
                t0 = time.monotonic()
                problems = self.check_state(s, img_path, raw_path)
                PHASE_SECONDS["check total"] = (PHASE_SECONDS.get("check total", 0.0) +
                                                time.monotonic() - t0)
                self.stats["states"] += 1
                self.stats["boundary" if s["kind"] == "boundary" else "between"] += 1
                if s.get("torn"):
                    self.stats["torn"] += 1
                desc = self.describe(s, bound, nopt, kept)
                if a.verbose:
                    print(("FAIL " if problems else "ok   ") + desc + self.note, flush=True)
                if problems:
                    self.stats["failed"] += 1
                    self.failures.append(desc)
                    print("FAIL: %s (seed %d)\n  %s" % (desc, seed, "\n  ".join(problems)),
                          file=sys.stderr, flush=True)
                    if a.keep_failed:
                        dst = os.path.join(a.keep_failed, "state%d.qed" % s["id"])
                        os.makedirs(a.keep_failed, exist_ok=True)
                        self.materialise(s, cur, bound, dst)
                        print("  kept as %s" % dst, file=sys.stderr)
            if a.self_check:
                self.self_check(cur, applied, img_path, raw_path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.stats

    def self_check(self, cur, applied, img_path, raw_path):
        """Proves the verifier can fail: the final state, with one byte of the last
        fsync-acknowledged guest write changed in the expectation, must be reported."""
        t = self.nrec
        gbound = self.guest_bound(t)
        req = self.guest.required(gbound)
        if not req:
            raise LogError("self-check: no fsync-acknowledged guest data in the log")
        s, e = req[-1]
        state = dict(id=-1, kind="boundary", flush=-1, t=t, keep="all")
        bound = self.mandatory_bound(t)
        while applied < len(self.mutations) and self.mutations[applied].idx < bound:
            self.apply(cur, self.mutations[applied], self.buf)
            applied += 1
        self.materialise(state, cur, bound, img_path)
        saved = dict(self.stats)
        self.guest.final[e - 1] ^= 0xFF
        try:
            problems = self.check_state(state, img_path, raw_path)
        finally:
            self.guest.final[e - 1] ^= 0xFF
            self.stats = saved
        if not any("fsync-acknowledged data lost" in p for p in problems):
            raise LogError("self-check: a changed acknowledged byte at %d was not detected (%s)"
                           % (e - 1, problems))
        print("%s: self-check: a changed acknowledged byte (offset %d) is reported"
              % (self.args.name, e - 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="copy of the image file taken before the logged mount")
    ap.add_argument("log", help="the --debug-log-writes file")
    ap.add_argument("--qedimg", default=os.environ.get("QEDIMG", "qedimg"))
    ap.add_argument("--qedfuse", default=None,
                    help="open each state with a read-write qedfuse mount (repairs at open) and "
                         "read the guest view through it; without it: qedimg check -r all")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--per-interval", type=int, default=3,
                    help="random in-between states per flush interval (default 3)")
    ap.add_argument("--torn-fraction", type=float, default=0.3,
                    help="share of in-between states cut into 4 KiB pieces (default 0.3)")
    ap.add_argument("--max-states", type=int, default=0,
                    help="check a seeded random sample of at most this many states")
    ap.add_argument("--only", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="check only these state ids (comma-separated; same --seed)")
    ap.add_argument("--e2fsck", action="store_true", help="the guest view holds ext4")
    ap.add_argument("--e2fsck-from", type=int, default=0, metavar="N",
                    help="run e2fsck only once N guest flushes have completed (the file "
                         "system exists from then on)")
    ap.add_argument("--count-guest-flushes", action="store_true",
                    help="print the number of completed guest flushes in LOG (which may still "
                         "be written) and exit")
    ap.add_argument("--self-check", action="store_true",
                    help="also prove that a lost acknowledged byte would be reported")
    ap.add_argument("--allow-truncated", action="store_true")
    ap.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--keep-failed", default=None, help="directory for failing state images")
    ap.add_argument("--save-states", default=None,
                    help="directory for a copy of every state image, before the repair")
    ap.add_argument("--name", default="crash_replay", help="label of the summary line")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.seed is None:
        env = os.environ.get("QEDFUSE_SEED")
        a.seed = int(env) if env else random.SystemRandom().getrandbits(31)
    if a.count_guest_flushes:
        with open(a.log, "rb") as f:
            data = f.read()
        try:
            recs = parse_log(data, allow_truncated=True)
        except LogError as e:
            print("crash_replay: %s: %s" % (a.log, e), file=sys.stderr)
            return 1
        print(sum(1 for r in recs if r.type == GUEST_FLUSH_DONE))
        return 0
    try:
        rp = Replayer(a)
    except (LogError, OSError) as e:
        print("crash_replay: %s: %s" % (a.log, e), file=sys.stderr)
        return 1
    print("%s: seed %d (QEDFUSE_SEED=%d to replay), %d records, %d image flushes, "
          "%d guest flushes, %d image mutations"
          % (a.name, a.seed, a.seed, rp.nrec, len(rp.image_flushes), len(rp.guest_flushes),
             len(rp.mutations)), flush=True)
    try:
        st = rp.run()
    except LogError as e:
        print("crash_replay: %s" % e, file=sys.stderr)
        return 1
    print("%s: %d crash states checked (%d at flush boundaries, %d between flushes of which %d "
          "torn), %d needed a check, %d repaired, %d with leaks only, %d e2fsck runs, %d failed"
          % (a.name, st["states"], st["boundary"], st["between"], st["torn"], st["need_check"],
             st["repaired"], st["leaks"], st["e2fsck"], st["failed"]))
    if a.verbose:
        print("seconds per command: " + ", ".join(
            "%s %.1f" % kv for kv in sorted(PHASE_SECONDS.items(), key=lambda kv: -kv[1])))
    print("RESULT %s" % json.dumps(st))
    return 1 if st["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
