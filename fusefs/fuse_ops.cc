// libfuse low-level operations for the single-file mount, and their handler coroutines.
//
// Trampolines run inside fuse_session_process_buf() on the loop thread. Each one wraps the
// request in a FuseRequest, takes whatever it needs out of libfuse's buffers (a WRITE takes its
// whole receive buffer: the next request is read into another one), and Spawn()s a handler.
// Handlers hold the frontend's Gate while they run, so shutdown can wait for them. After INIT,
// READ and WRITE reach their handlers from FuseFrontend::DispatchRaw instead (unless debugging),
// without a fuse_req_t; the Read and Write trampolines serve the debug mode.
//
// Semantics of the mounted file (a block device presented as a regular file):
//  - size = the image's virtual size; it never changes by writing.
//  - write past the end: ENOSPC (a write straddling the end is short, as on a block device).
//  - truncate: growing resizes the image; shrinking is refused with EPERM (it would discard
//    data), except the truncate-to-0 that open(O_TRUNC) issues, which is ignored as a block
//    device ignores O_TRUNC (so `dd of=MOUNT` without conv=notrunc works).
//  - fallocate: mode 0 and KEEP_SIZE allocation inside the device succeed without doing
//    anything (images are thin); PUNCH_HOLE|KEEP_SIZE -> WriteZeroes(kMayUnmap);
//    ZERO_RANGE -> WriteZeroes(kNone); a range that would extend the file -> ENOSPC;
//    other modes -> EOPNOTSUPP.
//  - SEEK_HOLE/SEEK_DATA: a hole is an extent that reads as zeros and holds no data at any
//    layer (BlockStatus zero && !data); everything else is data. The end is an implicit hole.
//  - permissions: the kernel checks mode and owner (default_permissions is always on). chmod and
//    chown change them for the mount's lifetime; allow_root is checked here (MayAccess).
//  - fsync: BlockBackend::Flush(), durable on reply. flush (close): nothing to do.
//
// Kernel write-back cache (FUSE_CAP_WRITEBACK_CACHE): on by default with cache=writeback, off with
// cache=none (whose promise is that a completed write() has reached the image file) and on
// read-only mounts; -o writeback_cache=off disables it. It makes small buffered writes about 10x
// faster (dd bs=4k: 133 MB/s vs 12.6 MB/s), at two costs: the kernel owns the file size, so
// FuseFrontend publishes it once after INIT and a buffered write past the end is accepted by
// the kernel and only fails at writeback (fsync/close report ENOSPC; O_DIRECT writes fail at
// once); and data not yet fsynced lives in the kernel until writeback, as on any filesystem
// (shutdown fsyncs the file before unmounting). O_DIRECT opens get FOPEN_DIRECT_IO and bypass
// the page cache in both modes.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "fusefs/fuse_frontend.h"
#include "fusefs/fuse_request.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/io_vector.h"

namespace qedfuse::fusefs {
namespace {

// We are the only writer of the image (it is locked), so attributes only change through us
// and could be cached forever; one second keeps st_blocks reasonably fresh for `du`.
constexpr double kAttrTimeout = 1.0;

}  // namespace

struct FuseOps {
  static FuseFrontend* Self(fuse_req_t req) {
    return static_cast<FuseFrontend*>(fuse_req_userdata(req));
  }
  // allow_root: whether the request's sender may use the file at all.
  static bool Allowed(fuse_req_t req) { return Self(req)->MayAccess(fuse_req_ctx(req)->uid); }

