// qedfuse: mounts a QED image as one raw file.
//
//   qedfuse [OPTIONS] IMAGE MOUNTPOINT [-o OPTS]
//   qedfuse IMAGE MOUNTPOINT -o remount,ro|rw      (what mount(8) runs for a remount)
//
// Process structure: command-line and path errors are reported by the invoking process, which
// also refuses a MOUNTPOINT that is already a mount point (mounts never stack; a dead mount left
// by a killed daemon is named as such, with the command that removes it). Unless -f/-d is given,
// it then forks before anything else is created (io_uring rings, worker threads and the FUSE
// session do not survive a fork): the child opens the image, mounts, and once the kernel's INIT
// has been answered writes a status byte into a pipe and detaches from the terminal. The parent
// waits for that byte, so the command returns only when the mount is live (`qedfuse img.qed
// disk.raw && losetup -f --show disk.raw` needs no sleep), or exits non-zero after the child has
// printed why it failed.
//
// Cancelling the command (Ctrl-C, `timeout`, a hangup, or the parent killed outright) cancels the
// mount and leaves nothing behind. Until the mount exists (opening the image may take long: a
// repair, a slow or stalled backing file) SIGINT/SIGTERM/SIGHUP end the process at once
// (CancelNow: it removes a mountpoint file it created; the kernel drops the image's locks). From
// the mount on, FuseFrontend catches them and takes the mount down in order. The parent forwards
// its own cancel signal to the child (which does not share its terminal) and waits for it; if the
// child is still opening the image 2 s later (stuck in a wait only SIGKILL ends, like a read from
// a hung network or FUSE filesystem), or on a second signal, it kills the child and removes what
// it left. The child dies with its parent (PR_SET_PDEATHSIG) until the mount is live, and a
// status byte that cannot be delivered means the command is gone, which cancels the mount too.
//
// Logging (one sink, qedfuse/base/log.h): --log-file=PATH if given; else standard error in the
// foreground; else syslog where /dev/log exists; else the daemon keeps the standard error it was
// started with if that is a terminal or a file (warning once at mount), since /dev/null would
// swallow corruption reports; a pipe it must let go of (its reader may wait for its end), which
// the warning says. While the command is still running, errors and warnings are echoed to
// standard error as well.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#define FUSE_USE_VERSION 314
#include <fuse_log.h>
#include <fuse_lowlevel.h>

#include "absl/strings/str_cat.h"
#include "fusefs/debug_hooks.h"
#include "fusefs/fuse_frontend.h"
#include "fusefs/mount_options.h"
#include "fusefs/mountinfo.h"
#include "fusefs/remount.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/event_loop.h"

#ifndef QEDFUSE_VERSION
#define QEDFUSE_VERSION "unknown"
#endif

namespace qedfuse::fusefs {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

// Status bytes from the daemon to the command: an exit code (0: the mount is live), or this one,
// sent when the image is open and the mount is about to be made (from then on the daemon handles
// a cancel signal itself, in order, and must not be killed).
constexpr unsigned char kStatusMounting = 'm';
// How long a daemon that is still opening the image may take to honour a cancel signal.
constexpr std::chrono::seconds kCancelGrace{2};

struct Paths {
  std::string image;       // absolute
  std::string mountpoint;  // absolute, or /dev/fd/N as given by mount.fuse3
  bool created_mountpoint = false;
  struct stat mountpoint_stat {};
};

// --- Cancellation before the mount exists (async-signal-safe state) ---

volatile sig_atomic_t g_signal_count = 0;  // cancel signals received (RecordSignal)
volatile sig_atomic_t g_last_signal = 0;
char g_created_mountpoint[PATH_MAX];  // removed by CancelNow when g_remove_created is set
volatile sig_atomic_t g_remove_created = 0;
volatile sig_atomic_t g_foreground = 0;

extern "C" void RecordSignal(int sig) {
  g_last_signal = sig;
  g_signal_count = g_signal_count + 1;
}

// Ends the process before anything is mounted: only the mountpoint file we created needs undoing
// (the image's locks go with the process).
extern "C" void CancelNow(int sig) {
  if (g_remove_created) unlink(g_created_mountpoint);
  if (g_foreground) {
    static const char kMsg[] = "qedfuse: cancelled; nothing was mounted\n";
    ssize_t n = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)n;
  }
  _exit(128 + sig);
}

