// QED consistency check and repair (qed-format.md §7), shared by the driver's dirty-open repair
// and by `qedimg check`. Findings match `qemu-img check` except where QEMU's arithmetic is wrong
// (quirk Q4: we count leaks with correct cluster arithmetic).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qedfuse/base/result.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/coro/task.h"
#include "block/qed/qed_format.h"

namespace qedfuse::qed {

struct CheckReport {
  uint64_t total_clusters = 0;       // ceil(image_size / cluster_size)
  uint64_t allocated_clusters = 0;   // L2 entries that are neither 0 nor 1
  uint64_t fragmented_clusters = 0;
  uint64_t corruptions = 0;          // found and not fixed
  uint64_t corruptions_fixed = 0;
  uint64_t leaks = 0;
  uint64_t leaks_fixed = 0;
  uint64_t check_errors = 0;         // I/O errors while checking
  std::vector<std::string> messages;  // one line per finding, naming the offset
};

struct CheckOptions {
  bool repair = false;  // fix invalid entries (set to 0); leaks are counted, never fixed
};

// Checks the image whose file is |file|, with header |h| (already validated, geometry |geo|),
// L1 table |l1| (in memory; updated in place when repaired) and rounded-down |file_size|.
// With repair, fixed tables are written back to |file|. The header (NEED_CHECK) is left alone:
// the caller clears it when the report shows no corruptions and no check errors.
coro::Task<Result<CheckReport>> CheckImage(block::BlockDriver& file, const Header& h,
                                           const Geometry& geo, std::vector<uint64_t>& l1,
                                           uint64_t file_size, const CheckOptions& options);

}  // namespace qedfuse::qed
