// QedDriver write path: in-place writes, allocating writes (with copy-on-write padding), zero
// writes, and the serialisation of allocations (qed-format.md §5).
//
// Crash-consistency rules implemented here, in this order, for every allocating run:
//   1. no backing file: NEED_CHECK is set on disk and flushed before the first allocation;
//   2. data clusters are written whole (guest data plus head/tail padding) past the old EOF;
//   3. with a backing file: flush, so that data (and padding copied from the backing file) is
//      durable before any entry makes the guest depend on it;
//   4. L2 entries: an existing table gets the granules holding them rewritten; a new table is
//      written whole and flushed before
//   5. the L1 entry that links it is written.
// Until steps 4/5 reach the disk a crash only leaks clusters past the old EOF.
#include <algorithm>
#include <vector>

#include "block/qed/qed_driver.h"
#include "qedfuse/base/macros.h"

namespace qedfuse::qed {

using block::DebugEvent;
using block::IoBuffer;
using block::IoVector;
using coro::CoMutex;

coro::Task<Result<void>> QedDriver::Write(uint64_t offset, IoVector iov) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  if (closing_) co_return Unexpected(Errc::kClosed);
  const uint64_t len = iov.size();
  co_return co_await WriteRequest(offset, len, std::move(iov), /*zero=*/false,
                                  block::ZeroFlags::kNone);
}

coro::Task<Result<void>> QedDriver::WriteZeroes(uint64_t offset, uint64_t len,
                                                block::ZeroFlags flags) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  if (closing_) co_return Unexpected(Errc::kClosed);
  co_return co_await WriteRequest(offset, len, IoVector(), /*zero=*/true, flags);
}

coro::Task<Result<void>> QedDriver::WriteRequest(uint64_t offset, uint64_t len, IoVector iov,
                                                 bool zero, block::ZeroFlags flags) {
  const RequestId id = next_request_id_++;
  const uint64_t cs = geo_.cluster_size;
  bool owner = false;  // a request keeps the allocation slot until it completes
  Result<void> result;
  uint64_t done = 0;
  CoMutex::Guard lock = co_await table_lock_.Lock();
  while (done < len) {
    const uint64_t pos = offset + done;
    Result<Lookup> found = co_await FindCluster(lock, pos, len - done);
    if (!found) {
      result = Unexpected(found.error());
      break;
    }
    Lookup& lk = *found;
    uint64_t n = lk.len;

    if (lk.kind == ClusterKind::kFound) {
      // In place: no metadata changes, so the data I/O runs without the lock and concurrently
      // with other in-place writes and reads.
      lock.Release();
      Result<void> r;
      file_->Annotate(DebugEvent::kWriteData);
      if (zero) {
        r = co_await WriteZeroesChild(*file_, lk.host_offset, n, flags);  // stays allocated
      } else {
        r = co_await WriteChild(*file_, lk.host_offset, iov.Slice(done, n));
      }
      if (!r) {
        result = r;
        break;
      }
      done += n;
      if (done < len) lock = co_await table_lock_.Lock();
      continue;
    }

    bool zero_entries = false;
    IoBuffer zeros;
    IoVector data;
    if (zero) {
      if (lk.kind == ClusterKind::kZero) {  // reads as zeros already
        done += n;
        continue;
      }
      const uint64_t in = geo_.in_cluster(pos);
      const bool to_image_end = pos + n >= header_.image_size;
      if (in != 0 || (n < cs && !to_image_end)) {
        // Part of a cluster. Without a backing file an unallocated cluster already reads as
        // zeros; with one, it needs an ordinary allocating write of zeros.
        n = std::min(n, cs - in);
        if (!backing_) {
          done += n;
          continue;
        }
        zeros = IoBuffer(n, /*zero=*/true);
        data = IoVector(zeros);
      } else {
        // Whole clusters (the last one may end at the end of the image): zero entries.
        if (!to_image_end) n = n / cs * cs;
        zero_entries = true;
      }
    } else {
      data = iov.Slice(done, n);
    }

    if (!owner) {
      const bool waited = co_await AcquireAllocSlot(lock, id);
      owner = true;
      if (waited) continue;  // others allocated while we slept: look the range up again
    }
    Result<void> r = co_await AllocateRun(lock, lk, pos, n, data, zero_entries);
    if (!r) {
      result = r;
      break;
    }
    done += n;
  }
  lock.Release();
  if (owner) ReleaseAllocSlot();
  co_return result;
}