constexpr int kCancelSignals[] = {SIGINT, SIGTERM, SIGHUP};

void SetCancelHandler(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked wait of the parent must see the signal
  for (int sig : kCancelSignals) sigaction(sig, &sa, nullptr);
}

void NoteCreatedMountpoint(const std::string& path) {
  if (path.size() >= sizeof(g_created_mountpoint)) return;
  std::memcpy(g_created_mountpoint, path.c_str(), path.size() + 1);
  g_remove_created = 1;
}

// Re-raises |sig| with its default action (so that a shell sees the command killed by it).
[[noreturn]] void DieOf(int sig) {
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  raise(sig);
  _exit(128 + sig);
}

// --- Messages ---

void Error(const std::string& msg) { Log(LogLevel::kError, msg); }

// libfuse's own messages (mount helper errors, ...) go to the same sink as ours.
void FuseLogToSink(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  std::string msg(buf);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  Log(level <= FUSE_LOG_ERR       ? LogLevel::kError
      : level <= FUSE_LOG_WARNING ? LogLevel::kWarning
      : level <= FUSE_LOG_INFO    ? LogLevel::kInfo
                                  : LogLevel::kDebug,
      msg);
}

std::string Errno(int err) { return std::strerror(err); }

// Refuses |path| (absolute, resolved) if something is mounted on it.
bool CheckNotMounted(const std::string& path) {
  std::optional<MountEntry> top = TopMountAt(ReadMountInfo(), path);
  if (!top) return true;
  if (top->fstype.rfind("fuse", 0) == 0 && MountIsDead(path)) {
    Error(absl::StrCat("mountpoint '", path, "' is a stale mount: the daemon that served it (",
                       top->fstype, " of ", top->source,
                       ") is gone, and using it fails with \"Transport endpoint is not "
                       "connected\"; ",
                       StaleMountFix(path)));
  } else {
    Error(absl::StrCat("mountpoint '", path, "' is already a mount point (", top->fstype, " of ",
                       top->source, "); qedfuse does not mount over a mount: unmount it first (",
                       "umount ", path, " or fusermount3 -u ", path, ")"));
  }
  return false;
}

// A message for a failed access to |path|, with the fix when it is a dead mount.
std::string AccessError(const std::string& what, const std::string& path, int err) {
  std::string msg = absl::StrCat(what, " '", path, "': ", Errno(err));
  if (err == ENOTCONN) {
    absl::StrAppend(&msg, " (a stale mount whose daemon is gone; ", StaleMountFix(path), ")");
  }
  return msg;
}

// Checks and resolves IMAGE and MOUNTPOINT; creates MOUNTPOINT if it does not exist.
bool PreparePaths(const MountOptions& o, Paths* p) {
  struct stat st {};
  if (stat(o.image.c_str(), &st) != 0) {
    Error(AccessError("cannot open image", o.image, errno));
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    Error(absl::StrCat("image '", o.image, "' is a directory"));
    return false;
  }
  char resolved[PATH_MAX];
  if (realpath(o.image.c_str(), resolved) == nullptr) {
    Error(AccessError("cannot resolve image path", o.image, errno));
    return false;
  }
  p->image = resolved;

  if (o.mountpoint.rfind("/dev/fd/", 0) == 0) {  // mount.fuse3 -o drop_privileges
    p->mountpoint = o.mountpoint;
    return true;
  }
  // Look for a mount on the path before touching the file: a dead one fails every access.
  int err = 0;
  std::string where = ResolveParent(o.mountpoint, &err);
  if (where.empty()) {
    Error(AccessError(err == ENOENT ? "cannot create mountpoint" : "cannot use mountpoint",
                      o.mountpoint, err));
    return false;
  }
  if (!CheckNotMounted(where)) return false;
  if (stat(o.mountpoint.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      Error(AccessError("cannot use mountpoint", o.mountpoint, errno));
      return false;
    }
    int fd = open(o.mountpoint.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      Error(AccessError("cannot create mountpoint", o.mountpoint, errno));
      return false;
    }
    close(fd);
    p->created_mountpoint = true;
    p->mountpoint = where;
    NoteCreatedMountpoint(where);
    if (stat(o.mountpoint.c_str(), &st) != 0) {
      Error(AccessError("cannot use mountpoint", o.mountpoint, errno));
      return false;
    }
  }
  if (S_ISDIR(st.st_mode)) {
    Error(absl::StrCat("mountpoint '", o.mountpoint,
                       "' is a directory; qedfuse mounts the image as a single file, so "
                       "give a file path (it is created if it does not exist)"));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    Error(absl::StrCat("mountpoint '", o.mountpoint, "' is not a regular file"));
    return false;
  }
  if (realpath(o.mountpoint.c_str(), resolved) == nullptr) {
    Error(AccessError("cannot resolve mountpoint", o.mountpoint, errno));
    return false;
  }
  // A symbolic link: the mount lands on its target, which must not be a mount point either.
  if (resolved != where && !CheckNotMounted(resolved)) return false;
  p->mountpoint = resolved;
  p->mountpoint_stat = st;
  return true;
}

