// Testing aids of the qedfuse daemon: filter drivers put into the image's driver graph by the
// --debug-log-writes and --debug-fault options (MountOptions). Each installer sets hooks in
// |oo| (OpenOptions::wrap_image_file / wrap_top) before the image is opened, and returns an
// InvalidArgument status naming the problem if its option is malformed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qedfuse/block/open.h"

namespace qedfuse::fusefs {

// --debug-log-writes=FILE (fusefs/write_log_hook.cc).
absl::Status InstallWriteLog(const std::string& path, block::OpenOptions* oo);

// --debug-fault=RULE, repeatable (fusefs/fault_hook.cc).
absl::Status InstallFaults(const std::vector<std::string>& rules, block::OpenOptions* oo);

}  // namespace qedfuse::fusefs