coro::Task<bool> QedDriver::AcquireAllocSlot(CoMutex::Guard& lock, RequestId id) {
  bool waited = false;
  if (alloc_owner_ == 0 && !alloc_plugged_ && alloc_queue_.empty()) {
    alloc_owner_ = id;
  } else {
    // FIFO: the slot is handed to the longest waiter (HandOffAllocSlot), so a newcomer can never
    // overtake a request that is already queued.
    alloc_queue_.push_back(id);
    ++stats_.alloc_waits;
    co_await alloc_waiters_.Wait(lock);
    waited = true;
  }
  // A new allocating request: the timer must not clear NEED_CHECK under it.
  need_check_timer_.Disarm();
  co_return waited;
}

void QedDriver::HandOffAllocSlot() {
  if (alloc_owner_ != 0 || alloc_plugged_ || alloc_queue_.empty()) return;
  alloc_owner_ = alloc_queue_.front();
  alloc_queue_.pop_front();
  alloc_waiters_.WakeOne();  // wakes exactly that request: both queues are FIFO
}

void QedDriver::ReleaseAllocSlot() {
  alloc_owner_ = 0;
  if (!alloc_queue_.empty()) {
    HandOffAllocSlot();
    return;
  }
  // The last allocating write finished: clear NEED_CHECK once things have been quiet a while.
  if (header_.need_check() && !suspect_ && !closing_ && loop_started_) {
    need_check_timer_.Arm(need_check_delay_);
  }
}

coro::Task<Result<void>> QedDriver::SetNeedCheckForAllocation(CoMutex::Guard& lock) {
  // Images with a backing file never use the flag: the flush before their L2 updates already
  // orders data before metadata (qed-format.md §5.3).
  if (backing_ || header_.need_check()) co_return Ok();
  header_.features |= kFeatureNeedCheck;
  ++stats_.need_check_sets;
  lock.Release();
  Result<void> r = co_await WriteHeaderSector(DebugEvent::kNeedCheckSet);
  // QEMU does not flush here. We do, so the flag is durable before any allocation can be: an
  // L2 entry that reaches the disk ahead of its data (or of the file extension) is then always
  // found by the check at the next read-write open.
  if (r) r = co_await FlushFile();
  lock = co_await table_lock_.Lock();
  if (!r) header_.features &= ~kFeatureNeedCheck;  // retried by the next allocation
  co_return r;
}

coro::Task<Result<void>> QedDriver::AllocateRun(CoMutex::Guard& lock, Lookup& lk, uint64_t pos,
                                                uint64_t len, IoVector data, bool zero_entries) {
  const uint64_t cs = geo_.cluster_size;
  const uint64_t first = geo_.cluster_start(pos);
  const uint64_t nclusters = (pos + len - first + cs - 1) / cs;
  ++stats_.allocating_runs;

  // Step 1: NEED_CHECK before anything is allocated.
  QEDFUSE_CO_TRY(co_await SetNeedCheckForAllocation(lock));

  uint64_t value = kZeroClusterEntry;
  if (!zero_entries) {
    // Reserve whole clusters at the in-memory EOF; only this request (the allocation owner) moves
    // it, so the range is ours even while the lock is released.
    const uint64_t host = file_size_;
    file_size_ += nclusters * cs;
    stats_.clusters_allocated += nclusters;
    lock.Release();
    // Steps 2 and 3: data (with padding), then a flush when a backing file is involved.
    Result<void> r = co_await WriteNewClusters(lk, pos, len, data, host, first, nclusters);
    lock = co_await table_lock_.Lock();
    if (!r) {
      // No entry points at the reserved clusters: reuse them rather than leak them.
      ReleaseReservation(host, host + nclusters * cs);
      co_return r;
    }
    value = host;
  }
  // Steps 4 and 5.
  co_return co_await UpdateL2(lock, lk, first, nclusters, value, zero_entries);
}

void QedDriver::ReleaseReservation(uint64_t begin, uint64_t end) {
  // Only the allocation owner moves file_size_, so the range is normally still the last one. A
  // failed entry write (L2 or L1) never comes here: the entry may have reached the disk, so its
  // clusters must leak rather than be handed out twice.
  if (file_size_ != end) return;
  file_size_ = begin;
  trim_at_close_ = true;
}

coro::Task<Result<void>> QedDriver::FillPadding(const Lookup& lk, uint64_t guest_pos,
                                                IoBuffer& buf) {
  // A zero cluster's untouched bytes stay zeros: they must not be copied from the backing file
  // (QEMU does, bug Q3). Unallocated clusters take the backing file's bytes (zeros past its end).
  if (lk.kind == ClusterKind::kZero || !backing_) {
    std::fill_n(buf.data(), buf.size(), std::byte{0});
    co_return Ok();
  }
  backing_->driver().Annotate(DebugEvent::kCowRead);
  co_return co_await ReadBacking(guest_pos, IoVector(buf));
}

