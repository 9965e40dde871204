// The requests of the single-file mount: FuseFrontend::Dispatch() and the handler coroutines.
//
// Dispatch() runs on the loop thread for every decoded request the Connection passes on (INIT,
// DESTROY, FORGET, INTERRUPT, malformed and unknown opcodes, and what allow_root refuses never
// get here). Requests answered from memory (GETATTR, OPEN, STATFS, ...) are answered at once;
// the others go to a handler coroutine that owns the transport::Request, and with it the buffer
// the request arrived in: a WRITE's payload is used in place, and a READ is read into the
// request's reply area. Handlers hold the frontend's Gate while they run, so shutdown can wait
// for them. Opcodes a regular file has no use for answer ENOSYS (the kernel then stops sending
// most of them), LOOKUP ENOENT (the root is a file: there is nothing to look up).
//
// Semantics of the mounted file (a disk presented as a regular file that never shrinks):
//  - size: at mount, the image's virtual size. A WRITE or fallocate (mode 0, or ZERO_RANGE
//    without KEEP_SIZE) that ends past the end grows the file first, like truncate does: GrowTo()
//    makes the file end exactly there (size_) and the image that end rounded up to 512 bytes
//    (QED stores sectors), which the next mount shows; the bytes between read as zeros. It is
//    serialised so that concurrent growers (kernel write-back sends several WRITEs past the end
//    at once, in any order) never race or shrink anything. A WRITE is answered with its full
//    count or an error (EFBIG past the format's maximum, EROFS, ENOSPC), never a short count:
//    kernel write-back takes a short count for success.
//  - every shrink is refused with EPERM: truncate/ftruncate to a smaller size and open(O_TRUNC)
//    (FUSE_CAP_ATOMIC_O_TRUNC stays off, so the kernel sends that as a SETATTR to size 0 after
//    the OPEN; the open then fails and nothing has changed). A truncate to the current size
//    succeeds; a growing one sets the size exactly (the image's rounded up to 512).
//  - fallocate: mode 0 (within the size, or growing) and KEEP_SIZE succeed without allocating
//    (images are thin); PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE -> WriteZeroes(kMayUnmap), so whole
//    clusters become unallocated/zero clusters; other modes -> EOPNOTSUPP. The kernel writes its
//    dirty pages of the range back before sending a punch or zero range, and drops them after.
//  - SEEK_HOLE/SEEK_DATA: a hole is an extent that reads as zeros and holds no data at any
//    layer (BlockStatus zero && !data); everything else is data. The end is an implicit hole.
//  - permissions: the kernel checks mode and owner (default_permissions is always on). chmod and
//    chown change them for the mount's lifetime; allow_root is checked by the Connection
//    (protocol::AccessPolicy) before a request gets here.
//  - fsync: BlockBackend::Flush(), durable on reply. flush (close): nothing to do.
//
// Kernel write-back cache (FUSE_WRITEBACK_CACHE): on by default with cache=writeback, off with
// cache=none (whose promise is that a completed write() has reached the image file) and on
// read-only mounts; -o writeback_cache=off disables it. It makes small buffered writes about 10x
// faster, at these costs, each handled here:
//  - The kernel owns the file size (i_size) and ignores the size in our attribute replies; a
//    buffered write past the end grows it at once, and the WRITEs come later, at write-back.
//    FuseFrontend publishes the size once after INIT (the one way the kernel accepts it: a
//    truncate() to it from a worker, whose SETATTR reply carries it); afterwards the kernel's
//    size and size_ follow the same writes, so they agree once the data is written back.
//  - A SETATTR that changes the size is judged against the kernel's size (KernelSize: dirty
//    data past our end is the user's, and a truncate below it would drop it), and a READ past
//    our end reads zeros up to the kernel's (an O_DIRECT read would otherwise end early).
//  - LSEEK: the kernel does not write dirty pages back first, so the handler has it do so
//    (WriteBackKernelCache) before reading the block status, else fresh data in a hole is missed.
//    (Shared mmap writes leave dirty pages in every mode, so this is done in every mode, but
//    only while a handle open for writing exists: none can be dirty otherwise.)
//  - Data not yet fsynced lives in the kernel until write-back, as on any filesystem (shutdown
//    fsyncs the file before unmounting).
// O_DIRECT opens get FOPEN_DIRECT_IO and bypass the page cache in both modes.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fusefs/fuse_frontend.h"
#include "fusefs/protocol/codec.h"
#include "qedfuse/base/errors.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/io_vector.h"

