// qed::CompactLeaks: makes a consistent QED image leak-free by cutting unreferenced clusters off
// the end of the file and filling unreferenced clusters inside it with the last clusters of the
// file. QED has no free-space map, so any unreferenced cluster is a leak that `qemu-img check`
// reports (exit 3); compaction is how freed clusters (punched or zeroed by the guest) and the
// clusters a crash left unlinked stop being leaks.
//
// A move of a data cluster or of an L2 table is crash-safe on its own:
//   1. copy the unit into free clusters (nothing refers to them yet: a crash leaves a leak);
//   2. flush (the copy is durable before anything points at it);
//   3. repoint the L2 entry (data) or the L1 entry (table): every entry is 8 bytes inside one
//      sector, so a crash leaves either the old or the new location referenced, never both;
//   4. flush (the old location is unreferenced on disk before it is reused or cut off).
// Before the first copy, a flush makes the state the holes were computed from durable (a hole
// whose freeing entry write is not on disk yet still holds live data after a crash).
// Moves are batched (many copies, one flush, many entry updates, one flush). NEED_CHECK stays set
// on disk for the whole compaction (the caller's duty), so a crash anywhere leaves an image whose
// next read-write open repairs and compacts again.
//
// Choice of moves: the unit at the end of the file goes to the lowest free place that fits it (a
// data cluster fits any free cluster; a table needs table_size adjacent free clusters below it).
// When the last unit is a table that fits nowhere, free space is consolidated first: below that
// table (past any adjacent tables) lies either a free cluster, and then the lowest table of that
// chain is parked past the end of the file so that it can come back lower down over its own old
// place, or a data cluster, which moves to the lowest free cluster. Every step moves a unit to a
// lower address or parks a table to do so next, so the loop ends with no free cluster below the
// last used one (or stops at the L1 table, which never moves).
#pragma once

#include <cstdint>
#include <vector>

#include "block/qed/qed_format.h"
#include "block/qed/qed_used_clusters.h"
#include "qedfuse/base/result.h"
#include "qedfuse/block/child.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::qed {

struct CompactReport {
  uint64_t data_moved = 0;    // data clusters relocated
  uint64_t tables_moved = 0;  // L2 tables relocated (parking counts once per move)
  uint64_t end_clusters = 0;  // file size in clusters afterwards
  uint64_t leaks_left = 0;    // unreferenced clusters still inside the file (normally 0)
};

// Compacts the image in |file| (header |h|, geometry |geo|, in-memory L1 |l1|, updated in place
// when tables move). |used| must hold every referenced cluster (the consistency check's bitmap of
// an image without corruptions) over the |nclusters| clusters of the file; it is updated as
// units move. The file is truncated after the last used cluster. I/O errors stop the compaction
// (the image stays consistent; the caller keeps NEED_CHECK set).
// Must run on the event-loop thread, with nothing else using the image.
coro::Task<Result<CompactReport>> CompactLeaks(block::Child& file, const Header& h,
                                               const Geometry& geo, std::vector<uint64_t>& l1,
                                               UsedClusters& used);

}  // namespace qedfuse::qed