coro::Task<Result<void>> QedDriver::WriteNewClusters(const Lookup& lk, uint64_t pos, uint64_t len,
                                                     IoVector data, uint64_t host, uint64_t first,
                                                     uint64_t nclusters) {
  const uint64_t head = pos - first;
  const uint64_t tail = first + nclusters * geo_.cluster_size - (pos + len);
  IoBuffer head_buf(head);
  IoBuffer tail_buf(tail);
  if (head != 0) QEDFUSE_CO_TRY(co_await FillPadding(lk, first, head_buf));
  if (tail != 0) QEDFUSE_CO_TRY(co_await FillPadding(lk, pos + len, tail_buf));
  // The whole cluster range goes out in one write, so the file grows by whole clusters.
  IoVector v;
  v.Append(head_buf.data(), head);
  v.Append(data);
  v.Append(tail_buf.data(), tail);
  if (head != 0 || tail != 0) file_->Annotate(DebugEvent::kCowWrite);
  file_->Annotate(DebugEvent::kWriteData);
  QEDFUSE_CO_TRY(co_await WriteChild(*file_, host, v));
  if (backing_) QEDFUSE_CO_TRY(co_await FlushFile());
  co_return Ok();
}

coro::Task<Result<void>> QedDriver::UpdateL2(CoMutex::Guard& lock, Lookup& lk, uint64_t pos,
                                             uint64_t n, uint64_t first_value, bool zero_entries) {
  const uint64_t idx = geo_.l2_index(pos);
  auto entry = [&](uint64_t i) {
    return zero_entries ? kZeroClusterEntry : first_value + i * geo_.cluster_size;
  };

  if (lk.kind == ClusterKind::kUnallocatedL1) {
    // A new L2 table goes after the data clusters. It is written whole and flushed before L1
    // points at it, so L1 never references a half-written table whose garbage would read as
    // cluster offsets (the flush also makes the data durable).
    const uint64_t l1i = geo_.l1_index(pos);
    Table table(geo_.table_nelems);
    for (uint64_t i = 0; i < n; ++i) table.Set(idx + i, entry(i));
    const uint64_t l2_off = file_size_;
    file_size_ += geo_.table_bytes;
    ++stats_.l2_tables_allocated;
    lock.Release();
    Result<void> r = co_await tables_->Write(l2_off, table, DebugEvent::kL2AllocWrite);
    if (r) r = co_await FlushFile();
    lock = co_await table_lock_.Lock();
    if (!r) {
      // L1 does not point at the table yet, so neither it nor the data clusters before it are
      // linked: give them back.
      ReleaseReservation(zero_entries ? l2_off : first_value, l2_off + geo_.table_bytes);
      co_return r;
    }
    // The table enters the cache only now that it is on disk; it is pinned until linked.
    L2Ref ref = l2_cache_.Insert(l2_off, std::move(table));
    // The L1 entry is set in memory before its write, so the table lock stays held across that
    // write (a small metadata write; data I/O never runs under the lock). Were it released, a
    // concurrent request could find the new table, write in place into a cluster it maps and be
    // acknowledged, and a failed L1 write would then roll the entry back and make that
    // acknowledged data unreachable.
    l1_.Set(l1i, l2_off);
    r = co_await tables_->WriteEntries(header_.l1_table_offset, l1_, l1i, 1, DebugEvent::kL1Update);
    if (!r) {
      l1_.Set(l1i, 0);  // leak the table rather than trust an entry of unknown durability
      l2_cache_.Erase(l2_off);
      ++l2_generation_;
    }
    co_return r;
  }

  // Existing table: update the cached copy and write through the granules that hold the new
  // entries. The table lock stays held across that write (small; data I/O never runs under the
  // lock): no other request may see the new entries before they are on disk. Otherwise one could
  // write in place into the new cluster and be acknowledged, and the rollback after a failed
  // table write would make that acknowledged data unreachable.
  Table& table = lk.l2.table();
  std::vector<uint64_t> old(n);
  ++l2_generation_;  // readers that missed this table meanwhile must not insert an older copy
  for (uint64_t i = 0; i < n; ++i) {
    old[i] = table.Get(idx + i);
    table.Set(idx + i, entry(i));
  }
  Result<void> r =
      co_await tables_->WriteEntries(lk.l2.offset(), table, idx, n, DebugEvent::kL2Update);
  if (!r) {
    // Keep the cache equal to what the disk most likely holds; the new clusters leak.
    for (uint64_t i = 0; i < n; ++i) table.Set(idx + i, old[i]);
    ++l2_generation_;
  }
  co_return r;
}

}  // namespace qedfuse::qed
