// fusefs::FuseFrontend: serves one open image as a single regular file through the libfuse
// low-level API, driven entirely from the block layer's coro::EventLoop (no libfuse threads).
//
// Request flow: the loop watches a dup of fuse_session_fd() (non-blocking) with
// posix::stream_descriptor::async_wait; when it is readable, OnReadable() reads requests, each
// into its own pooled RecvBuffer, until EAGAIN (at most 64 per loop turn). Once INIT is done,
// READ and WRITE are parsed here and answered through FuseRequest's raw replies, bypassing
// libfuse's per-request bookkeeping (DispatchRaw; INTERRUPTs are dropped); every other request
// goes to fuse_session_process_buf(), which calls the op trampolines in fuse_ops.cc. A trampoline
// wraps the fuse_req_t in a FuseRequest and Spawn()s a handler coroutine; a WRITE takes the whole
// receive buffer with it (its payload lands 4 KiB aligned, see RecvPool), so the payload is owned
// by the request before anything can suspend and is never copied. The handler replies when its
// block-layer I/O completes, usually from a later loop turn. Many requests are in flight at once
// and nothing blocks the loop. Requests are processed strictly in the order the kernel hands them
// out.
//
// The mount is over a regular file, so the root inode (FUSE_ROOT_ID) IS the image's raw view;
// there are no directories and no lookups.
//
// Stopping. SIGTERM, SIGINT and SIGHUP are caught from Mount() on (the command that started the
// daemon forwards its own to it) and mean "unmount if nobody uses the file":
//   - before the mount is ready (the handshake is still going on) they cancel it: the mount is
//     removed at once (nothing can be using it yet) and the image closed;
//   - afterwards they write back the kernel cache (with the write-back cache on, an fsync of the
//     mounted file from a worker thread while this loop serves the WRITEs it causes), then try a
//     NON-lazy unmount on a worker thread (UnmountPath: umount2 as root, fusermount3 -u
//     otherwise) while the loop keeps serving. If the file is in use (open, mapped, a loop
//     device) the kernel refuses with EBUSY: the daemon says so and keeps serving, and a later
//     signal tries again. Lazily detaching a busy mount would let the kernel fail the I/O of
//     its users (a filesystem on a loop device on top would see write errors).
// Shutdown proper starts once the mount is gone: after our own unmount, or when the kernel reports
// it gone (ENODEV after `fusermount3 -u` / `umount` by the user, or the connection aborted):
//   1. stop reading requests; 2. wait for handlers in flight (Gate); 3. BlockBackend::Close()
//   (flush, QED clears NEED_CHECK); 4. fuse_session_unmount() (a no-op when the kernel has
//   already dropped the mount); the loop then runs dry. Signals during shutdown change nothing.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fusefs/fuse_request.h"
#include "fusefs/mountinfo.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/coro/blocking_pool.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/gate.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::fusefs {

// The largest WRITE the kernel may send (FUSE_INIT max_write; libfuse 3.14 cannot go higher).
inline constexpr std::size_t kMaxWrite = std::size_t{1} << 20;
// The image's size is the file's rounded up to this: QED stores sizes in 512-byte sectors.
inline constexpr uint64_t kSizeUnit = 512;

class RecvPool;

// One request's receive buffer, move-only; returns itself to its pool when destroyed.
class RecvBuffer {
 public:
  RecvBuffer() noexcept = default;
  RecvBuffer(RecvPool* pool, std::byte* region) noexcept : pool_(pool), region_(region) {}
  RecvBuffer(RecvBuffer&& o) noexcept
      : pool_(o.pool_), region_(std::exchange(o.region_, nullptr)) {}
  RecvBuffer& operator=(RecvBuffer&& o) noexcept;
  RecvBuffer(const RecvBuffer&) = delete;
  RecvBuffer& operator=(const RecvBuffer&) = delete;
  ~RecvBuffer() { Reset(); }

  explicit operator bool() const noexcept { return region_ != nullptr; }
  // Where the kernel writes the request, and how much room there is.
  char* data() const noexcept;
  static std::size_t capacity() noexcept;
  // Whether [p, p + n) lies inside this buffer.
  bool Contains(const void* p, std::size_t n) const noexcept;
  void Reset() noexcept;

 private:
  RecvPool* pool_ = nullptr;
  std::byte* region_ = nullptr;
};

// Receive buffers for /dev/fuse, recycled. Each is a 4 KiB-aligned region read into at offset
// 4096 - sizeof(fuse_in_header) - sizeof(fuse_write_in), so that a WRITE's payload starts exactly
// at offset 4096: aligned for O_DIRECT image files (cache=none) without a copy. Only the pages a
// request touches become resident. At most kMaxFree idle buffers are kept (none under ASan, so
// that it sees every use after free).
class RecvPool {
 public:
  static constexpr std::size_t kAlign = 4096;
  static constexpr std::size_t kWriteHeader = sizeof(fuse_in_header) + sizeof(fuse_write_in);
  static constexpr std::size_t kDataOffset = kAlign - kWriteHeader;
  static constexpr std::size_t kRegionBytes = kAlign + kMaxWrite + kAlign;
  static constexpr std::size_t kCapacity = kRegionBytes - kDataOffset;
  static constexpr std::size_t kMaxFree = 16;

