// What an opened image chain is made of, for tools that report on images (qedimg info, map,
// check, resize): each layer's format, sizes, backing name and, for QED, the header fields, read
// from the open driver graph (no second header reader outside the block layer); and the QED
// consistency check of an open image. Implemented above the drivers (src/block/graph/).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qedfuse/base/result.h"
#include "qedfuse/block/block_backend.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::block {

// The header fields of a QED layer as read at open.
struct QedHeaderInfo {
  uint32_t cluster_size = 0;
  uint32_t table_size = 0;
  uint32_t header_size = 0;
  uint64_t features = 0;
  uint64_t compat_features = 0;
  uint64_t autoclear_features = 0;
  uint64_t l1_table_offset = 0;
  bool need_check = false;  // the flag as stored in the file when it was opened
};

struct LayerInfo {
  std::string filename;  // as in the OpenReport chain (top: as the caller named it)
  std::string format;    // "qed" or "raw"
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;            // of the image file when it was opened
  uint64_t actual_size = 0;          // host allocation (st_blocks * 512)
  std::optional<QedHeaderInfo> qed;  // QED layers only
  std::string backing_name;          // as stored in the image, "" if none
  std::string full_backing;          // QemuBackingPath(filename, backing_name), also when the
                                     // backing file was not opened (BackingPolicy::kNone)
  std::string backing_format;        // "raw" when the image says so (no probing), else ""
};

// Describes every layer of |image|, top first. |chain| is the OpenReport chain of the open that
// made |image| (its names; the caller may replace the top's path by the name it was given).
std::vector<LayerInfo> DescribeLayers(BlockBackend& image, const std::vector<ChainLink>& chain);

// The header of the top layer when it is QED.
std::optional<QedHeaderInfo> QedHeaderOf(BlockBackend& image);

// Names QED feature bits, e.g. "backing-file, need-check"; "none" for 0; unknown bits in hex.
std::string QedFeatureNames(uint64_t features);

}  // namespace qedfuse::block

namespace qedfuse::qed {

// What a consistency check found (and, with repair, fixed). Matches `qemu-img check` except
// where QEMU's arithmetic is wrong (leaks are counted with correct cluster arithmetic).
struct CheckReport {
  uint64_t total_clusters = 0;      // ceil(image_size / cluster_size)
  uint64_t allocated_clusters = 0;  // L2 entries that are neither 0 nor 1
  uint64_t fragmented_clusters = 0;
  uint64_t corruptions = 0;  // found and not fixed
  uint64_t corruptions_fixed = 0;
  uint64_t leaks = 0;
  uint64_t leaks_fixed = 0;
  uint64_t data_relocated = 0;        // by leak compaction (fix_leaks)
  uint64_t tables_relocated = 0;      // likewise; a parked table counts once per move
  uint64_t check_errors = 0;          // I/O errors while checking
  std::vector<std::string> messages;  // one line per finding, naming the offset
  uint64_t file_size = 0;             // rounded-down file size after the check (see truncation)
};

// True if the top layer of |image| is a QED image (the only format with a check).
bool CanCheck(block::BlockBackend& image);

// Checks the open QED image |image| (opened with OpenOptions::for_check); with |repair| (a
// read-write open) invalid entries are cleared and a clean result clears NEED_CHECK.
// Errc::kNotSupported when !CanCheck(image).
coro::Task<Result<CheckReport>> CheckOpenImage(block::BlockBackend& image, bool repair);

}  // namespace qedfuse::qed