  static void Init(void* userdata, fuse_conn_info* conn) {
    auto* self = static_cast<FuseFrontend*>(userdata);
    conn->max_write = kMaxWrite;  // libfuse 3.14 cannot go above 1 MiB; sizes RecvPool buffers
    // Background requests (async O_DIRECT reads and writes, write-back) in flight at once. More
    // only adds contention: with 64, 4 KiB random writes at iodepth 32 ran at 17k-25k IOPS and
    // cost 20-24 us of daemon CPU each, against 22k-35k and 16.5-17 us with 16; buffered dd 720-760
    // us per MiB against 586, and peak RSS during dd 40 MiB against 26 (scripts/bench.sh --quick,
    // alternating runs); reads at iodepth 32 were level. qemu-storage-daemon runs with the kernel's
    // default of 12.
    conn->max_background = 16;
    conn->congestion_threshold = 12;
    // Never truncate at open: O_TRUNC is ignored like on a block device (see setattr).
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
    // Nobody else changes the image, so the page cache must not be dropped because our own
    // writes moved mtime; only explicit invalidation (none) would do it.
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA) conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
    conn->want &= ~FUSE_CAP_SPLICE_READ;
    if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    self->writeback_active_ = false;
    if (self->config_.writeback_cache && !self->config_.read_only &&
        (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
      conn->want |= FUSE_CAP_WRITEBACK_CACHE;
      self->writeback_active_ = true;
    }
    self->init_done_ = true;
  }

  static void Lookup(fuse_req_t req, fuse_ino_t, const char*) {
    FuseRequest(req, "lookup").ReplyError(ENOENT);  // the root is a file: nothing to look up
  }

  static void Getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    FuseRequest r(req, "getattr");
    if (ino != FUSE_ROOT_ID) return r.ReplyError(ENOENT);
    if (!Allowed(req)) return r.ReplyError(EACCES);
    r.ReplyAttr(Self(req)->Attr(), Self(req)->AttrTimeout());
  }

  static void Setattr(fuse_req_t req, fuse_ino_t, struct stat* attr, int to_set,
                      fuse_file_info* fi) {
    if (!Allowed(req)) return FuseRequest(req, "setattr").ReplyError(EACCES);
    coro::Spawn(
        Self(req)->HandleSetattr(FuseRequest(req, "setattr"), *attr, to_set, fi != nullptr));
  }

  static void Open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    FuseRequest r(req, "open");
    FuseFrontend* self = Self(req);
    if (!Allowed(req)) return r.ReplyError(EACCES);
    if ((fi->flags & O_ACCMODE) != O_RDONLY && self->config_.read_only) {
      return r.ReplyError(EROFS);
    }
    // O_DIRECT bypasses the kernel page cache entirely; everything else may keep cached pages
    // across opens, as no one but us modifies the image. Coherence with buffered descriptors
    // (dirty pages written back before a FOPEN_DIRECT_IO read or write, stale pages dropped) is
    // checked by tests/integration/coherence_test.sh; the kernel's generic O_DIRECT path would
    // give it too, but turns a write straddling the end of the device into EIO, not a short write.
    //
    // FOPEN_PARALLEL_DIRECT_WRITES lets the kernel send O_DIRECT writes of several threads to us
    // at once under a shared inode lock instead of one at a time (it falls back to the exclusive
    // lock by itself while the file is also open for cached I/O, and for writes past the end).
    // Concurrent writes are safe here: each owns its payload, and the block layer orders
    // overlapping ones. libfuse 3.14 cannot ask for the flag, so the reply is built here.
    uint32_t flags =
        (fi->flags & O_DIRECT) ? FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES : FOPEN_KEEP_CACHE;
    r.ReplyOpenFlags(fi->fh, flags);
  }

  static void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
    coro::Spawn(Self(req)->HandleRead(FuseRequest(req, "read"), static_cast<uint64_t>(off), size));
  }

  static void Write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off,
                    fuse_file_info*) {
    // Own the payload before anything can suspend: |data| points into the receive buffer,
    // which the request takes with it (no copy); the next request is read into another buffer.
    FuseFrontend* self = Self(req);
    WritePayload payload = self->TakePayload(data, size);
    coro::Spawn(self->HandleWrite(FuseRequest(req, "write"), static_cast<uint64_t>(off),
                                  std::move(payload)));
  }

  static void Flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    // close() promises no durability; the kernel has already written its dirty pages back.
    FuseRequest(req, "flush").ReplyOk();
  }

  static void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    FuseRequest(req, "release").ReplyOk();
  }

  static void Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
    coro::Spawn(Self(req)->HandleFsync(FuseRequest(req, "fsync")));
  }

  static void Statfs(fuse_req_t req, fuse_ino_t) {
    FuseRequest r(req, "statfs");
    FuseFrontend* self = Self(req);
    if (!Allowed(req)) return r.ReplyError(EACCES);
    constexpr uint64_t kBlock = 4096;
    uint64_t blocks = (self->backend_.length() + kBlock - 1) / kBlock;
    uint64_t used = std::min(blocks, self->backend_.driver().AllocatedBytes() / kBlock);
    struct statvfs st {};
    st.f_bsize = kBlock;
    st.f_frsize = kBlock;
    st.f_blocks = blocks;
    st.f_bfree = blocks - used;
    st.f_bavail = blocks - used;
    st.f_files = 1;
    st.f_ffree = 0;
    st.f_favail = 0;
    st.f_namemax = 255;
    r.ReplyStatfs(st);
  }

  static void Fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length,
                        fuse_file_info*) {
    if (!Allowed(req)) return FuseRequest(req, "fallocate").ReplyError(EACCES);
    coro::Spawn(Self(req)->HandleFallocate(FuseRequest(req, "fallocate"), mode,
                                           static_cast<uint64_t>(offset),
                                           static_cast<uint64_t>(length)));
  }

  static void Lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info*) {
    if (!Allowed(req)) return FuseRequest(req, "lseek").ReplyError(EACCES);
    coro::Spawn(
        Self(req)->HandleLseek(FuseRequest(req, "lseek"), static_cast<uint64_t>(off), whence));
  }

  static fuse_lowlevel_ops MakeTable() {
    fuse_lowlevel_ops ops{};
    ops.init = Init;
    ops.lookup = Lookup;
    ops.getattr = Getattr;
    ops.setattr = Setattr;
    ops.open = Open;
    ops.read = Read;
    ops.write = Write;
    ops.flush = Flush;
    ops.release = Release;
    ops.fsync = Fsync;
    ops.statfs = Statfs;
    ops.fallocate = Fallocate;
    ops.lseek = Lseek;
    return ops;
  }
};

