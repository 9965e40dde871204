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
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

enum class AioMode { kAuto, kIoUring, kThreads };
enum class CacheMode { kWriteback, kNone };  // kNone = O_DIRECT on the image file

// What to do with the backing file an image names (the name is data from whoever made the
// image):
//  - kFollow: open it, like QEMU: a relative name is relative to the image's directory, an
//    absolute name is used as it is (a name that leads outside the image's directory is logged
//    as a warning);
//  - kConfined: only names that resolve inside the image's directory: absolute names, `..`
//    escapes and symlinks leading out are refused (resolved by the kernel with RESOLVE_BENEATH,
//    not by string tests);
//  - kNone: never open it (QEMU's backing=null): unallocated clusters read as zeros and partial
//    writes fill the rest of their cluster with zeros.
// Whatever the policy, a backing file must be a regular file or a block device: anything else
// (a FIFO, a character device, a socket, a directory) is refused before it is opened.
enum class BackingPolicy { kFollow, kConfined, kNone };

// "follow", "confined", "none" <-> BackingPolicy (for the CLI parsers of qedfuse and qedimg).
std::string_view BackingPolicyName(BackingPolicy p);
std::optional<BackingPolicy> ParseBackingPolicy(std::string_view name);

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
  BackingPolicy backing = BackingPolicy::kFollow;

  // Debugging and test hooks (qedfuse --debug-* options): wrap a node of the top image in a
  // filter driver. |wrap_image_file| receives the top image's protocol node (the file, below the
  // format driver; backing files are not wrapped); |wrap_top| receives the top format driver
  // before it goes into the BlockBackend. Unset: nothing is wrapped.
  using WrapFn = std::function<std::unique_ptr<BlockDriver>(std::unique_ptr<BlockDriver>)>;
  WrapFn wrap_image_file;
  WrapFn wrap_top;
};

// One file of an opened chain.
struct ChainLink {
  std::string path;              // the file as opened (for a backing file: resolved)
  std::string format;            // "qed", "raw"
  std::string backing_name;      // the backing file name stored in this image, "" if none
  bool backing_ignored = false;  // BackingPolicy::kNone: the name was not followed
};

// "top.qed (qed) -> base.raw (raw)"; an ignored backing file shows as "[backing 'x' ignored]".
std::string DescribeChain(const std::vector<ChainLink>& chain);

// What happened while opening, for the caller to report.
struct OpenReport {
  std::string format;            // of the top image
  std::vector<ChainLink> chain;  // top first
  bool was_dirty = false;        // NEED_CHECK was set on disk
  bool repaired = false;         // a repair ran at open
  std::string repair_summary;    // human-readable, e.g. "fixed 1 corruption"
  std::string aio;               // "io_uring" or "threads"
};

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