void RemoveCreatedMountpoint(const Paths& p) {
  if (!p.created_mountpoint) return;
  g_remove_created = 0;
  unlink(p.mountpoint.c_str());
}

// --- -o auto_unmount ---

// Starts the watcher that removes the mount if this process dies without taking it down (kill -9,
// a crash): a child that waits for the end of a pipe only this process holds, then unmounts
// |mountpoint| lazily if a dead qedfuse mount is there (ENOTCONN; a live one, or none, is left
// alone). It is forked before the image is opened or any thread exists, so it holds nothing of
// the daemon's, and unmounts as the mounting user (fusermount3 -u -z), which also works where
// fusermount3's own auto_unmount does not (an unprivileged mount without allow_other).
bool StartUnmountWatcher(const std::string& mountpoint, int status_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    Error("auto_unmount: pipe: " + Errno(errno));
    return false;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    Error("auto_unmount: fork: " + Errno(errno));
    close(fds[0]);
    close(fds[1]);
    return false;
  }
  if (pid > 0) {
    close(fds[0]);  // fds[1] stays open, unused, for the life of the daemon
    return true;
  }
  prctl(PR_SET_NAME, "qedfuse-watch");
  for (int sig : kCancelSignals) signal(sig, SIG_IGN);  // it ends when the daemon does
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
  }
  close(fds[1]);
  if (status_fd >= 0) close(status_fd);  // the command waits for the daemon's end, not ours
  for (;;) {
    char b;
    ssize_t n = read(fds[0], &b, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of file: the daemon is gone
  }
  std::optional<MountEntry> top = TopMountAt(ReadMountInfo(), mountpoint);
  if (top && top->fstype == "fuse.qedfuse" && MountIsDead(mountpoint)) {
    UnmountResult r = UnmountPath(mountpoint, /*lazy=*/true);
    Log(r.error == 0 ? LogLevel::kWarning : LogLevel::kError,
        r.error == 0
            ? absl::StrCat("auto_unmount: the daemon died; removed its mount on ", mountpoint)
            : absl::StrCat("auto_unmount: cannot remove the dead mount on ", mountpoint, ": ",
                           r.message));
  }
  _exit(0);
}

// --- The command's side of the daemon split ---

// After the daemon died without taking its mount down (it was killed), removes what is left.
void RemoveLeftovers(const Paths& paths) {
  if (paths.mountpoint.rfind("/dev/fd/", 0) != 0 && TopMountAt(ReadMountInfo(), paths.mountpoint)) {
    // PreparePaths found nothing mounted here, so this is the dead daemon's mount.
    UnmountResult r = UnmountPath(paths.mountpoint, /*lazy=*/true);
    if (r.error != 0) Error(absl::StrCat("cannot unmount ", paths.mountpoint, ": ", r.message));
  }
  RemoveCreatedMountpoint(paths);
}

