// The log sink (see qedfuse/base/log.h): one destination at a time, switched under a mutex.
#include "qedfuse/base/log.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/enum_names.h"
#include "qedfuse/base/readable.h"

namespace qedfuse {
namespace {

enum class Sink { kStderr, kSyslog, kFile };

struct LogState {
  std::mutex mu;
  Sink sink = Sink::kStderr;
  int file_fd = -1;
  std::string program = "qedfuse";
  bool debug = false;
  bool echo = false;  // errors and warnings also to stderr (SetLogEcho)
};

LogState& State() {
  static LogState* state = new LogState;  // never destroyed: static destructors may still log
  return *state;
}

int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return LOG_ERR;
    case LogLevel::kWarning:
      return LOG_WARNING;
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kDebug:
      return LOG_DEBUG;
  }
  return LOG_INFO;
}

constexpr EnumName<LogLevel> kLevelNames[] = {{LogLevel::kError, "error"},
                                              {LogLevel::kWarning, "warning"},
                                              {LogLevel::kInfo, "info"},
                                              {LogLevel::kDebug, "debug"}};

void WriteAll(int fd, const std::string& line) {
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere else to report it
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

// Caller holds s.mu.
void CloseFile(LogState& s) {
  if (s.file_fd >= 0) ::close(s.file_fd);
  s.file_fd = -1;
}

}  // namespace

void SetLogProgram(std::string_view name) {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  s.program = std::string(name);
}

void LogToStderr() {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  if (s.sink == Sink::kSyslog) closelog();
  CloseFile(s);
  s.sink = Sink::kStderr;
}

void LogToSyslog() {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  CloseFile(s);
  // openlog keeps the pointer: the string lives as long as the (never destroyed) state.
  openlog(s.program.c_str(), LOG_PID, LOG_DAEMON);
  s.sink = Sink::kSyslog;
}

absl::Status LogToFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open log file '", path, "': ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode) ||
                                 S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("log file '", path, "' is not a file"));
  }
  LogState& s = State();
  std::lock_guard lock(s.mu);
  if (s.sink == Sink::kSyslog) closelog();
  CloseFile(s);
  s.file_fd = fd;
  s.sink = Sink::kFile;
  return absl::OkStatus();
}

bool SyslogAvailable() {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, "/dev/log", sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  if (!ok) {
    // syslog(3) falls back to a stream socket when the datagram connect is refused.
    ::close(fd);
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ::close(fd);
  return ok;
}

void SetLogEcho(bool on) {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  s.echo = on;
}

void SetLogDebug(bool on) {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  s.debug = on;
}

bool LogDebugEnabled() {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  return s.debug;
}

void Log(LogLevel level, std::string_view text) {
  LogState& s = State();
  std::lock_guard lock(s.mu);
  if (level == LogLevel::kDebug && !s.debug) return;
  // Messages carry names from images and command lines, a stranger's bytes: no control
  // character reaches a terminal, syslog or the log file unescaped.
  const std::string readable = ReadableMessage(text);
  const absl::string_view message(readable);  // absl's own type in bookworm
  if (s.echo && s.sink != Sink::kStderr && level <= LogLevel::kWarning) {
    WriteAll(STDERR_FILENO, absl::StrCat(s.program, ": ", message, "\n"));
  }
  switch (s.sink) {
    case Sink::kSyslog:
      syslog(SyslogPriority(level), "%.*s", static_cast<int>(message.size()), message.data());
      return;
    case Sink::kFile: {
      struct timespec now {};
      clock_gettime(CLOCK_REALTIME, &now);
      struct tm tm {};
      gmtime_r(&now.tv_sec, &tm);
      char stamp[32];
      std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
      WriteAll(s.file_fd,
               absl::StrCat(stamp, ".", absl::Dec(now.tv_nsec / 1000000, absl::kZeroPad3), "Z ",
                            s.program, "[", getpid(), "] ", NameOf(kLevelNames, level, "info"),
                            ": ", message, "\n"));
      return;
    }
    case Sink::kStderr:
      WriteAll(STDERR_FILENO, absl::StrCat(s.program, ": ", message, "\n"));
      return;
  }
}

}  // namespace qedfuse
