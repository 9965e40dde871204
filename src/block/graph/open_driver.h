// OpenDriver: one node with its whole backing chain, the step OpenImage repeats down a chain
// (through ChainContext::open_backing). Private to the block layer and its tests.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "block/backing_chain.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

// Opens one node with its whole backing chain. |options.path| names the file; the format is
// probed unless given. Sets |chain.open_backing| to itself when it is unset.
coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenDriver(const OpenOptions& options,
                                                                    ChainContext& chain,
                                                                    OpenReport* report);

}  // namespace qedfuse::block
