// FuseFrontend: mounting, the connection, readiness and shutdown.
// The per-operation handlers live in fuse_ops.cc.
#include "fusefs/fuse_frontend.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/errors.h"
#include "qedfuse/base/log.h"

namespace qedfuse::fusefs {

namespace {

// Escapes ',' and '\' for libfuse's -o parser.
std::string EscapeOption(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

bool HasOption(const std::vector<std::string>& opts, const char* prefix) {
  return std::any_of(opts.begin(), opts.end(),
                     [prefix](const std::string& o) { return o.rfind(prefix, 0) == 0; });
}

}  // namespace

struct FuseFrontend::Signals {
  explicit Signals(boost::asio::io_context& ctx) : set(ctx) {}
  boost::asio::signal_set set;
};

FuseFrontend::FuseFrontend(coro::EventLoop& loop, block::BlockBackend& backend,
                           FrontendConfig config)
    : loop_(loop),
      backend_(backend),
      config_(std::move(config)),
      signals_(std::make_unique<Signals>(loop.context())),
      atime_(config_.atime),
      mtime_(config_.mtime),
      ctime_(config_.ctime),
      size_(backend.length()),
      mode_(config_.mode & 07777),
      uid_(config_.uid),
      gid_(config_.gid) {}

FuseFrontend::~FuseFrontend() {
  if (conn_ != nullptr) conn_->StopReading();
  mount_.Unmount();
  if (conn_ != nullptr) conn_->Close();
}

absl::Status FuseFrontend::Mount() {
  // From here on a stop signal is queued for the loop (WaitForSignal) instead of ending the
  // process: the mount about to be made must be taken down again in order.
  signals_->set.add(SIGINT);
  signals_->set.add(SIGTERM);
  signals_->set.add(SIGHUP);

  std::string opts = "default_permissions";
  if (!HasOption(config_.extra_mount_options, "fsname=")) {
    absl::StrAppend(&opts, ",fsname=", EscapeOption(config_.fsname));
  }
  if (!HasOption(config_.extra_mount_options, "subtype="))
    absl::StrAppend(&opts, ",subtype=qedfuse");
  // allow_root is allow_other for the kernel; the access policy turns the other users away.
  if (config_.allow_other || config_.allow_root) absl::StrAppend(&opts, ",allow_other");
  if (config_.read_only) absl::StrAppend(&opts, ",ro");
  for (const std::string& o : config_.extra_mount_options) {
    absl::StrAppend(&opts, ",", EscapeOption(o));
  }
  if (absl::Status st = mount_.Mount(config_.mountpoint, opts); !st.ok()) return st;

  transport::ConnectionConfig cc;
  protocol::SessionConfig& session = cc.session;
  // Background requests (async O_DIRECT reads and writes, write-back) in flight at once. More
  // only adds contention: random writes at iodepth 32 and buffered dd got slower and cost more
  // daemon CPU with 64 (scripts/bench/profiling.md); qemu-storage-daemon runs with the kernel's
  // default of 12.
  session.max_background = 16;
  session.congestion_threshold = 12;
  session.writeback_cache = config_.writeback_cache && !config_.read_only;
  // open(O_TRUNC) arrives as a SETATTR to size 0 after the OPEN, judged in HandleSetattr like
  // every other size change (a shrink fails the open with EPERM).
  session.atomic_o_trunc = false;
  // auto serves over /dev/fuse for now: measured here (scripts/bench/profiling.md, "qedfuse over
  // both transports"), FUSE over io_uring wins at iodepth 32 but loses at iodepth 1 and on
  // allocating writes, and a mount cannot change transport per workload. on uses it anyway.
  session.io_uring = config_.io_uring == protocol::IoUringMode::kOn ? protocol::IoUringMode::kOn
                                                                    : protocol::IoUringMode::kOff;
  // allow_root is allow_other for the kernel; the policy turns the other users away.
  if (config_.allow_root) cc.policy = protocol::AccessPolicy::OwnerAndRoot(config_.mounter_uid);
  conn_ = std::make_unique<transport::Connection>(loop_, mount_.fd(), cc);
  return absl::OkStatus();
}

void FuseFrontend::Start() {
  WaitForSignal();
  conn_->SetOnReady([this] {
    writeback_active_ = conn_->negotiated().writeback_cache;
    coro::Spawn(BecomeReady());
  });
  conn_->SetOnClosed([this](const std::string& why) {
    // Before INIT was answered (refused: the mount is unusable but still there) Shutdown()
    // removes the mount; afterwards the kernel has dropped it (unmount, abort).
    if (!conn_->initialized() && failure_.empty()) failure_ = why;
    BeginShutdown(why, /*mount_gone=*/conn_->initialized());
  });
  absl::Status st = conn_->Start([this](Request req) { Dispatch(std::move(req)); });
  if (!st.ok()) {
    failure_ = std::string(st.message());
    BeginShutdown(failure_, /*mount_gone=*/false);
  }
}

void FuseFrontend::WaitForSignal() {
  signals_->set.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;  // cancelled at the end of shutdown
    OnStopRequest(absl::StrCat("received ", strsignal(signo)), signo);
    WaitForSignal();
  });
}

