// --debug-fault: not implemented yet.
#include "fusefs/debug_hooks.h"

namespace qedfuse::fusefs {

absl::Status InstallFaults(const std::vector<std::string>& /*rules*/, block::OpenOptions* /*oo*/) {
  return absl::UnimplementedError("--debug-fault is not available yet");
}

}  // namespace qedfuse::fusefs