namespace qedfuse::fusefs {
namespace {

// We are the only writer of the image (it is locked), so attributes only change through us
// and could be cached forever; one second keeps st_blocks reasonably fresh for `du`.
constexpr double kAttrTimeout = 1.0;

uint64_t RoundUpToSizeUnit(uint64_t n) { return (n + kSizeUnit - 1) / kSizeUnit * kSizeUnit; }

// File handles (fuse_open_out::fh) tell whether the file was opened for writing.
constexpr uint64_t kReadOnlyHandle = 0;
constexpr uint64_t kWritableHandle = 1;

// The largest end a write or fallocate may ask for before rounding up overflows.
constexpr uint64_t kMaxEnd = UINT64_MAX / 2;

// What statx says about the mounted file.
struct MountedStat {
  int err = 0;
  uint64_t size = 0;
  uint64_t ino = 0;
  dev_t dev = 0;
};

MountedStat StatMounted(const char* path) {
  // AT_STATX_DONT_SYNC: the attributes the kernel holds, without a GETATTR to us (with the
  // write-back cache i_size is the kernel's own anyway).
  struct statx stx {};
  MountedStat out;
  if (::statx(AT_FDCWD, path, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, STATX_SIZE | STATX_INO, &stx) !=
      0) {
    out.err = errno;
    return out;
  }
  out.size = stx.stx_size;
  out.ino = stx.stx_ino;
  out.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  return out;
}

}  // namespace

void FuseFrontend::Dispatch(Request req) {
  if (req.nodeid() != FUSE_ROOT_ID) return req.ReplyError(ENOENT);
  switch (req.opcode()) {
    case FUSE_GETATTR:
      return req.ReplyStruct(protocol::MakeAttrOut(Attr(), AttrTimeout()));
    case abi::kOpStatx:
      return req.ReplyStruct(protocol::MakeStatxOut(Attr(), AttrTimeout()));
    case FUSE_SETATTR:
      return coro::Spawn(HandleSetattr(std::move(req)));
    case FUSE_OPEN:
      return HandleOpen(std::move(req));
    case FUSE_READ:
      return coro::Spawn(HandleRead(std::move(req)));
    case FUSE_WRITE:
      // The payload is in the request's own buffer, which goes with it into the handler.
      return coro::Spawn(HandleWrite(std::move(req)));
    case FUSE_FLUSH:
      // close() promises no durability; the kernel has already written its dirty pages back.
      return req.ReplyOk();
    case FUSE_RELEASE:
      return HandleRelease(std::move(req));
    case FUSE_FSYNC:
      return coro::Spawn(HandleFsync(std::move(req)));
    case FUSE_STATFS:
      return HandleStatfs(std::move(req));
    case FUSE_FALLOCATE:
      return coro::Spawn(HandleFallocate(std::move(req)));
    case FUSE_LSEEK: {
      auto holder = requests_.TryEnter();
      if (!holder) return req.ReplyError(EIO);
      return coro::Spawn(HandleLseek(std::move(req), std::move(*holder)));
    }
    case FUSE_LOOKUP:
      return req.ReplyError(ENOENT);  // the root is a file: nothing to look up
    default:
      // xattrs, ioctl, poll, copy_file_range, locks, directories, namespace operations: the
      // kernel does without (ENOSYS makes it stop asking for most of them).
      return req.ReplyError(ENOSYS);
  }
}

void FuseFrontend::HandleOpen(Request req) {
  const uint32_t open_flags = req.Get<protocol::OpenArgs>().flags;
  const bool writable = (open_flags & O_ACCMODE) != O_RDONLY;
  if (writable && config_.read_only) return req.ReplyError(EROFS);
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
  // overlapping ones.
  const uint32_t flags =
      (open_flags & O_DIRECT) ? FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES : FOPEN_KEEP_CACHE;
  if (!ready_) {
    // Until BecomeReady has published the size, a write-back-caching kernel takes the file
    // for empty: an append would land at offset 0. The open waits (and fails if the mount
    // never becomes ready).
    early_opens_.push_back({std::move(req), flags, writable});
    return;
  }
  AnswerOpen(std::move(req), flags, writable);
}

void FuseFrontend::AnswerOpen(Request req, uint32_t open_flags, bool writable) {
  // Only a handle open for writing can leave dirty pages in the kernel (write(), shared
  // writable mmap); the kernel writes them all back before it releases the handle.
  if (writable) ++writable_handles_;
  req.ReplyStruct(protocol::MakeOpenOut(writable ? kWritableHandle : kReadOnlyHandle, open_flags));
}

void FuseFrontend::HandleRelease(Request req) {
  if (req.Get<protocol::ReleaseArgs>().fh == kWritableHandle) {
    assert(writable_handles_ > 0);
    --writable_handles_;
  }
  req.ReplyOk();
}

void FuseFrontend::HandleStatfs(Request req) {
  constexpr uint64_t kBlock = 4096;
  uint64_t blocks = (backend_.length() + kBlock - 1) / kBlock;
  uint64_t used = std::min(blocks, backend_.driver().AllocatedBytes() / kBlock);
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
  req.ReplyStruct(protocol::MakeStatfsOut(st));
}

void FuseFrontend::FinishEarlyOpens() {
  for (EarlyOpen& o : std::exchange(early_opens_, {})) {
    if (ready_) {
      AnswerOpen(std::move(o.req), o.open_flags, o.writable);
    } else {
      o.req.ReplyError(EIO);
    }
  }
}

coro::Task<void> FuseFrontend::HandleRead(Request req) {
  const uint64_t offset = req.Get<protocol::ReadArgs>().offset;
  const std::size_t size = req.Get<protocol::ReadArgs>().size;  // at most the negotiated maximum
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (size == 0) co_return req.ReplyData({});
  // The file ends at size_ or, with the write-back cache, at the kernel's size if that is
  // bigger: data written past our end that the kernel has not written back yet. What lies
  // between reads as zeros; a short count there would end an O_DIRECT (FOPEN_DIRECT_IO) read
  // early, and its caller would take that for the end of the file.
  uint64_t end = size_;
  if (writeback_active_ && offset + size > end) {
    if (Result<uint64_t> k = co_await KernelSize(); k) end = std::max(end, *k);
  }
  if (offset >= end) co_return req.ReplyData({});
  std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(size, end - offset));
  const uint64_t length = backend_.length();  // past size_, the image holds zeros up to here
  const std::size_t in_image =
      offset < length ? static_cast<std::size_t>(std::min<uint64_t>(n, length - offset)) : 0;
  // The data is read straight into the request's reply area (4 KiB aligned, as large as the
  // largest READ): the transport sends it from there without another copy.
  const std::span<std::byte> area = req.ReplyArea();
  assert(n <= area.size());
  std::byte* buf = area.data();
  if (in_image < n) std::memset(buf + in_image, 0, n - in_image);
  if (in_image > 0) {
    Result<std::size_t> r = co_await backend_.Read(offset, block::IoVector(buf, in_image));
    if (!r) {
      LogIoError("read", offset, in_image, r.error());
      co_return req.ReplyError(ToErrno(r.error()));
    }
    if (*r < in_image) n = *r;  // short only at the image's end, which cannot move down
  }
  req.ReplyData({buf, n});
}

