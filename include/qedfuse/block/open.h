// block::OpenImage: probes the format, builds the driver graph (format over file protocol,
// backing chain underneath), repairs a dirty QED image on a read-write open, and returns a
// BlockBackend. This is the only way fusefs/ and tools open images.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

coro::Task<absl::StatusOr<std::unique_ptr<BlockBackend>>> OpenImage(const OpenOptions& options,
                                                                    OpenReport* report = nullptr);

// State shared while a chain is opened: detects loops by (st_dev, st_ino).
struct ChainContext {
  std::vector<std::pair<uint64_t, uint64_t>> seen;  // (dev, ino) of files opened so far
  std::vector<std::string> names;
  int depth = 0;
  // Set by ResolveBacking for the next OpenDriver: the identity the file must have (what the
  // kernel resolved under kConfined); a different file at that path is refused.
  std::optional<std::pair<uint64_t, uint64_t>> expect_id;
};

// Resolves the backing name |stored| of the image |image_path| under |policy| (not kNone) to
// the path to open; under kConfined also records the resolved file's identity in |chain|.
// Errors name the image, the stored name and the reason.
absl::StatusOr<std::string> ResolveBacking(const std::string& image_path, const std::string& stored,
                                           BackingPolicy policy, ChainContext& chain);

// Opens one node with its whole backing chain. |options.path| names the file; the format is
// probed unless given. Used by OpenImage and by format drivers for their backing files.
coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenDriver(const OpenOptions& options,
                                                                    ChainContext& chain,
                                                                    OpenReport* report);

}  // namespace qedfuse::block
