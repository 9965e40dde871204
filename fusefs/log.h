// fusefs logging: messages go to stderr while the daemon is attached to a terminal (or runs in
// the foreground), and to syslog (facility daemon, tag "qedfuse") once it has daemonised.
// Single-threaded use from the event loop; Log() may also be called before the loop exists.
#pragma once

#include <string>

namespace qedfuse::fusefs {

enum class LogLevel { kError, kWarning, kInfo, kDebug };

// Sends later messages to syslog instead of stderr (also libfuse's own messages).
void LogToSyslog();
// Enables kDebug messages.
void SetLogDebug(bool on);
bool LogDebugEnabled();

void Log(LogLevel level, const std::string& message);

}  // namespace qedfuse::fusefs