coro::Task<void> FuseFrontend::HandleWrite(Request req) {
  // The payload lives in the request's own buffer (owned by |req| since it was decoded, before
  // anything could suspend), so waiting below is safe and nothing is copied.
  const uint64_t offset = req.Get<protocol::WriteArgs>().offset;
  const std::span<std::byte> payload = req.Get<protocol::WriteArgs>().data;
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (config_.read_only) co_return req.ReplyError(EROFS);
  const std::size_t n = payload.size();
  if (n == 0) co_return req.ReplyStruct(fuse_write_out{.size = 0, .padding = 0});
  if (offset > kMaxEnd - n) co_return req.ReplyError(EFBIG);
  const uint64_t end = offset + n;
  if (end > size_) {
    // Past the end (an append, a write-back of pages past the end, O_DIRECT): grow first, then
    // write all of it.
    if (int err = co_await GrowTo(end); err != 0) co_return req.ReplyError(err);
  }
  assert(end <= size_ && size_ <= backend_.length());
  Result<void> r = co_await backend_.Write(offset, block::IoVector(payload.data(), n));
  if (!r) {
    LogIoError("write", offset, n, r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  TouchMtime();
  req.ReplyStruct(fuse_write_out{.size = static_cast<uint32_t>(n), .padding = 0});
}

coro::Task<int> FuseFrontend::GrowTo(uint64_t end) {
  if (end <= size_) co_return 0;
  // One grower at a time, each re-checking after the wait: writes past the end arrive
  // concurrently and in any order, BlockBackend::Truncate refuses to shrink, and two resizes of
  // the QED header must not interleave. So the sizes only move up, to the largest end asked for.
  coro::CoMutex::Guard lock = co_await grow_lock_.Lock();
  if (end <= size_) co_return 0;
  if (end > kMaxEnd) co_return EFBIG;
  const uint64_t old_length = backend_.length();
  if (end > old_length) {
    // The image grows first (its header written and flushed), so size_ never passes it.
    const uint64_t target = RoundUpToSizeUnit(end);
    Result<void> r = co_await backend_.Truncate(target);
    if (!r) {
      LogIoError("resize", old_length, target - old_length, r.error());
      // kOutOfRange: past the largest size the image format can address.
      co_return r.error() == make_error_code(Errc::kOutOfRange) ? EFBIG : ToErrno(r.error());
    }
  }
  size_ = end;
  assert(size_ <= backend_.length());
  TouchMtime();
  co_return 0;
}

coro::Task<Result<uint64_t>> FuseFrontend::KernelSize() {
  const char* path = config_.mountpoint.c_str();  // trivially destructible capture (GCC 12)
  MountedStat st = co_await stat_pool_.Offload([path] { return StatMounted(path); });
  if (st.err != 0) co_return Unexpected(std::error_code(st.err, std::generic_category()));
  // The first call (BecomeReady, right after mounting) learns our device; later ones check that
  // the path still leads to our mount rather than to something mounted over it.
  if (mount_dev_ == 0 && st.ino == FUSE_ROOT_ID) mount_dev_ = st.dev;
  if (st.dev != mount_dev_ || st.ino != FUSE_ROOT_ID) {
    Log(LogLevel::kError,
        absl::StrCat(config_.mountpoint, " no longer leads to this mount; cannot read its size"));
    co_return Unexpected(std::error_code(EIO, std::generic_category()));
  }
  co_return st.size;
}

coro::Task<bool> FuseFrontend::WriteBackKernelCache(uint64_t from) {
  // Blocking calls on the mounted file: a worker makes them while this loop serves the OPEN,
  // the WRITEs and the FLUSH they cause.
  const char* path = config_.mountpoint.c_str();  // trivially destructible captures (GCC 12)
  const auto start = static_cast<off_t>(std::min<uint64_t>(from, kMaxEnd));
  int err = co_await pool_.Offload([path, start]() -> int {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return errno;
    int rc = ::sync_file_range(fd, start, 0,
                               SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                   SYNC_FILE_RANGE_WAIT_AFTER) == 0
                 ? 0
                 : errno;
    ::close(fd);
    return rc;
  });
  if (err != 0 && LogDebugEnabled()) {
    Log(LogLevel::kDebug, absl::StrCat("cannot write back the kernel cache of ", path,
                                       " before lseek: ", strerror(err)));
  }
  co_return err == 0;
}

double FuseFrontend::AttrTimeout() const {
  // Before the mount is ready Attr() shows setup attributes; they must not be cached.
  return ready_ ? kAttrTimeout : 0.0;
}

coro::Task<void> FuseFrontend::HandleSetattr(Request req) {
  const fuse_setattr_in in = req.Get<protocol::SetattrArgs>().in;
  const uint32_t to_set = in.valid;  // FATTR_* bits
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (to_set & FATTR_SIZE) {
    if (config_.read_only) co_return req.ReplyError(EROFS);
    const uint64_t want = in.size;
    // The size the caller sees. With the write-back cache that is the kernel's: buffered writes
    // past the image's end live only there until write-back, and a truncate below them would
    // drop them (the kernel holds the inode lock across this request, so it cannot move).
    uint64_t seen = size_;
    if (writeback_active_) {
      Result<uint64_t> k = co_await KernelSize();
      if (!k) {
        Log(LogLevel::kError, absl::StrCat("truncate to ", want, " refused: cannot read the ",
                                           "kernel's size of the file: ", k.error().message()));
        co_return req.ReplyError(EIO);
      }
      seen = *k;
    }
    if (want < seen) {
      Log(LogLevel::kDebug, absl::StrCat("refusing to shrink from ", seen, " to ", want));
      co_return req.ReplyError(EPERM);
    }
    if (int err = co_await GrowTo(want); err != 0) co_return req.ReplyError(err);
  }
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  if (to_set & FATTR_ATIME_NOW) {
    atime_ = now;
  } else if (to_set & FATTR_ATIME) {
    atime_ = {static_cast<time_t>(in.atime), static_cast<long>(in.atimensec)};
  }
  if (to_set & FATTR_MTIME_NOW) {
    mtime_ = now;
  } else if (to_set & FATTR_MTIME) {
    mtime_ = {static_cast<time_t>(in.mtime), static_cast<long>(in.mtimensec)};
  }
  // The kernel has already checked that the caller may (chmod: owner or CAP_FOWNER; chown:
  // CAP_CHOWN, or the owner to a group of theirs) and cleared set-id bits where due.
  if (to_set & FATTR_MODE) mode_ = in.mode & 07777;
  if (to_set & FATTR_UID) uid_ = in.uid;
  if (to_set & FATTR_GID) gid_ = in.gid;
  if (to_set & (FATTR_MODE | FATTR_UID | FATTR_GID)) ctime_ = now;
  if (to_set & FATTR_CTIME)
    ctime_ = {static_cast<time_t>(in.ctime), static_cast<long>(in.ctimensec)};
  // The size in the reply is size_; with the write-back cache the kernel takes it as i_size
  // because this was a truncate.
  req.ReplyStruct(protocol::MakeAttrOut(Attr(), AttrTimeout()));
}

coro::Task<void> FuseFrontend::HandleFsync(Request req) {
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

coro::Task<void> FuseFrontend::HandleFallocate(Request req) {
  const protocol::FallocateArgs a = req.Get<protocol::FallocateArgs>();
  const int mode = static_cast<int>(a.mode);
  const uint64_t offset = a.offset, length = a.length;
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  if (config_.read_only) co_return req.ReplyError(EROFS);
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  const int op = mode & ~FALLOC_FL_KEEP_SIZE;
  // Linux accepts a punch only together with KEEP_SIZE.
  if (!(op == 0 || op == FALLOC_FL_ZERO_RANGE || (op == FALLOC_FL_PUNCH_HOLE && keep_size))) {
    co_return req.ReplyError(EOPNOTSUPP);
  }
  if (length == 0) co_return req.ReplyError(EINVAL);
  if (offset > kMaxEnd - length) co_return req.ReplyError(EFBIG);
  const uint64_t end = offset + length;
  if (!keep_size && end > size_) {
    // Grows the file like a write past the end would (the new part reads as zeros).
    if (int err = co_await GrowTo(end); err != 0) co_return req.ReplyError(err);
  }
  if (op == 0) co_return req.ReplyOk();  // thin image: nothing to reserve
  const uint64_t zero_end = std::min(end, size_);
  if (offset >= zero_end) co_return req.ReplyOk();  // KEEP_SIZE, entirely past the end
  // Zero or unallocated clusters where whole clusters are covered, zeros written elsewhere.
  Result<void> r =
      co_await backend_.WriteZeroes(offset, zero_end - offset, block::ZeroFlags::kMayUnmap);
  if (!r) {
    LogIoError(op == FALLOC_FL_PUNCH_HOLE ? "punch hole" : "zero range", offset, zero_end - offset,
               r.error());
    co_return req.ReplyError(ToErrno(r.error()));
  }
  TouchMtime();
  req.ReplyOk();
}

coro::Task<void> FuseFrontend::HandleLseek(Request req,
                                           [[maybe_unused]] coro::Gate::Holder request_holder) {
  const uint64_t offset = req.Get<protocol::LseekArgs>().offset;
  const int whence = static_cast<int>(req.Get<protocol::LseekArgs>().whence);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) co_return req.ReplyError(EINVAL);
  // Data written but not yet written back exists only in the kernel (buffered writes with the
  // write-back cache; shared mmap writes in every mode): have it sent to us first, unless no
  // handle open for writing can have left any. This happens before entering the gate: it needs
  // this loop to serve requests, and shutdown stops reading them before waiting for the gate
  // (the request holds requests_ instead, which shutdown waits for once the mount is gone).
  const bool exact = writable_handles_ == 0 || co_await WriteBackKernelCache(offset);
  auto holder = EnterHandler();
  if (!holder) co_return req.ReplyError(EIO);
  uint64_t size = size_;
  if (!exact) {
    // The kernel may still hold data we have not seen: call everything up to its end data
    // (POSIX allows a filesystem to report no holes at all).
    if (Result<uint64_t> k = co_await KernelSize(); k) size = std::max(size, *k);
    if (offset >= size) co_return req.ReplyError(ENXIO);
    co_return req.ReplyStruct(fuse_lseek_out{.offset = whence == SEEK_DATA ? offset : size});
  }
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
    if (hole == (whence == SEEK_HOLE)) co_return req.ReplyStruct(fuse_lseek_out{.offset = pos});
    pos += std::min<uint64_t>(st->length, size - pos);
  }
  if (whence == SEEK_DATA) co_return req.ReplyError(ENXIO);
  req.ReplyStruct(fuse_lseek_out{.offset = size});  // the end of the file is an implicit hole
}

}  // namespace qedfuse::fusefs