const fuse_lowlevel_ops& FuseOpsTable() {
  static const fuse_lowlevel_ops ops = FuseOps::MakeTable();
  return ops;
}

coro::Task<void> FuseFrontend::HandleRead(FuseRequest req, uint64_t offset, std::size_t size) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  uint64_t length = backend_.length();
  if (offset >= length || size == 0) co_return req.ReplyBuf(nullptr, 0);
  std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(size, length - offset));
  block::IoBuffer buf(n);
  Result<std::size_t> r = co_await backend_.Read(offset, block::IoVector(buf.data(), n));
  if (!r) {
    LogIoError("read", offset, n, r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  req.ReplyBuf(buf.data(), *r);
}

coro::Task<void> FuseFrontend::HandleWrite(FuseRequest req, uint64_t offset, WritePayload payload) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (config_.read_only) co_return req.ReplyError(EROFS);
  if (payload.size == 0) co_return req.ReplyWrite(0);
  uint64_t length = backend_.length();
  if (offset >= length) co_return req.ReplyError(ENOSPC);
  std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(payload.size, length - offset));
  Result<void> r = co_await backend_.Write(offset, block::IoVector(payload.data, n));
  if (!r) {
    LogIoError("write", offset, n, r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  TouchMtime();
  req.ReplyWrite(n);
}

coro::Task<void> FuseFrontend::HandleSetattr(FuseRequest req, struct stat attr, int to_set,
                                             bool has_fh) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (to_set & FUSE_SET_ATTR_SIZE) {
    uint64_t want = static_cast<uint64_t>(attr.st_size);
    uint64_t length = backend_.length();
    // open(O_TRUNC) arrives as size 0 with the times set and without a file handle;
    // truncate(2)/ftruncate(2) never set both times without a handle.
    bool open_trunc = want == 0 && !has_fh && (to_set & FUSE_SET_ATTR_MTIME);
    if (want != length && !open_trunc) {
      if (config_.read_only) co_return req.ReplyError(EROFS);
      if (want < length) {
        Log(LogLevel::kDebug, absl::StrCat("refusing to shrink from ", length, " to ", want));
        co_return req.ReplyError(EPERM);
      }
      Result<void> r = co_await backend_.Truncate(want);
      if (!r) {
        LogIoError("resize", want, want - length, r.error());
        co_return req.ReplyError(ToErrno(r.error()));
      }
      TouchMtime();
    }
  }
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    atime_ = now;
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    atime_ = attr.st_atim;
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    mtime_ = now;
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    mtime_ = attr.st_mtim;
  }
  // The kernel has already checked that the caller may (chmod: owner or CAP_FOWNER; chown:
  // CAP_CHOWN, or the owner to a group of theirs) and cleared set-id bits where due.
  if (to_set & FUSE_SET_ATTR_MODE) mode_ = attr.st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID) uid_ = attr.st_uid;
  if (to_set & FUSE_SET_ATTR_GID) gid_ = attr.st_gid;
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) ctime_ = now;
  if (to_set & FUSE_SET_ATTR_CTIME) ctime_ = attr.st_ctim;
  req.ReplyAttr(Attr(), AttrTimeout());
}