  RecvPool() = default;
  ~RecvPool();
  RecvPool(const RecvPool&) = delete;
  RecvPool& operator=(const RecvPool&) = delete;

  RecvBuffer Get();
  void Put(std::byte* region) noexcept;
  std::size_t allocated() const noexcept { return allocated_; }

 private:
  std::vector<std::byte*> free_;
  std::size_t allocated_ = 0;  // regions alive (free or in use)
};

inline RecvBuffer& RecvBuffer::operator=(RecvBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    pool_ = o.pool_;
    region_ = std::exchange(o.region_, nullptr);
  }
  return *this;
}
inline char* RecvBuffer::data() const noexcept {
  return reinterpret_cast<char*>(region_ + RecvPool::kDataOffset);
}
inline std::size_t RecvBuffer::capacity() noexcept { return RecvPool::kCapacity; }
inline bool RecvBuffer::Contains(const void* p, std::size_t n) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto lo = reinterpret_cast<std::uintptr_t>(region_);
  return region_ != nullptr && a >= lo && a <= lo + RecvPool::kRegionBytes &&
         n <= lo + RecvPool::kRegionBytes - a;
}
inline void RecvBuffer::Reset() noexcept {
  if (region_ != nullptr) pool_->Put(std::exchange(region_, nullptr));
}

// A WRITE's payload, owned by its handler: the receive buffer it arrived in, or (if libfuse ever
// handed us a payload outside it) a copy.
struct WritePayload {
  RecvBuffer recv;
  block::IoBuffer copy;
  char* data = nullptr;
  std::size_t size = 0;
};

struct FrontendConfig {
  std::string mountpoint;  // absolute path of a regular file, or /dev/fd/N from mount.fuse3
  std::string fsname;      // source column of /proc/mounts (the image path)
  bool read_only = false;
  bool writeback_cache = true;  // ask the kernel for FUSE_CAP_WRITEBACK_CACHE
  bool debug = false;           // libfuse logs every request; we log every error reply
  bool allow_other = false;
  // Mounted with allow_other, but requests that name the file (open, stat, chmod, truncate,
  // statfs, lseek, fallocate) from users other than |mounter_uid| and root get EACCES.
  bool allow_root = false;
  std::vector<std::string> extra_mount_options;  // verbatim (nosuid, nodev, ...)
  // The user who mounts (the daemon's real ids).
  uid_t mounter_uid = 0;
  gid_t mounter_gid = 0;
  // Initial owner and permission bits of the mounted file (chmod/chown change them while
  // mounted), and its timestamps (taken from the file that is mounted over).
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0600;
  struct timespec atime {};
  struct timespec mtime {};
  struct timespec ctime {};
};

class FuseFrontend {
 public:
  FuseFrontend(coro::EventLoop& loop, block::BlockBackend& backend, FrontendConfig config);
  ~FuseFrontend();
  FuseFrontend(const FuseFrontend&) = delete;
  FuseFrontend& operator=(const FuseFrontend&) = delete;

  // Creates the session and mounts it. On failure nothing is left mounted.
  absl::Status Mount();
  // Called once, on the loop, right after the kernel's INIT request has been answered: from then
  // on every access to the mounted file is served.
  void SetOnReady(std::function<void()> fn) { on_ready_ = std::move(fn); }
  // Starts reading requests and acting on the signals caught since Mount(). Precondition:
  // Mount() succeeded. EventLoop::Run() returns once shutdown has finished.
  void Start();
  // What SIGTERM does (see above): cancel the mount before it is ready, else unmount it unless it
  // is in use. |why| is logged.
  void RequestStop(const std::string& why) { OnStopRequest(why, 0); }

  // 0 after a clean shutdown; 1 if the image could not be closed cleanly.
  int exit_code() const noexcept { return exit_code_; }
  bool ready() const noexcept { return ready_; }
  // The signal that cancelled the mount before it was ready (0: none, or not a signal).
  int cancel_signal() const noexcept { return cancel_signal_; }
  bool cancelled() const noexcept { return cancelled_; }

 private:
  friend struct FuseOps;  // the libfuse op trampolines (fuse_ops.cc)

  // Reader.
  void ArmReader();
  void OnReadable();
  // Handles the READ or WRITE in recv_ (|n| bytes) without libfuse; false: not one of those.
  bool DispatchRaw(std::size_t n);
  void StopReading();
  // Called by the WRITE trampoline: takes ownership of its payload (see WritePayload).
  WritePayload TakePayload(const char* data, std::size_t size);