// Returns the exit code of the command, once the daemon has reported or died; on a cancel
// signal, cancels the daemon's mount and dies of that signal.
int WaitForDaemon(pid_t child, int status_fd, const Paths& paths) {
  using Clock = std::chrono::steady_clock;
  int seen = 0;           // cancel signals handled
  int cancel_signal = 0;  // 0 until a cancel signal arrives
  bool mounting = false;  // the daemon handles cancellation itself now
  bool killed = false;    // we had to SIGKILL it
  bool pipe_open = true;
  int status = -1;  // the daemon's status byte, once read
  Clock::time_point kill_at = Clock::time_point::max();
  int wstatus = 0;
  for (;;) {
    if (g_signal_count != seen) {
      seen = g_signal_count;
      cancel_signal = g_last_signal;
      if (kill_at == Clock::time_point::max()) {
        kill(child, SIGTERM);
        kill_at = Clock::now() + kCancelGrace;
      } else if (!killed) {
        kill(child, SIGKILL);  // a second signal: no more waiting
        killed = true;
      }
    }
    if (cancel_signal != 0 && !mounting && !killed && Clock::now() >= kill_at) {
      Error("the daemon did not stop within 2 s while opening the image; killing it");
      kill(child, SIGKILL);
      killed = true;
    }
    if (cancel_signal == 0 && status >= 0) {
      close(status_fd);
      return status;  // live (0), or the daemon's failure, already explained by it
    }
    if (pipe_open) {
      struct pollfd pfd = {status_fd, POLLIN, 0};
      if (poll(&pfd, 1, 100) > 0) {
        unsigned char b = 0;
        ssize_t n = read(status_fd, &b, 1);
        if (n == 1 && b == kStatusMounting) {
          mounting = true;
        } else if (n == 1) {
          status = b;
        } else if (n == 0 || (n < 0 && errno != EINTR)) {
          pipe_open = false;
        }
      }
    } else {
      poll(nullptr, 0, 100);
    }
    pid_t r = waitpid(child, &wstatus, WNOHANG);
    if (r == child || (r < 0 && errno == ECHILD)) break;
  }
  close(status_fd);
  if (cancel_signal != 0) {
    RemoveLeftovers(paths);
    Error(absl::StrCat("cancelled (", strsignal(cancel_signal), "); ", paths.image,
                       " is not mounted"));
    DieOf(cancel_signal);
  }
  if (status >= 0) return status;
  if (WIFSIGNALED(wstatus)) {
    RemoveLeftovers(paths);
    Error(absl::StrCat("the daemon was killed by signal ", WTERMSIG(wstatus),
                       " before the mount was ready"));
  } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) > 128) {
    Error(absl::StrCat("the daemon was cancelled by signal ", WEXITSTATUS(wstatus) - 128,
                       " before the mount was ready"));
    return WEXITSTATUS(wstatus);
  } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0) {
    return WEXITSTATUS(wstatus);
  } else {
    Error("the daemon exited before the mount was ready");
  }
  return kExitFailure;
}

// Daemon side: tells the command how the mount went (0 = live), once.
class StatusPipe {
 public:
  explicit StatusPipe(int fd) : fd_(fd) {}
  ~StatusPipe() { Send(kExitFailure); }
  // The image is open and the mount is about to be made.
  void SendMounting() {
    if (fd_ >= 0) Write(kStatusMounting);
  }
  // False if the command could not be told (it is gone).
  bool Send(int code) {
    if (fd_ < 0) return true;
    bool ok = Write(static_cast<unsigned char>(code));
    close(fd_);
    fd_ = -1;
    return ok;
  }

