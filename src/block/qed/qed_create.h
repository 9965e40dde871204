// Image creation, byte-identical to `qemu-img create -f qed` (docs/qed-format.md §12).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "block/qed/qed_format.h"

namespace qedfuse::qed {

struct CreateOptions {
  std::string path;
  std::optional<uint64_t> size;  // rounded up to 512; default: the backing file's size
  uint32_t cluster_size = kDefaultClusterSize;
  uint32_t table_size = kDefaultTableSize;
  std::string backing_file;    // stored as given
  std::string backing_format;  // "raw" sets kFeatureBackingFormatNoProbe; "" or "qed" probes
};

// Creates the image file, emptying an existing regular file first (an error if it cannot be
// emptied); a block device or any other non-regular file is refused. Synchronous: for tools and
// tests, not the data path.
// Refuses geometries QEMU cannot open (table_size 1, Q1) or whose maximum size overflows (Q2).
absl::Status CreateImage(const CreateOptions& options);

}  // namespace qedfuse::qed
