// qedfuse::Log: the one log sink of every program in the project (the qedfuse daemon, qedimg, and
// the block layer underneath both).
//
// A message goes to one destination, chosen by the program:
//   - stderr (the default), as "PROGRAM: message";
//   - syslog (facility daemon, tagged with the program name and pid), for a detached daemon;
//   - a file opened in append mode, one timestamped line per message ("--log-file=PATH").
// Corruption reports, I/O errors and shutdown notes of the block layer use the same sink, so a
// detached daemon never writes to a stderr that nobody reads. Errors and warnings may be echoed to
// stderr as well (SetLogEcho) while someone is watching. Debug messages are dropped unless
// SetLogDebug(true). Thread-safe: the sink is guarded by a mutex (workers of BlockingPool may
// log too); a message is written with one write(2) so lines never interleave.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace qedfuse {

enum class LogLevel { kError, kWarning, kInfo, kDebug };

// The name messages carry ("qedfuse", "qedimg"). Set once, early in main().
void SetLogProgram(std::string_view name);
// Destinations. Each replaces the previous one.
void LogToStderr();
void LogToSyslog();
// Appends to |path| (created 0600 if missing). On failure the destination is unchanged.
absl::Status LogToFile(const std::string& path);
// True if a syslog daemon listens on /dev/log (otherwise syslog(3) messages are lost).
bool SyslogAvailable();
// While on, errors and warnings sent to syslog or a file are also written to stderr, e.g. while
// the user still watches the command that starts a daemon. Off by default.
void SetLogEcho(bool on);

void SetLogDebug(bool on);
bool LogDebugEnabled();

void Log(LogLevel level, std::string_view message);

}  // namespace qedfuse
