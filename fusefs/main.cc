// qedfuse: mounts a QED image as one raw file.
//
//   qedfuse [OPTIONS] IMAGE MOUNTPOINT [-o OPTS]
//
// Process structure: command-line and path errors are reported by the invoking process. Unless
// -f/-d is given, it then forks before anything else is created (io_uring rings, worker threads
// and the FUSE session do not survive a fork): the child opens the image, mounts, and once the
// kernel's INIT has been answered writes a status byte into a pipe, detaches from the terminal
// and logs to syslog from then on. The parent waits for that byte, so the command returns only
// when the mount is live (`qedfuse img.qed disk.raw && losetup -f --show disk.raw` needs no
// sleep), or exits non-zero after the child has printed why it failed.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
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

struct Paths {
  std::string image;       // absolute
  std::string mountpoint;  // absolute, or /dev/fd/N as given by mount.fuse3
  bool created_mountpoint = false;
  struct stat mountpoint_stat {};
};

void PrintError(const std::string& msg) { std::fprintf(stderr, "qedfuse: %s\n", msg.c_str()); }

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

// Checks and resolves IMAGE and MOUNTPOINT; creates MOUNTPOINT if it does not exist.
bool PreparePaths(const MountOptions& o, Paths* p) {
  struct stat st {};
  if (stat(o.image.c_str(), &st) != 0) {
    PrintError(absl::StrCat("cannot open image '", o.image, "': ", Errno(errno)));
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    PrintError(absl::StrCat("image '", o.image, "' is a directory"));
    return false;
  }
  char resolved[PATH_MAX];
  if (realpath(o.image.c_str(), resolved) == nullptr) {
    PrintError(absl::StrCat("cannot resolve image path '", o.image, "': ", Errno(errno)));
    return false;
  }
  p->image = resolved;

  if (o.mountpoint.rfind("/dev/fd/", 0) == 0) {  // mount.fuse3 -o drop_privileges
    p->mountpoint = o.mountpoint;
    return true;
  }
  if (stat(o.mountpoint.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      PrintError(absl::StrCat("cannot use mountpoint '", o.mountpoint, "': ", Errno(errno)));
      return false;
    }
    int fd = open(o.mountpoint.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      PrintError(absl::StrCat("cannot create mountpoint '", o.mountpoint, "': ", Errno(errno)));
      return false;
    }
    close(fd);
    p->created_mountpoint = true;
    if (stat(o.mountpoint.c_str(), &st) != 0) {
      PrintError(absl::StrCat("cannot use mountpoint '", o.mountpoint, "': ", Errno(errno)));
      return false;
    }
  }
  if (S_ISDIR(st.st_mode)) {
    PrintError(absl::StrCat("mountpoint '", o.mountpoint,
                            "' is a directory; qedfuse mounts the image as a single file, so "
                            "give a file path (it is created if it does not exist)"));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    PrintError(absl::StrCat("mountpoint '", o.mountpoint, "' is not a regular file"));
    return false;
  }
  if (realpath(o.mountpoint.c_str(), resolved) == nullptr) {
    PrintError(absl::StrCat("cannot resolve mountpoint '", o.mountpoint, "': ", Errno(errno)));
    return false;
  }
  p->mountpoint = resolved;
  p->mountpoint_stat = st;
  return true;
}

void RemoveCreatedMountpoint(const Paths& p) {
  if (p.created_mountpoint) unlink(p.mountpoint.c_str());
}

// Parent side of the daemon split: returns the exit code for the invoking process.
int WaitForDaemon(pid_t child, int status_fd) {
  unsigned char status = 0;
  ssize_t n;
  do {
    n = read(status_fd, &status, 1);
  } while (n < 0 && errno == EINTR);
  close(status_fd);
  if (n == 1) return status;
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  if (WIFSIGNALED(wstatus)) {
    PrintError(absl::StrCat("the daemon was killed by signal ", WTERMSIG(wstatus),
                            " before the mount was ready"));
  } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0) {
    return WEXITSTATUS(wstatus);
  } else {
    PrintError("the daemon exited before the mount was ready");
  }
  return kExitFailure;
}

