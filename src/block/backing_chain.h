// What a format driver needs to open the files below it, without knowing how the graph is
// assembled: the chain being opened (loop and depth detection), the backing-name resolution
// under the caller's BackingPolicy, and the opener for the next node, passed in as a callback by
// the graph assembly (src/block/graph/). Drivers include this header, never the graph's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

struct ChainContext;

// Opens one node (|options.path|, format probed unless given) with its whole backing chain.
using NodeOpener = std::function<coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>>(
    const OpenOptions& options, ChainContext& chain, OpenReport* report)>;

// State shared while a chain is opened: detects loops by (st_dev, st_ino).
struct ChainContext {
  std::vector<std::pair<uint64_t, uint64_t>> seen;  // (dev, ino) of files opened so far
  std::vector<std::string> names;
  int depth = 0;
  // Set by ResolveBacking for the next open: the identity the file must have (what the
  // kernel resolved under kConfined); a different file at that path is refused.
  std::optional<std::pair<uint64_t, uint64_t>> expect_id;
  // How a format driver opens its backing file. The graph assembly sets it; a driver opened by
  // hand (tests) without it cannot open a backing file and says so.
  NodeOpener open_backing;
};

// Resolves the backing name |stored| of the image |image_path| under |policy| (not kNone) to
// the path to open; under kConfined also records the resolved file's identity in |chain|.
// Errors name the image, the stored name and the reason.
absl::StatusOr<std::string> ResolveBacking(const std::string& image_path, const std::string& stored,
                                           BackingPolicy policy, ChainContext& chain);

// Opens a backing node through |chain.open_backing|; an error when none was given.
coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenBacking(const OpenOptions& options,
                                                                     ChainContext& chain,
                                                                     OpenReport* report);

}  // namespace qedfuse::block
