// --debug-log-writes=FILE: records the writes and flushes of the top image's file and of the
// guest (block::WriteLogDriver, one shared log) for crash-consistency tests. The log starts
// from the image as it is when it is opened: whoever replays it keeps a copy of the image file
// taken before the mount (tests/integration/crash_replay.py).
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fusefs/debug_hooks.h"
#include "qedfuse/base/log.h"
#include "qedfuse/block/debug/write_log_driver.h"

namespace qedfuse::fusefs {

absl::Status InstallWriteLog(const std::string& path, block::OpenOptions* oo) {
  // The daemon changes to / before it opens the image: a relative name would land there.
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--debug-log-writes needs an absolute file name, not '", path, "'"));
  }
  absl::StatusOr<std::shared_ptr<block::WriteLog>> log = block::WriteLog::Create(path);
  if (!log.ok()) return log.status();
  std::shared_ptr<block::WriteLog> shared = *std::move(log);
  using Role = block::WriteLogDriver::Role;
  block::OpenOptions::WrapFn below_file = oo->wrap_image_file;
  oo->wrap_image_file = [shared, below_file](std::unique_ptr<block::BlockDriver> node) {
    if (below_file) node = below_file(std::move(node));
    return std::unique_ptr<block::BlockDriver>(
        std::make_unique<block::WriteLogDriver>(std::move(node), shared, Role::kImage));
  };
  block::OpenOptions::WrapFn below_top = oo->wrap_top;
  oo->wrap_top = [shared, below_top](std::unique_ptr<block::BlockDriver> node) {
    if (below_top) node = below_top(std::move(node));
    return std::unique_ptr<block::BlockDriver>(
        std::make_unique<block::WriteLogDriver>(std::move(node), shared, Role::kGuest));
  };
  Log(LogLevel::kDebug, absl::StrCat("debug-log-writes: recording to ", path));
  return absl::OkStatus();
}

}  // namespace qedfuse::fusefs
