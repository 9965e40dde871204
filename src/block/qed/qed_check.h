// QED consistency check and repair (docs/qed-format.md §11), shared by the driver's dirty-open
// repair and by `qedimg check`. Findings match `qemu-img check` except where QEMU's arithmetic is
// wrong (quirk Q4: we count leaks with correct cluster arithmetic).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "block/qed/qed_format.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/child.h"
#include "qedfuse/block/image_info.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::qed {

// CheckReport is public (qedfuse/block/image_info.h).

struct CheckOptions {
  bool repair = false;  // fix invalid entries (set to 0)
  // With repair, and when the check found no remaining corruption and no I/O error: remove every
  // leak by compaction (qed_compact.h: trailing leaks are cut off, interior ones are filled by
  // relocating the last clusters of the file), counted in leaks_fixed. Off by default, as QEMU
  // never fixes QED leaks (and tests compare plain repairs with qemu-img's byte for byte).
  bool fix_leaks = false;
  // At most this many lines go to CheckReport::messages; a final line counts the rest.
  std::size_t max_messages = 1000;
};

// Checks the image whose file is |file|, with header |h| (already validated, geometry |geo|),
// L1 table |l1| (in memory; updated in place when repaired) and rounded-down |file_size|.
// With repair, fixed tables are written back to |file| (whole tables; the Child splits
// them at the node's max_transfer) and flushed; with fix_leaks, |l1| also follows L2 tables that
// compaction moved. The header (NEED_CHECK) is left alone: the caller clears it when the report
// shows no corruptions and no check errors. The L2 tables are read straight from |file|, so a
// caller with an L2 cache must drop it after a repair. I/O errors do not fail the call: they are
// counted in check_errors (and then leaks are not counted, as in QEMU). The call fails only for bad
// arguments (EINVAL: |l1| has not table_nelems entries) or when memory for the tables cannot be had
// (ENOMEM). Must run on the event-loop thread (it awaits |file|).
coro::Task<Result<CheckReport>> CheckImage(block::Child& file, const Header& h, const Geometry& geo,
                                           std::vector<uint64_t>& l1, uint64_t file_size,
                                           const CheckOptions& options);

}  // namespace qedfuse::qed
