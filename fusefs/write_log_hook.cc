// --debug-log-writes: not implemented yet.
#include "fusefs/debug_hooks.h"

namespace qedfuse::fusefs {

absl::Status InstallWriteLog(const std::string& /*path*/, block::OpenOptions* /*oo*/) {
  return absl::UnimplementedError("--debug-log-writes is not available yet");
}

}  // namespace qedfuse::fusefs