 private:
  bool Write(unsigned char b) {
    ssize_t n;
    do {
      n = write(fd_, &b, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1;
  }
  int fd_;
};

// Where messages go once the command has returned (see the file comment).
struct LogPlan {
  enum class Detached {
    kSink,        // syslog or the log file
    kKeepStderr,  // the inherited stderr, a terminal or a file
    kLost,        // nowhere: the inherited stderr is a pipe or socket (see SetUpLogging)
  };
  Detached detached = Detached::kSink;
};

// Stops using the terminal: stdin and stdout go to /dev/null, and stderr too unless it is where
// the messages go.
void Detach(const LogPlan& plan) {
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    if (plan.detached != LogPlan::Detached::kKeepStderr) dup2(null_fd, STDERR_FILENO);
    if (null_fd > STDERR_FILENO) close(null_fd);
  }
  SetLogEcho(false);
}

std::string MountedMessage(const Paths& paths, const block::OpenReport& report, bool read_only) {
  return absl::StrCat("mounted ", paths.image, " on ", paths.mountpoint, " (", report.format, ", ",
                      read_only ? "read-only" : "read-write", ", aio ", report.aio, ")");
}

int Serve(const MountOptions& o, const Paths& paths, int status_fd, const LogPlan& plan) {
  StatusPipe status(status_fd);
  const bool daemon = status_fd >= 0;
  coro::EventLoop loop;

  block::OpenOptions oo;
  oo.path = paths.image;
  oo.format = o.format;
  oo.read_only = o.read_only;
  oo.aio = o.aio;
  oo.cache = o.cache;
  oo.lock = true;
  if (o.need_check_delay) oo.need_check_delay = *o.need_check_delay;
  oo.backing = o.backing;
  absl::Status hooks = absl::OkStatus();
  if (!o.debug_log_writes.empty()) hooks = InstallWriteLog(o.debug_log_writes, &oo);
  if (hooks.ok() && !o.debug_faults.empty()) hooks = InstallFaults(o.debug_faults, &oo);
  if (!hooks.ok()) {
    Error(std::string(hooks.message()));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  block::OpenReport report;
  auto opened = loop.RunSync(block::OpenImage(oo, &report));
  if (!opened.ok()) {
    Error(absl::StrCat("cannot open image '", o.image, "': ", opened.status().message()));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  std::unique_ptr<block::BlockBackend> backend = std::move(*opened);
  if (report.was_dirty || report.repaired) {
    Log(LogLevel::kWarning,
        report.repaired
            ? absl::StrCat("image '", o.image, "' was not closed cleanly; repaired: ",
                           report.repair_summary.empty() ? "ok" : report.repair_summary)
            : absl::StrCat("image '", o.image,
                           "' was not closed cleanly (opened read-only, not repaired)"));
  }
  Log(LogLevel::kDebug,
      absl::StrCat("opened ", paths.image, " format ", report.format, " aio ", report.aio));
  if (report.chain.size() > 1 || (!report.chain.empty() && report.chain[0].backing_ignored)) {
    // What the disk's unallocated ranges read from is worth a line at every mount.
    Log(LogLevel::kInfo, absl::StrCat("backing chain: ", block::DescribeChain(report.chain)));
  }

  FrontendConfig fc;
  fc.mountpoint = paths.mountpoint;
  fc.fsname = paths.image;
  fc.read_only = o.read_only || backend->read_only();
  // With a pre-opened /dev/fd/N mountpoint there is no path through which the frontend could
  // publish the size to a write-back-caching kernel (see FuseFrontend::BecomeReady).
  fc.writeback_cache = o.EffectiveWritebackCache() && paths.mountpoint.rfind("/dev/fd/", 0) != 0;
  fc.io_uring = o.io_uring;
  fc.allow_other = o.allow_other;
  fc.allow_root = o.allow_root;
  fc.extra_mount_options = o.fuse_options;
  // The disk belongs to the mounting user, never to the owner of a file mounted over.
  fc.mounter_uid = getuid();
  fc.mounter_gid = getgid();
  fc.uid = o.uid.value_or(fc.mounter_uid);
  fc.gid = o.gid.value_or(fc.mounter_gid);
  fc.mode = o.FileMode(fc.read_only);
  const struct stat& ms = paths.mountpoint_stat;
  fc.atime = ms.st_atim;
  fc.mtime = ms.st_mtim;
  fc.ctime = ms.st_ctim;
  if (ms.st_mode == 0) {
    clock_gettime(CLOCK_REALTIME, &fc.mtime);
    fc.atime = fc.ctime = fc.mtime;
  }
  const bool read_only = fc.read_only;

  // From here the frontend handles cancel signals (they are queued for its loop), so the command
  // must leave the daemon the time to take the mount down in order.
  status.SendMounting();
  FuseFrontend frontend(loop, *backend, fc);
  if (absl::Status s = frontend.Mount(); !s.ok()) {
    Error(std::string(s.message()));
    absl::Status cs = loop.RunSync(backend->Close());
    if (!cs.ok()) Error("closing the image failed: " + cs.ToString());
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  frontend.SetOnReady([&] {
    Log(LogLevel::kInfo, MountedMessage(paths, report, read_only));
    if (!daemon) return;
    if (plan.detached == LogPlan::Detached::kKeepStderr) {
      Log(LogLevel::kWarning,
          "no syslog daemon listens on /dev/log and no --log-file was given: the daemon keeps "
          "writing its messages to this standard error (give --log-file=PATH to keep them)");
    } else if (plan.detached == LogPlan::Detached::kLost) {
      Log(LogLevel::kWarning,
          "no syslog daemon listens on /dev/log and no --log-file was given, and this standard "
          "error is a pipe the daemon must not keep open: its later messages are lost (give "
          "--log-file=PATH to keep them)");
    }
    // The mount is the command's result now: it no longer ends with the command.
    prctl(PR_SET_PDEATHSIG, 0);
    Detach(plan);
    if (!status.Send(0)) frontend.RequestStop("the command that mounted it is gone");
  });
  frontend.Start();
  // Only the io_uring transport registers a poller; over /dev/fuse the loop never polls.
  loop.SetPollLimit(o.poll_limit);
  loop.Run();
  if (!frontend.ready()) {
    if (!frontend.failure().empty()) {
      Error(absl::StrCat("cannot mount ", paths.mountpoint, ": ", frontend.failure()));
    } else if (!frontend.cancelled()) {
      Error("the kernel did not complete the FUSE handshake on " + paths.mountpoint);
    } else if (!daemon) {
      Error("cancelled; nothing was mounted");
    }
    RemoveCreatedMountpoint(paths);
    return frontend.cancel_signal() != 0 ? 128 + frontend.cancel_signal() : kExitFailure;
  }
  return frontend.exit_code();
}

// --- main ---

// Chooses the log destination (see the file comment); false if --log-file cannot be used.
bool SetUpLogging(const MountOptions& o, LogPlan* plan) {
  if (!o.log_file.empty()) {
    if (absl::Status s = LogToFile(o.log_file); !s.ok()) {
      Error(std::string(s.message()));
      return false;
    }
    SetLogEcho(true);  // the user still watches the command (and a foreground daemon)
  } else if (o.foreground) {
    LogToStderr();
  } else if (SyslogAvailable()) {
    LogToSyslog();
    SetLogEcho(true);
  } else {
    // A terminal or a file can take the daemon's messages for as long as it runs. Whoever reads
    // a pipe or socket may be waiting for it to close (`out=$(qedfuse ...)`, a test harness),
    // and would then wait for the daemon's end.
    struct stat st {};
    const bool keep =
        fstat(STDERR_FILENO, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode));
    plan->detached = keep ? LogPlan::Detached::kKeepStderr : LogPlan::Detached::kLost;
  }
  return true;
}

int Main(int argc, char** argv) {
  auto parsed = ParseCommandLine(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "qedfuse: %s\n", std::string(parsed.status().message()).c_str());
    std::fprintf(stderr,
                 "Usage: qedfuse [OPTIONS] IMAGE MOUNTPOINT [-o OPT[,OPT...]]\n"
                 "Try 'qedfuse --help' for more information.\n");
    return kExitUsage;
  }
  const MountOptions& o = *parsed;
  if (o.show_help) {
    std::fputs(UsageText("qedfuse").c_str(), stdout);
    return 0;
  }
  if (o.show_version) {
    std::printf("qedfuse %s (libfuse %s)\n", QEDFUSE_VERSION, fuse_pkgversion());
    return 0;
  }
  SetLogProgram("qedfuse");
  SetLogDebug(o.debug);
  fuse_set_log_func(FuseLogToSink);
  signal(SIGPIPE, SIG_IGN);
  if (o.remount) return Remount(o);

  LogPlan plan;
  if (!SetUpLogging(o, &plan)) return kExitFailure;
  g_foreground = o.foreground ? 1 : 0;
  // Until the mount exists a cancel signal ends the process (in the background: the command
  // records it and passes it on).
  SetCancelHandler(o.foreground ? CancelNow : RecordSignal);

  Paths paths;
  if (!PreparePaths(o, &paths)) {
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  const bool watch = o.auto_unmount && paths.mountpoint.rfind("/dev/fd/", 0) != 0;
  if (o.foreground) {
    if (watch && !StartUnmountWatcher(paths.mountpoint, -1)) {
      RemoveCreatedMountpoint(paths);
      return kExitFailure;
    }
    return Serve(o, paths, -1, plan);
  }

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    Error("pipe: " + Errno(errno));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    Error("fork: " + Errno(errno));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  if (pid > 0) {
    close(fds[1]);
    return WaitForDaemon(pid, fds[0], paths);
  }
  close(fds[0]);
  // The daemon dies with the command until the mount is live (see the file comment).
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  SetCancelHandler(CancelNow);
  if (getppid() != parent || g_signal_count != 0) CancelNow(SIGTERM);
  setsid();
  if (chdir("/") != 0) {
    // Harmless: every path is absolute already.
  }
  if (watch && !StartUnmountWatcher(paths.mountpoint, fds[1])) {
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  return Serve(o, paths, fds[1], plan);
}

}  // namespace
}  // namespace qedfuse::fusefs

int main(int argc, char** argv) { return qedfuse::fusefs::Main(argc, argv); }
