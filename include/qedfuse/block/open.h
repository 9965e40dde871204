// block::OpenImage: probes the format, builds the driver graph (format over file protocol,
// backing chain underneath), repairs a dirty QED image on a read-write open, and returns a
// BlockBackend. This is the only way fusefs/ and tools open images.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

enum class AioMode { kAuto, kIoUring, kThreads };
enum class CacheMode { kWriteback, kNone };  // kNone = O_DIRECT on the image file

struct OpenOptions {
  std::string path;
  std::string format;  // "" probes; otherwise "qed" or "raw"
  bool read_only = false;
  AioMode aio = AioMode::kAuto;
  CacheMode cache = CacheMode::kWriteback;
  // Take QEMU-compatible OFD byte-range locks on every file of the chain.
  bool lock = true;
  // QED: delay between the last allocating write and clearing NEED_CHECK.
  std::chrono::milliseconds need_check_delay{5000};
  // QED: open for checking (like `qemu-img check`): no repair at open, NEED_CHECK untouched.
  bool for_check = false;
  // Longest backing chain accepted (a loop is refused separately, by file identity).
  int max_chain_depth = 64;

  // Debugging and test hooks (qedfuse --debug-* options): wrap a node of the top image in a
  // filter driver. |wrap_image_file| receives the top image's protocol node (the file, below the
  // format driver; backing files are not wrapped); |wrap_top| receives the top format driver
  // before it goes into the BlockBackend. Unset: nothing is wrapped.
  using WrapFn = std::function<std::unique_ptr<BlockDriver>(std::unique_ptr<BlockDriver>)>;
  WrapFn wrap_image_file;
  WrapFn wrap_top;
};

// What happened while opening, for the caller to report.
struct OpenReport {
  std::string format;              // of the top image
  std::vector<std::string> chain;  // resolved file names, top first
  bool was_dirty = false;          // NEED_CHECK was set on disk
  bool repaired = false;           // a repair ran at open
  std::string repair_summary;      // human-readable, e.g. "fixed 1 corruption"
  std::string aio;                 // "io_uring" or "threads"
};

coro::Task<absl::StatusOr<std::unique_ptr<BlockBackend>>> OpenImage(const OpenOptions& options,
                                                                    OpenReport* report = nullptr);

// State shared while a chain is opened: detects loops by (st_dev, st_ino).
struct ChainContext {
  std::vector<std::pair<uint64_t, uint64_t>> seen;  // (dev, ino) of files opened so far
  std::vector<std::string> names;
  int depth = 0;
};

// Opens one node with its whole backing chain. |options.path| names the file; the format is
// probed unless given. Used by OpenImage and by format drivers for their backing files.
coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenDriver(const OpenOptions& options,
                                                                    ChainContext& chain,
                                                                    OpenReport* report);

}  // namespace qedfuse::block