bool FuseFrontend::MayAccess(uid_t uid) const {
  return !config_.allow_root || uid == config_.mounter_uid || uid == 0;
}

double FuseFrontend::AttrTimeout() const {
  // Before the mount is ready Attr() shows setup attributes; they must not be cached.
  return ready_ ? kAttrTimeout : 0.0;
}

coro::Task<void> FuseFrontend::HandleFsync(FuseRequest req) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (config_.read_only) co_return req.ReplyOk();
  Result<void> r = co_await backend_.Flush();
  if (!r) {
    LogIoError("flush", 0, 0, r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  req.ReplyOk();
}

coro::Task<void> FuseFrontend::HandleFallocate(FuseRequest req, int mode, uint64_t offset,
                                               uint64_t length) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (config_.read_only) co_return req.ReplyError(EROFS);
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  const int op = mode & ~FALLOC_FL_KEEP_SIZE;
  const uint64_t size = backend_.length();
  if (length == 0 || offset + length < offset) co_return req.ReplyError(EINVAL);
  uint64_t end = offset + length;
  if (end > size && !keep_size) co_return req.ReplyError(ENOSPC);  // would extend the file
  end = std::min(end, size);
  block::ZeroFlags flags;
  if (op == 0) {
    co_return req.ReplyOk();  // thin image: nothing to reserve
  } else if (op == FALLOC_FL_PUNCH_HOLE) {
    flags = block::ZeroFlags::kMayUnmap;
  } else if (op == FALLOC_FL_ZERO_RANGE) {
    flags = block::ZeroFlags::kNone;
  } else {
    co_return req.ReplyError(EOPNOTSUPP);
  }
  if (offset >= end) co_return req.ReplyOk();
  Result<void> r = co_await backend_.WriteZeroes(offset, end - offset, flags);
  if (!r) {
    LogIoError(op == FALLOC_FL_PUNCH_HOLE ? "punch hole" : "zero range", offset, end - offset,
               r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  TouchMtime();
  req.ReplyOk();
}

coro::Task<void> FuseFrontend::HandleLseek(FuseRequest req, uint64_t offset, int whence) {
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) co_return req.ReplyError(EINVAL);
  const uint64_t size = backend_.length();
  if (offset >= size) co_return req.ReplyError(ENXIO);
  uint64_t pos = offset;
  while (pos < size) {
    Result<block::BlockStatus> st = co_await backend_.GetStatus(pos, size - pos);
    if (!st) {
      LogIoError("block status", pos, size - pos, st.error());
      co_return req.ReplyError(ToErrno(st.error()));
    }
    if (st->length == 0) co_return req.ReplyError(EIO);  // a driver bug; never loop forever
    const bool hole = st->zero && !st->data;
    if (hole == (whence == SEEK_HOLE)) co_return req.ReplyLseek(pos);
    pos += std::min<uint64_t>(st->length, size - pos);
  }
  if (whence == SEEK_DATA) co_return req.ReplyError(ENXIO);
  req.ReplyLseek(size);  // the end of the file is an implicit hole
}

}  // namespace qedfuse::fusefs