// Child side: tells the parent how the mount went (0 = live), once.
class StatusPipe {
 public:
  explicit StatusPipe(int fd) : fd_(fd) {}
  ~StatusPipe() { Send(kExitFailure); }
  void Send(int code) {
    if (fd_ < 0) return;
    unsigned char b = static_cast<unsigned char>(code);
    ssize_t n;
    do {
      n = write(fd_, &b, 1);
    } while (n < 0 && errno == EINTR);
    close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Stops using the terminal: stdio goes to /dev/null, messages to syslog.
void Detach() {
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    if (null_fd > STDERR_FILENO) close(null_fd);
  }
  LogToSyslog();
}

int Serve(const MountOptions& o, const Paths& paths, int status_fd) {
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
    Log(LogLevel::kError, std::string(hooks.message()));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  block::OpenReport report;
  auto opened = loop.RunSync(block::OpenImage(oo, &report));
  if (!opened.ok()) {
    Log(LogLevel::kError,
        absl::StrCat("cannot open image '", o.image, "': ", opened.status().message()));
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  std::unique_ptr<block::BlockBackend> backend = std::move(*opened);
  if (report.was_dirty || report.repaired) {
    std::string msg =
        report.repaired ? absl::StrCat("image '", o.image, "' was not closed cleanly; repaired: ",
                                       report.repair_summary.empty() ? "ok" : report.repair_summary)
                        : absl::StrCat("image '", o.image,
                                       "' was not closed cleanly (opened read-only, not "
                                       "repaired)");
    Log(LogLevel::kWarning, msg);
    if (daemon) syslog(LOG_WARNING | LOG_DAEMON, "%s", msg.c_str());
  }
  Log(LogLevel::kDebug,
      absl::StrCat("opened ", paths.image, " format ", report.format, " aio ", report.aio));
  if (report.chain.size() > 1 || (!report.chain.empty() && report.chain[0].backing_ignored)) {
    // What the disk's unallocated ranges read from is worth a line at every mount.
    const std::string msg = absl::StrCat("backing chain: ", block::DescribeChain(report.chain));
    Log(LogLevel::kInfo, msg);
    if (daemon) syslog(LOG_INFO | LOG_DAEMON, "%s", msg.c_str());
  }

  FrontendConfig fc;
  fc.mountpoint = paths.mountpoint;
  fc.fsname = paths.image;
  fc.read_only = o.read_only || backend->read_only();
  // With a pre-opened /dev/fd/N mountpoint there is no path through which the frontend could
  // publish the size to a write-back-caching kernel (see FuseFrontend::BecomeReady).
  fc.writeback_cache = o.EffectiveWritebackCache() && paths.mountpoint.rfind("/dev/fd/", 0) != 0;
  fc.debug = o.debug;
  fc.allow_other = o.allow_other;
  fc.extra_mount_options = o.fuse_options;
  const struct stat& ms = paths.mountpoint_stat;
  fc.uid = ms.st_mode != 0 ? ms.st_uid : getuid();
  fc.gid = ms.st_mode != 0 ? ms.st_gid : getgid();
  fc.atime = ms.st_atim;
  fc.mtime = ms.st_mtim;
  fc.ctime = ms.st_ctim;
  if (ms.st_mode == 0) {
    clock_gettime(CLOCK_REALTIME, &fc.mtime);
    fc.atime = fc.ctime = fc.mtime;
  }

  FuseFrontend frontend(loop, *backend, fc);
  if (absl::Status s = frontend.Mount(); !s.ok()) {
    Log(LogLevel::kError, std::string(s.message()));
    absl::Status cs = loop.RunSync(backend->Close());
    if (!cs.ok()) Log(LogLevel::kError, "closing the image failed: " + cs.ToString());
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  frontend.SetOnReady([&status, daemon, &paths] {
    if (!daemon) return;
    Detach();
    syslog(LOG_INFO, "mounted %s on %s", paths.image.c_str(), paths.mountpoint.c_str());
    status.Send(0);
  });
  frontend.Start();
  loop.Run();
  if (!frontend.ready()) {
    Log(LogLevel::kError, "the kernel did not complete the FUSE handshake on " + paths.mountpoint);
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }
  return frontend.exit_code();
}

int Main(int argc, char** argv) {
  auto parsed = ParseCommandLine(argc, argv);
  if (!parsed.ok()) {
    PrintError(std::string(parsed.status().message()));
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

  Paths paths;
  if (!PreparePaths(o, &paths)) {
    RemoveCreatedMountpoint(paths);
    return kExitFailure;
  }

  int status_fd = -1;
  if (!o.foreground) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      PrintError("pipe: " + Errno(errno));
      RemoveCreatedMountpoint(paths);
      return kExitFailure;
    }
    pid_t pid = fork();
    if (pid < 0) {
      PrintError("fork: " + Errno(errno));
      RemoveCreatedMountpoint(paths);
      return kExitFailure;
    }
    if (pid > 0) {
      close(fds[1]);
      return WaitForDaemon(pid, fds[0]);
    }
    close(fds[0]);
    status_fd = fds[1];
    setsid();
    signal(SIGHUP, SIG_IGN);
    if (chdir("/") != 0) {
      // Harmless: every path is absolute already.
    }
  }
  return Serve(o, paths, status_fd);
}

}  // namespace
}  // namespace qedfuse::fusefs

int main(int argc, char** argv) { return qedfuse::fusefs::Main(argc, argv); }
