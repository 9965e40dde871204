// Creating images, for tools (qedimg create and convert): a new QED image byte-identical to
// `qemu-img create -f qed`, the size limit of a QED geometry, and the locks a tool takes on a
// file it is about to overwrite.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace qedfuse::qed {

// The format's default geometry (asserted against the format code in image_create.cc).
inline constexpr uint32_t kCreateDefaultClusterSize = 64 * 1024;
inline constexpr uint32_t kCreateDefaultTableSize = 4;

struct CreateOptions {
  std::string path;
  std::optional<uint64_t> size;  // rounded up to 512; default: the backing file's size
  uint32_t cluster_size = kCreateDefaultClusterSize;
  uint32_t table_size = kCreateDefaultTableSize;
  std::string backing_file;    // stored as given
  std::string backing_format;  // "raw" sets the no-probe feature; "" or "qed" probes
};

// Creates the image file, emptying an existing regular file first (an error if it cannot be
// emptied); a block device or any other non-regular file is refused. Synchronous: for tools and
// tests, not the data path.
// Refuses geometries QEMU cannot open (table_size 1) or whose maximum size overflows.
absl::Status CreateImage(const CreateOptions& options);

// The largest virtual size a QED image with this geometry holds; nullopt for a geometry QED
// does not allow.
std::optional<uint64_t> MaxVirtualSize(uint32_t cluster_size, uint32_t table_size);

}  // namespace qedfuse::qed

namespace qedfuse::block {

// Takes, on |fd| (the file |path| a tool is about to create or overwrite), the byte-range locks
// QEMU takes for image creation; fails (kUnavailable) when another process uses the file.
absl::Status LockForCreate(int fd, const std::string& path);

}  // namespace qedfuse::block
