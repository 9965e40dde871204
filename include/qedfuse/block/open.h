// block::OpenImage: probes the format, builds the driver graph (format over file protocol,
// backing chain underneath), repairs a dirty QED image on a read-write open, and returns a
// BlockBackend. This is the only way fusefs/ and tools open images. The assembly itself lives in
// src/block/graph/ (above the drivers); the options it takes are in options.h (below them).
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

}  // namespace qedfuse::block
