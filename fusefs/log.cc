// Logging sink for the frontend (see log.h).
#include "fusefs/log.h"

#define FUSE_USE_VERSION 314
#include <fuse_log.h>
#include <syslog.h>

#include <cstdarg>
#include <cstdio>

namespace qedfuse::fusefs {
namespace {

bool use_syslog = false;
bool debug_on = false;

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

// libfuse's messages follow ours to syslog after daemonising.
void FuseLogToSyslog(enum fuse_log_level level, const char* fmt, va_list ap) {
  vsyslog(static_cast<int>(level), fmt, ap);
}

}  // namespace

void LogToSyslog() {
  if (use_syslog) return;
  openlog("qedfuse", LOG_PID, LOG_DAEMON);
  use_syslog = true;
  fuse_set_log_func(FuseLogToSyslog);
}

void SetLogDebug(bool on) { debug_on = on; }
bool LogDebugEnabled() { return debug_on; }

void Log(LogLevel level, const std::string& message) {
  if (level == LogLevel::kDebug && !debug_on) return;
  if (use_syslog) {
    syslog(SyslogPriority(level), "%s", message.c_str());
    return;
  }
  std::fprintf(stderr, "qedfuse: %s\n", message.c_str());
}

}  // namespace qedfuse::fusefs
