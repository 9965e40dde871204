// qed::QedDriver factory. The driver itself (class QedDriver) is private to src/block/qed.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/open.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::qed {

// True if |first_bytes| (at least 4) start with the QED magic.
bool ProbeQed(std::span<const std::byte> first_bytes);

// Opens a QED image on top of the already-open protocol node |file|. Opens the backing chain
// through block::OpenDriver(). With a read-write open of a dirty image (and not for_check) it runs
// check-and-repair first and records the outcome in |report|.
coro::Task<absl::StatusOr<std::unique_ptr<block::BlockDriver>>> OpenQed(
    std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
    block::ChainContext& chain, block::OpenReport* report);

}  // namespace qedfuse::qed