  void WaitForSignal();
  void OnStopRequest(const std::string& why, int signo);
  coro::Task<void> TryUnmount(std::string why);
  void BeginShutdown(const std::string& why, bool mount_gone);
  coro::Task<void> Shutdown(bool mount_gone);
  void Unmount();
  coro::Task<void> PushKernelCache();
  coro::Task<void> BecomeReady();

  // Handlers (fuse_ops.cc). Each owns its request and answers it exactly once.
  coro::Task<void> HandleRead(FuseRequest req, uint64_t offset, std::size_t size);
  coro::Task<void> HandleWrite(FuseRequest req, uint64_t offset, WritePayload payload);
  coro::Task<void> HandleSetattr(FuseRequest req, struct stat attr, int to_set);
  coro::Task<void> HandleFsync(FuseRequest req);
  coro::Task<void> HandleFallocate(FuseRequest req, int mode, uint64_t offset, uint64_t length);
  coro::Task<void> HandleLseek(FuseRequest req, uint64_t offset, int whence);

  // Size changes (fuse_ops.cc). GrowTo makes the file at least |end| bytes long, and the image
  // at least that rounded up to kSizeUnit; 0 or an errno.
  coro::Task<int> GrowTo(uint64_t end);
  // With the write-back cache: the file size the kernel holds (i_size, its own), read with
  // statx from a dedicated worker without sending us a request.
  coro::Task<Result<uint64_t>> KernelSize();
  // Has the kernel write its dirty pages from |from| on back to us; false if that could not be
  // done.
  coro::Task<bool> WriteBackKernelCache(uint64_t from);
  // allow_root: whether user |uid| may make a request that names the file.
  bool MayAccess(uid_t uid) const;
  // Answers the OPENs that arrived before the mount was ready: as usual once ready_, else EIO.
  void FinishEarlyOpens();

  // Enters the gate for one handler; empty once shutdown has started.
  std::optional<coro::Gate::Holder> EnterHandler();
  struct stat Attr() const;
  double AttrTimeout() const;
  void TouchMtime();
  void LogIoError(const char* op, uint64_t offset, uint64_t length, const std::error_code& ec);

  coro::EventLoop& loop_;
  block::BlockBackend& backend_;
  FrontendConfig config_;

  struct fuse_session* se_ = nullptr;
  bool mounted_ = false;
  RecvPool recv_pool_;  // before everything that holds its buffers
  struct Reader;        // asio objects, kept out of this header
  std::unique_ptr<Reader> reader_;
  RecvBuffer recv_;          // the buffer of the outstanding read; a WRITE takes it away
  bool processing_ = false;  // inside fuse_session_process_buf() for the request in recv_
  bool raw_io_ = false;      // READ/WRITE bypass libfuse (after INIT, unless debugging)
  int reply_fd_ = -1;        // fuse_session_fd(), for replies to raw requests

  coro::Gate gate_;
  // Workers for blocking calls on the mounted file, which wait for requests that this loop
  // serves: BecomeReady's truncate or shutdown's fsync, and lseek write-backs. A thread for
  // each kind, so that neither waits in the queue behind a call that waits for the inode lock
  // its own caller holds: the kernel holds it across an LSEEK, whose handler waits for its
  // write-back, while an fsync waits for that lock.
  coro::BlockingPool pool_{2};
  // statx only (KernelSize): it never waits for this loop nor for a lock, and SETATTR handlers
  // wait for it while the truncate that sent them holds a thread of pool_.
  coro::BlockingPool stat_pool_{1};
  coro::CoMutex grow_lock_;        // serialises GrowTo
  dev_t mount_dev_ = 0;            // device of the mounted file, as statx reports it
  uint64_t writable_handles_ = 0;  // files open for writing (OPEN minus RELEASE)
  struct EarlyOpen {
    FuseRequest req;
    uint32_t open_flags;
    bool writable;
  };
  std::vector<EarlyOpen> early_opens_;  // OPENs waiting for ready_
  std::function<void()> on_ready_;
  bool init_done_ = false;
  bool writeback_active_ = false;  // the kernel agreed to FUSE_CAP_WRITEBACK_CACHE
  bool becoming_ready_ = false;
  bool ready_ = false;
  bool reading_ = false;
  bool unmounting_ = false;  // a TryUnmount() is under way
  bool shutting_down_ = false;
  bool cancelled_ = false;  // stopped before the mount was ready
  int cancel_signal_ = 0;
  UnmountResult unmount_result_;  // written by the worker that runs UnmountPath()
  int exit_code_ = 0;
  uint64_t io_errors_logged_ = 0;
  uint64_t handled_ = 0;  // requests that went through a handler coroutine
  std::size_t max_in_flight_ = 0;
  struct timespec atime_, mtime_, ctime_;
  // The file's size: the end of the furthest write, fallocate or truncate, exactly. The image
  // stores it rounded up to kSizeUnit (backend_.length()), which is what the next mount shows.
  uint64_t size_ = 0;
  mode_t mode_;  // permission bits
  uid_t uid_;
  gid_t gid_;
};

}  // namespace qedfuse::fusefs