void FuseFrontend::OnStopRequest(const std::string& why, int signo) {
  if (shutting_down_) {
    Log(LogLevel::kInfo, why + ": already shutting down");
    return;
  }
  if (!ready_) {
    // Nobody can be using the mount yet: cancel it (Shutdown() detaches it).
    cancelled_ = true;
    cancel_signal_ = signo;
    BeginShutdown(why + " before the mount was ready", /*mount_gone=*/false);
    return;
  }
  if (unmounting_) {
    Log(LogLevel::kInfo, why + ": already trying to unmount " + config_.mountpoint);
    return;
  }
  unmounting_ = true;
  coro::Spawn(TryUnmount(why));
}

coro::Task<void> FuseFrontend::TryUnmount(std::string why) {
  assert(ready_ && unmounting_ && !shutting_down_);
  Log(LogLevel::kInfo, why + ": unmounting " + config_.mountpoint);
  if (writeback_active_ && !config_.read_only) co_await PushKernelCache();
  if (shutting_down_) co_return;  // the mount went away meanwhile
  const std::string& path = config_.mountpoint;
  if (path.rfind("/dev/fd/", 0) == 0) {
    unmounting_ = false;
    Log(LogLevel::kWarning,
        "mounted through a file descriptor (mount.fuse3 -o drop_privileges), so the mount point is "
        "unknown here; keeping it mounted: unmount it with umount MOUNTPOINT");
    co_return;
  }
  // Only trivially destructible captures (see BecomeReady); both outlive the call.
  const char* cpath = path.c_str();
  UnmountResult* result = &unmount_result_;
  co_await pool_.Offload([cpath, result] { *result = UnmountPath(cpath, /*lazy=*/false); });
  unmounting_ = false;
  if (shutting_down_) co_return;  // the kernel reported the mount gone first
  if (result->error == 0) {
    BeginShutdown("unmounted", /*mount_gone=*/true);
    co_return;
  }
  if (result->error == EBUSY) {
    std::string loops = LoopDevicesBackedBy(path);
    Log(LogLevel::kWarning,
        absl::StrCat(path, " is still in use (",
                     loops.empty() ? "an open file or a mapping" : "loop device " + loops,
                     "); keeping it mounted; unmount it once it is free (umount ", path,
                     " or fusermount3 -u ", path, "), or signal qedfuse again"));
  } else if (result->error == EINVAL) {
    Log(LogLevel::kWarning,
        absl::StrCat(path,
                     " is no longer a mount point (detached with umount -l?); serving it "
                     "until its last user closes it"));
  } else {
    Log(LogLevel::kError,
        absl::StrCat("cannot unmount ", path, ": ", result->message, "; keeping it mounted"));
  }
}

void FuseFrontend::BeginShutdown(const std::string& why, bool mount_gone) {
  if (shutting_down_) {
    Log(LogLevel::kInfo, why + ": already shutting down");
    return;
  }
  shutting_down_ = true;
  Log(LogLevel::kInfo, why + ": shutting down " + config_.mountpoint);
  coro::Spawn(Shutdown(mount_gone));
}

coro::Task<void> FuseFrontend::Shutdown([[maybe_unused]] bool mount_gone) {
  // A live mount is only shut down before it was ready (a cancelled mount), when nobody can have
  // used it; once ready, shutdown waits until the mount is gone (TryUnmount).
  assert((mount_gone || !ready_) && "a ready mount is shut down only once it is gone");
  conn_->StopReading();
  co_await gate_.Close();
  absl::Status st = co_await backend_.Close();
  if (!st.ok()) {
    Log(LogLevel::kError, "closing the image failed: " + st.ToString());
    exit_code_ = 1;
  }
  // Requests held outside the gate, and OPENs still waiting for a mount that never became
  // ready (EIO), are answered while the descriptor their replies go to is still open.
  co_await requests_.Close();
  FinishEarlyOpens();
  mount_.Unmount();
  const std::string transport =
      conn_->initialized() ? conn_->TransportDescription() : std::string("none (no INIT)");
  const uint64_t ring = conn_->ring_requests(), dev = conn_->dev_requests();
  conn_->Close();
  signals_->set.cancel();
  Log(LogLevel::kInfo,
      absl::StrCat("unmounted ", config_.mountpoint, " (", handled_, " data requests, at most ",
                   max_in_flight_, " in flight; transport ", transport, ": ", ring,
                   " requests over io_uring, ", dev, " over /dev/fuse)"));
}

