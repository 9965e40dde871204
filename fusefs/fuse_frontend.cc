// FuseFrontend: session setup, the request reader on the event loop, and shutdown.
// The per-operation handlers live in fuse_ops.cc.
#include "fusefs/fuse_frontend.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/errors.h"
#include "qedfuse/base/log.h"

namespace qedfuse::fusefs {

const fuse_lowlevel_ops& FuseOpsTable();  // fuse_ops.cc

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRecycleRecvBuffers = false;  // let ASan see every allocation and free
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kRecycleRecvBuffers = false;
#else
constexpr bool kRecycleRecvBuffers = true;
#endif
#else
constexpr bool kRecycleRecvBuffers = true;
#endif

// Requests handled per loop turn before yielding to other handlers (completions, timers).
constexpr int kMaxRequestsPerTurn = 64;

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

RecvPool::~RecvPool() {
  for (std::byte* region : free_) std::free(region);
}

RecvBuffer RecvPool::Get() {
  if (!free_.empty()) {
    std::byte* region = free_.back();
    free_.pop_back();
    return RecvBuffer(this, region);
  }
  auto* region = static_cast<std::byte*>(std::aligned_alloc(kAlign, kRegionBytes));
  if (region == nullptr) throw std::bad_alloc();
  ++allocated_;
  return RecvBuffer(this, region);
}

void RecvPool::Put(std::byte* region) noexcept {
  if (kRecycleRecvBuffers && free_.size() < kMaxFree) {
    try {
      free_.push_back(region);
      return;
    } catch (...) {  // no room to remember it: free it instead
    }
  }
  --allocated_;
  std::free(region);
}

struct FuseFrontend::Reader {
  explicit Reader(boost::asio::io_context& ctx) : fd(ctx), signals(ctx) {}
  boost::asio::posix::stream_descriptor fd;  // a dup of fuse_session_fd()
  boost::asio::signal_set signals;
};

FuseFrontend::FuseFrontend(coro::EventLoop& loop, block::BlockBackend& backend,
                           FrontendConfig config)
    : loop_(loop),
      backend_(backend),
      config_(std::move(config)),
      reader_(std::make_unique<Reader>(loop.context())),
      atime_(config_.atime),
      mtime_(config_.mtime),
      ctime_(config_.ctime),
      size_(backend.length()),
      mode_(config_.mode & 07777),
      uid_(config_.uid),
      gid_(config_.gid) {}

FuseFrontend::~FuseFrontend() {
  Unmount();
  if (se_ != nullptr) fuse_session_destroy(se_);
}

absl::Status FuseFrontend::Mount() {
  // From here on a stop signal is queued for the loop (WaitForSignal) instead of ending the
  // process: the mount about to be made must be taken down again in order.
  reader_->signals.add(SIGINT);
  reader_->signals.add(SIGTERM);
  reader_->signals.add(SIGHUP);

  std::string opts = "default_permissions";
  if (!HasOption(config_.extra_mount_options, "fsname=")) {
    absl::StrAppend(&opts, ",fsname=", EscapeOption(config_.fsname));
  }
  if (!HasOption(config_.extra_mount_options, "subtype="))
    absl::StrAppend(&opts, ",subtype=qedfuse");
  // allow_root is allow_other for the kernel; MayAccess() turns the other users away.
  if (config_.allow_other || config_.allow_root) absl::StrAppend(&opts, ",allow_other");
  if (config_.read_only) absl::StrAppend(&opts, ",ro");
  for (const std::string& o : config_.extra_mount_options) {
    absl::StrAppend(&opts, ",", EscapeOption(o));
  }
  if (config_.debug) absl::StrAppend(&opts, ",debug");

  std::string arg0 = "qedfuse", arg1 = "-o";
  char* argv[] = {arg0.data(), arg1.data(), opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  se_ = fuse_session_new(&args, &FuseOpsTable(), sizeof(fuse_lowlevel_ops), this);
  fuse_opt_free_args(&args);
  if (se_ == nullptr) {
    return absl::InternalError("could not create the FUSE session (mount options: " + opts + ")");
  }
  if (fuse_session_mount(se_, config_.mountpoint.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("could not mount on ", config_.mountpoint,
                     " (is /dev/fuse available and are you allowed to mount?)"));
  }
  mounted_ = true;

  // Watch a dup so that Asio and libfuse each close their own descriptor. Non-blocking, so
  // that a request that vanishes between readiness and read() (interrupted) cannot block the
  // loop: fuse_session_receive_buf() then reports -EAGAIN. O_NONBLOCK is shared with the
  // session's descriptor, which only writes replies (never blocks on /dev/fuse).
  int fd = fcntl(fuse_session_fd(se_), F_DUPFD_CLOEXEC, 3);
  if (fd < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    Unmount();
    return absl::InternalError(absl::StrCat("cannot watch the FUSE device: ", strerror(err)));
  }
  reply_fd_ = fuse_session_fd(se_);
  boost::system::error_code ec;
  reader_->fd.assign(fd, ec);
  if (ec) {
    close(fd);
    Unmount();
    return absl::InternalError("cannot watch the FUSE device: " + ec.message());
  }
  return absl::OkStatus();
}

void FuseFrontend::Start() {
  reading_ = true;
  WaitForSignal();
  // Drain first: the kernel queued INIT at mount time, possibly before the descriptor was
  // registered with the reactor.
  loop_.Post([this] { OnReadable(); });
}

void FuseFrontend::WaitForSignal() {
  reader_->signals.async_wait([this](const boost::system::error_code& ec, int signo) {
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

void FuseFrontend::ArmReader() {
  reader_->fd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [this](const boost::system::error_code& ec) {
                           if (ec == boost::asio::error::operation_aborted || !reading_) return;
                           if (ec) {
                             BeginShutdown("FUSE device error: " + ec.message(), true);
                             return;
                           }
                           OnReadable();
                         });
}

void FuseFrontend::OnReadable() {
  const int fd = reader_->fd.native_handle();
  for (int i = 0; i < kMaxRequestsPerTurn; ++i) {
    if (!reading_) return;
    if (!recv_) recv_ = recv_pool_.Get();
    ssize_t n = ::read(fd, recv_.data(), recv_.capacity());
    if (n < 0) {
      const int err = errno;
      // ENOENT: the request was interrupted and withdrawn before we read it.
      if (err == EINTR || err == ENOENT) continue;
      if (err == EAGAIN) {
        // Asio's reactor watches descriptors edge-triggered: wait only after draining to EAGAIN.
        ArmReader();
        return;
      }
      // ENODEV: the mount is gone (fusermount3 -u, umount, abort).
      BeginShutdown(err == ENODEV ? std::string("the mount was removed")
                                  : absl::StrCat("reading the FUSE device failed: ", strerror(err)),
                    /*mount_gone=*/true);
      return;
    }
    if (static_cast<std::size_t>(n) < sizeof(fuse_in_header)) {
      BeginShutdown(absl::StrCat("short read of ", n, " bytes from the FUSE device"),
                    /*mount_gone=*/true);
      return;
    }
    if (!raw_io_ || !DispatchRaw(static_cast<std::size_t>(n))) {
      fuse_buf buf{};
      buf.mem = recv_.data();
      buf.size = static_cast<std::size_t>(n);
      processing_ = true;
      fuse_session_process_buf(se_, &buf);
      processing_ = false;
      // After INIT, READ and WRITE bypass libfuse (its debug log shows every request, though).
      raw_io_ = init_done_ && !config_.debug;
    }
    if (init_done_ && !becoming_ready_) {
      becoming_ready_ = true;
      coro::Spawn(BecomeReady());
    }
    if (fuse_session_exited(se_)) {
      BeginShutdown("the FUSE session ended", /*mount_gone=*/true);
      return;
    }
  }
  // More may be queued: continue from a later turn so completions are not starved.
  loop_.Post([this] { OnReadable(); });
}

bool FuseFrontend::DispatchRaw(std::size_t n) {
  // The two requests that carry data are parsed here rather than by libfuse, which would
  // allocate, lock and list a fuse_req for each (~900 instructions of a 4 KiB read). Their
  // replies are written by FuseRequest. Anything unexpected goes to libfuse.
  const char* base = recv_.data();
  fuse_in_header in;
  std::memcpy(&in, base, sizeof(in));
  if (in.len != n) return false;
  if (in.opcode == FUSE_INTERRUPT) {
    // Interrupts need no reply and we ignore them (every request completes promptly anyway).
    // libfuse would not find a raw request: it would queue the INTERRUPT and answer it EAGAIN on
    // its next request, so the kernel re-sent it over and over.
    return true;
  }
  if (in.nodeid != FUSE_ROOT_ID) return false;
  if (in.opcode == FUSE_READ && n >= sizeof(in) + sizeof(fuse_read_in)) {
    fuse_read_in arg;
    std::memcpy(&arg, base + sizeof(in), sizeof(arg));
    coro::Spawn(HandleRead(FuseRequest::Raw(reply_fd_, in.unique, "read"), arg.offset, arg.size));
    return true;
  }
  if (in.opcode == FUSE_WRITE && n >= RecvPool::kWriteHeader) {
    fuse_write_in arg;
    std::memcpy(&arg, base + sizeof(in), sizeof(arg));
    if (n - RecvPool::kWriteHeader != arg.size) return false;
    processing_ = true;
    WritePayload payload = TakePayload(base + RecvPool::kWriteHeader, arg.size);
    processing_ = false;
    coro::Spawn(HandleWrite(FuseRequest::Raw(reply_fd_, in.unique, "write"), arg.offset,
                            std::move(payload)));
    return true;
  }
  return false;
}

WritePayload FuseFrontend::TakePayload(const char* data, std::size_t size) {
  WritePayload p;
  p.size = size;
  if (processing_ && recv_.Contains(data, size)) {
    p.data = const_cast<char*>(data);
    p.recv = std::move(recv_);  // the next read gets a fresh buffer
  } else {
    p.copy = block::IoBuffer(size);
    if (size > 0) std::memcpy(p.copy.data(), data, size);
    p.data = static_cast<char*>(static_cast<void*>(p.copy.data()));
  }
  return p;
}

void FuseFrontend::StopReading() {
  reading_ = false;
  boost::system::error_code ec;
  reader_->fd.close(ec);  // our dup only; replies still go out through the session's fd
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

coro::Task<void> FuseFrontend::Shutdown(bool mount_gone) {
  // A live mount is only shut down before it was ready (a cancelled mount), when nobody can have
  // used it; once ready, shutdown waits until the mount is gone (TryUnmount).
  assert((mount_gone || !ready_) && "a ready mount is shut down only once it is gone");
  StopReading();
  co_await gate_.Close();
  absl::Status st = co_await backend_.Close();
  if (!st.ok()) {
    Log(LogLevel::kError, "closing the image failed: " + st.ToString());
    exit_code_ = 1;
  }
  Unmount();
  reader_->signals.cancel();
  Log(LogLevel::kInfo, absl::StrCat("unmounted ", config_.mountpoint, " (", handled_,
                                    " data requests, at most ", max_in_flight_, " in flight)"));
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
      Log(LogLevel::kError,
          absl::StrCat("cannot publish the size of ", path, " to the kernel: ", strerror(err)));
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

void FuseFrontend::Unmount() {
  if (!mounted_) return;
  mounted_ = false;
  // Our dup must be closed first: libfuse closes the session fd before umount2() so that the
  // kernel aborts the connection instead of waiting for us, and a dup would keep it open.
  boost::system::error_code ec;
  reader_->fd.close(ec);
  fuse_session_unmount(se_);
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
