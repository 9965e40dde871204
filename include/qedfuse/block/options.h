// The option vocabulary of the block layer: how an image is to be opened (OpenOptions, with the
// I/O backend, cache mode and backing-file policy) and what the open reports back (OpenReport).
// It sits below every driver: the drivers, the graph assembly (open.h) and the apps all speak
// it, and it depends on nothing but the BlockDriver interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qedfuse/block/block_driver.h"

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
  // How error messages name the file; "" names it by |path|. A format driver sets it when it
  // opens its backing file ("backing file 'base.raw'"), so that a message names the file once.
  std::string name;
  const std::string& NameInMessages() const { return name.empty() ? path : name; }
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

// The path QEMU opens for the backing name |stored| of the image |image_path|: an absolute name
// as it is, a relative one relative to the image's directory (no symlink or `..` resolution).
// This is also the name `qemu-img info` shows as the full backing file name.
std::string QemuBackingPath(const std::string& image_path, const std::string& stored);

}  // namespace qedfuse::block
