// fusefs::FuseFrontend: serves one open image as a single regular file over FUSE, driven
// entirely from the block layer's coro::EventLoop (no other threads serve requests).
//
// Request flow: libfuse only mounts and unmounts (transport::FuseMount: mount(2) or fusermount3,
// -o options). Every request is read, decoded and answered by our own codec through a
// transport::Connection, which picks the transport at INIT (/dev/fuse, or FUSE over io_uring with
// --io-uring=on when the kernel offers it), answers INIT, DESTROY, FORGET, INTERRUPT,
// malformed and unknown requests itself, applies allow_root (protocol::AccessPolicy) and writes
// the -d log of requests and replies. Every other request reaches Dispatch() (fuse_ops.cc) as a
// transport::Request, which owns the buffer it arrived in until it is answered: a WRITE's payload
// is used in place (4 KiB aligned for O_DIRECT image files, never copied) and is the request's
// before anything can suspend; a READ is read into the request's reply area. Handlers are
// coroutines that reply when their block-layer I/O completes, usually from a later loop turn.
// Many requests are in flight at once and nothing blocks the loop.
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
//   (flush, QED clears NEED_CHECK); 4. wait for the requests still held outside the gate (see
//   requests_) and answer the OPENs still waiting for ready with EIO, while their replies can
//   still be written; 5. unmount (a no-op when the kernel has already dropped the mount);
//   6. close the Connection; the loop then runs dry. Signals during shutdown change nothing.
#pragma once

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
#include "fusefs/mountinfo.h"
#include "fusefs/protocol/session.h"
#include "fusefs/transport/connection.h"
#include "fusefs/transport/fuse_mount.h"
#include "fusefs/transport/request.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/io_buffer.h"
#include "qedfuse/coro/blocking_pool.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/gate.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::fusefs {

// The image's size is the file's rounded up to this: QED stores sizes in 512-byte sectors.
inline constexpr uint64_t kSizeUnit = 512;

struct FrontendConfig {
  std::string mountpoint;  // absolute path of a regular file, or /dev/fd/N from mount.fuse3
  std::string fsname;      // source column of /proc/mounts (the image path)
  bool read_only = false;
  bool writeback_cache = true;  // ask the kernel for its write-back cache
  // FUSE over io_uring: on (or fail the mount), off; auto is /dev/fuse (see Mount()).
  protocol::IoUringMode io_uring = protocol::IoUringMode::kAuto;
  bool allow_other = false;
  // Mounted with allow_other, but requests that name the file (open, stat, chmod, truncate,
  // statfs) from users other than |mounter_uid| and root get EACCES (protocol::AccessPolicy).
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
  // Why the mount failed before it was ready, when the connection said (INIT refused, e.g.
  // io_uring=on without kernel support); empty otherwise.
  const std::string& failure() const noexcept { return failure_; }

 private:
  using Request = transport::Request;

  void WaitForSignal();
  void OnStopRequest(const std::string& why, int signo);
  coro::Task<void> TryUnmount(std::string why);
  void BeginShutdown(const std::string& why, bool mount_gone);
  coro::Task<void> Shutdown(bool mount_gone);
  coro::Task<void> PushKernelCache();
  coro::Task<void> BecomeReady();

  // Requests (fuse_ops.cc): Dispatch() gets every request the Connection passes on and answers
  // it at once or hands it to a handler coroutine. Each handler owns its request and answers it
  // exactly once.
  void Dispatch(Request req);
  void HandleOpen(Request req);
  void AnswerOpen(Request req, uint32_t open_flags, bool writable);
  void HandleRelease(Request req);
  void HandleStatfs(Request req);
  coro::Task<void> HandleRead(Request req);
  coro::Task<void> HandleWrite(Request req);
  coro::Task<void> HandleSetattr(Request req);
  coro::Task<void> HandleFsync(Request req);
  coro::Task<void> HandleFallocate(Request req);
  coro::Task<void> HandleLseek(Request req, coro::Gate::Holder request_holder);

  // Size changes (fuse_ops.cc). GrowTo makes the file at least |end| bytes long, and the image
  // at least that rounded up to kSizeUnit; 0 or an errno.
  coro::Task<int> GrowTo(uint64_t end);
  // With the write-back cache: the file size the kernel holds (i_size, its own), read with
  // statx from a dedicated worker without sending us a request.
  coro::Task<Result<uint64_t>> KernelSize();
  // Has the kernel write its dirty pages from |from| on back to us; false if that could not be
  // done.
  coro::Task<bool> WriteBackKernelCache(uint64_t from);
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

  transport::FuseMount mount_;
  // Created by Mount() on the mounted descriptor; declared after mount_ so that it goes first.
  std::unique_ptr<transport::Connection> conn_;
  struct Signals;  // asio objects, kept out of this header
  std::unique_ptr<Signals> signals_;

  // Handlers of block-layer work hold gate_; shutdown closes it before closing the image.
  coro::Gate gate_;
  // Requests held outside gate_ (an LSEEK waiting for the kernel to write its cache back, which
  // needs this loop to serve requests while shutdown waits for gate_): closed by shutdown before
  // it unmounts. By then the kernel has dropped the mount (or it never became ready, and no
  // LSEEK can have come), so such waits end at once.
  coro::Gate requests_;
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
    Request req;
    uint32_t open_flags;
    bool writable;
  };
  std::vector<EarlyOpen> early_opens_;  // OPENs waiting for ready_
  std::function<void()> on_ready_;
  bool writeback_active_ = false;  // the kernel agreed to its write-back cache
  bool ready_ = false;
  bool unmounting_ = false;  // a TryUnmount() is under way
  bool shutting_down_ = false;
  bool cancelled_ = false;  // stopped before the mount was ready
  int cancel_signal_ = 0;
  std::string failure_;
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
