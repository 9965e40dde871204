// The public creation helpers over the QED format code and the file locks; see
// qedfuse/block/image_create.h (CreateImage itself is in src/block/qed/qed_create.cc).
#include "qedfuse/block/image_create.h"

#include "block/file/file_lock.h"
#include "block/qed/qed_format.h"

namespace qedfuse::qed {

static_assert(kCreateDefaultClusterSize == kDefaultClusterSize);
static_assert(kCreateDefaultTableSize == kDefaultTableSize);

std::optional<uint64_t> MaxVirtualSize(uint32_t cluster_size, uint32_t table_size) {
  if (!MakeGeometry(cluster_size, table_size, 1).ok()) return std::nullopt;
  return MaxImageSize(cluster_size, table_size);
}

}  // namespace qedfuse::qed

namespace qedfuse::block {

absl::Status LockForCreate(int fd, const std::string& path) {
  return ApplyQemuLocks(fd, path, QemuCreateLockPerms());
}

}  // namespace qedfuse::block