coro::Task<void> FuseFrontend::BecomeReady() {
  // Only trivially destructible captures below: GCC 12 destroys non-trivial temporaries of a
  // co_await expression twice. config_ outlives the calls.
  const char* path = config_.mountpoint.c_str();
  if (writeback_active_) {
    // With the write-back cache the kernel owns i_size of a regular file and ignores the size in
    // our GETATTR replies. The root inode was created at mount time with size 0 (it never went
    // through LOOKUP), so publish the real size the one way the kernel accepts it: a SETATTR
    // whose reply carries it. truncate() to the current size is a no-op for us; it blocks, so it
    // runs on a worker while this loop serves the SETATTR. (main.cc turns the write-back cache
    // off for a /dev/fd/N mountpoint, which gives no path to the mounted file.)
    auto size = static_cast<off_t>(size_);
    // The first KernelSize() learns which device the mounted file is on.
    Result<uint64_t> k = co_await KernelSize();
    int err = k ? 0 : ToErrno(k.error());
    if (err == 0) {
      err = co_await pool_.Offload(
          [path, size]() -> int { return ::truncate(path, size) == 0 ? 0 : errno; });
    }
    if (err != 0) {
      if (shutting_down_) co_return;  // cancelled meanwhile: the mount is going away anyway
      failure_ =
          absl::StrCat("cannot publish the size of ", path, " to the kernel: ", strerror(err));
      Log(LogLevel::kError, failure_);
      BeginShutdown("mount setup failed", /*mount_gone=*/false);
      FinishEarlyOpens();
      co_return;
    }
  }
  if (!shutting_down_) ready_ = true;
  FinishEarlyOpens();
  if (ready_ && on_ready_) on_ready_();
}

coro::Task<void> FuseFrontend::PushKernelCache() {
  // fsync() of the mounted file makes the kernel send its dirty pages (and then FSYNC) to us.
  // It blocks, so it runs on a worker while this loop keeps serving those requests.
  const char* path = config_.mountpoint.c_str();  // trivially destructible capture (GCC 12)
  int err = co_await pool_.Offload([path]() -> int {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return errno;
    int rc = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    return rc;
  });
  if (err != 0) {
    Log(LogLevel::kWarning,
        absl::StrCat("could not write back the kernel cache of ", path, ": ", strerror(err)));
  }
}

std::optional<coro::Gate::Holder> FuseFrontend::EnterHandler() {
  auto holder = gate_.TryEnter();
  if (holder) {
    ++handled_;
    max_in_flight_ = std::max(max_in_flight_, gate_.count());
  }
  return holder;
}

struct stat FuseFrontend::Attr() const {
  struct stat st {};
  st.st_ino = FUSE_ROOT_ID;
  st.st_nlink = 1;
  if (ready_) {
    st.st_mode = S_IFREG | mode_;
    st.st_uid = uid_;
    st.st_gid = gid_;
  } else {
    // Until the mount is ready the file is the mounting user's alone, whatever uid=, gid= and
    // umask= say: BecomeReady truncates it as that user (AttrTimeout() keeps this uncached).
    st.st_mode = S_IFREG | 0600;
    st.st_uid = config_.mounter_uid;
    st.st_gid = config_.mounter_gid;
  }
  st.st_size = static_cast<off_t>(size_);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((backend_.driver().AllocatedBytes() + 511) / 512);
  st.st_atim = atime_;
  st.st_mtim = mtime_;
  st.st_ctim = ctime_;
  return st;
}

void FuseFrontend::TouchMtime() {
  clock_gettime(CLOCK_REALTIME, &mtime_);
  ctime_ = mtime_;
}

void FuseFrontend::LogIoError(const char* op, uint64_t offset, uint64_t length,
                              const std::error_code& ec) {
  // Bounded: a failing disk must not flood syslog.
  ++io_errors_logged_;
  if (io_errors_logged_ > 20 && io_errors_logged_ % 1000 != 0) return;
  Log(LogLevel::kError,
      absl::StrCat(op, " of ", length, " bytes at offset ", offset, " failed: ", ec.message(),
                   io_errors_logged_ > 20 ? " (further errors suppressed)" : ""));
}

}  // namespace qedfuse::fusefs
