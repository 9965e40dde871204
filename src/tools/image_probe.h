// Reads what qedimg reports about the files of an image chain straight from disk: the QED header
// (so the need-check flag shown is the one on disk, not a cached copy), file size and host
// allocation, and the backing chain resolved the way the block layer resolves it (a relative
// backing name is relative to the directory of the image that names it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "block/qed/qed_format.h"
#include "qedfuse/block/open.h"

namespace qedfuse::tools {

struct LayerInfo {
  std::string filename;  // as given (top) or resolved (backing layers)
  std::string format;    // "qed" or "raw"
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;             // st_size
  uint64_t actual_size = 0;           // st_blocks * 512 (qemu-img's "disk size")
  std::optional<qed::Header> header;  // QED only
  std::string backing_name;           // as stored in the header
  std::string full_backing;           // resolved against this file's directory
  std::string backing_format;         // "raw" when the header says so (no probing), else ""
};

// Describes |path| with format |format| ("" probes by magic). Does not validate the header
// beyond decoding it: callers open the image through block::OpenImage first.
absl::StatusOr<LayerInfo> DescribeLayer(const std::string& path, const std::string& format);

// The chain block::OpenImage opened (OpenReport::chain, top first; it resolved the backing
// names under the caller's BackingPolicy and refused loops, deep chains and files that are not
// regular files or block devices). A backing name the policy ignored is shown but not followed.
absl::StatusOr<std::vector<LayerInfo>> DescribeLayers(const std::vector<block::ChainLink>& chain);

// Names the feature bits, e.g. "backing-file, need-check"; "none" for 0; unknown bits in hex.
std::string FeatureNames(uint64_t features);

// Resolves a backing name stored in |image| the way QEMU does.
std::string ResolveBacking(const std::string& image, const std::string& name);

}  // namespace qedfuse::tools
