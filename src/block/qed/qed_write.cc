// QedDriver write path: in-place writes, allocating writes (with copy-on-write padding), zero
// writes, and the serialisation of allocations (docs/qed-format.md §7, §9; the crash ordering is
// §8.1).
//
// Crash-consistency rules implemented here, in this order, for every allocating run:
//   1. NEED_CHECK is set on disk and flushed before the first allocation (with or without a
//      backing file: a crash can leave clusters unlinked, and the repair at the next read-write
//      open, which the flag triggers, compacts them away);
//   2. data clusters are written whole (guest data plus head/tail padding), past the old EOF or
//      into reused clusters (freed ones, or ones given back by a failed allocation);
//   3. with a backing file, or when a run of the batch reused clusters: flush, so that the data
//      (and padding copied from the backing file) is durable before any entry makes the guest
//      depend on it. Without a backing file a fresh cluster needs no flush (lost data there
//      reads as zeros, the unwritten state), but a reused one may still hold another guest
//      offset's bytes, which a crash must never expose under the new entry;
//   4. L2 entries: in an existing table the L2 committer rewrites the granules holding the
//      entries of a batch of runs (each run's data write has completed before it joins a batch);
//      a new table is written whole and flushed before
//   5. the L1 entry that links it is written.
// Until steps 4/5 reach the disk a crash only leaks the reserved clusters. Entries become
// visible to lookups only after their write succeeded, so no request reads through (or writes in
// place into) a cluster whose entry might not be on disk, and a failed write needs no rollback.
//
// Concurrency of allocations: a run inside an existing table holds the allocation slot only
// while it sets NEED_CHECK and reserves clusters at the file end; its data write then overlaps
// the next runs' ones, and its entries are committed in a batch with theirs. The guest clusters
// of such a run are registered in in_flight_ from reservation to commit: any other allocation
// touching them waits and looks up again (it would otherwise allocate the same guest cluster
// twice), while reads see the old contents (backing file or zeros) until the commit.
//
// Freeing (qed_driver.h): a zero write over whole allocated clusters is a run with zero entries
// like any other (NEED_CHECK, in_flight_, the L2 committer); once its entries are written and
// visible, the host range is punched and the clusters join free_. ReserveClusters() hands them
// out again only when Reusable(): the freeing entry write is durable (durable_seq_) and no read
// or in-place write that looked the old mapping up is still running (data_io_).
#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

#include "block/qed/qed_driver.h"
#include "qedfuse/base/align.h"
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
  AllocSlot slot;  // held only for one run's allocation turn
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

    // A zero request covers whole clusters (the last one may end at the end of the image), which
    // become zero entries, or a part of one cluster.
    bool whole = false;
    if (zero) {
      const uint64_t in = geo_.in_cluster(pos);
      const bool to_image_end = pos + n >= header_.image_size;
      if (in != 0 || (n < cs && !to_image_end)) {
        n = std::min(n, cs - in);
      } else {
        if (!to_image_end) n = AlignDown(n, cs);
        whole = true;
      }
    }

    if (lk.kind == ClusterKind::kFound && !whole) {
      // In place: no metadata changes, so the data I/O runs without the lock and concurrently
      // with other in-place writes and reads.
      slot.Release();  // if held: someone allocated the cluster while we waited for the slot
      Result<void> r;
      {
        DataIo io(*this);  // registered before the lock is released: see data_io_
        lock.Release();
        if (zero) {  // part of a cluster
          r = co_await file_.WriteZeroes(lk.host_offset, n, flags, DebugEvent::kWriteData);
        } else {
          r = co_await file_.Write(lk.host_offset, iov.Slice(done, n), DebugEvent::kWriteData);
        }
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
      if (!whole) {
        // Part of an unallocated cluster. Without a backing file it already reads as zeros;
        // with one, it needs an ordinary allocating write of zeros.
        if (!backing_) {
          done += n;
          continue;
        }
        zeros = IoBuffer(n, /*zero=*/true);
        data = IoVector(zeros);
      } else {
        // Whole clusters: zero entries (allocated ones are freed).
        zero_entries = true;
      }
    } else {
      data = iov.Slice(done, n);
    }

    // A run being allocated by another request (reserved, its entries not yet committed) still
    // looks unallocated: wait until it is committed or has failed, then look again.
    const uint64_t first = geo_.cluster_start(pos);
    const uint64_t end = first + AlignUp(pos + n - first, cs);
    if (OverlapsInFlight(first, end)) {
      ++stats_.conflict_waits;
      co_await in_flight_waiters_.Wait(lock);
      continue;
    }
    if (!slot.held()) {
      const bool waited = co_await AcquireAllocSlot(lock, id, slot);
      if (waited) continue;  // others allocated while we slept: look the range up again
    }
    Result<void> r;
    if (lk.kind == ClusterKind::kUnallocatedL1) {
      // A new L2 table: the slot stays ours until the table and its L1 entry are written.
      r = co_await AllocateRun(lock, lk, pos, n, data, zero_entries);
      slot.Release();
    } else {
      r = co_await AllocateInTable(lock, lk, pos, n, data, zero_entries, slot);
    }
    if (!r) {
      result = r;
      break;
    }
    done += n;
  }
  lock.Release();
  slot.Release();
  co_return result;
}

coro::Task<bool> QedDriver::AcquireAllocSlot(CoMutex::Guard& lock, RequestId id, AllocSlot& slot) {
  assert(!slot.held());
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
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
    // Re-checked after the wake: HandOffAllocSlot made this request the owner before waking it.
    assert(lock.owns(table_lock_) && alloc_owner_ == id);
  }
  assert(alloc_owner_ == id);
  slot = AllocSlot(this);
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
  assert(alloc_owner_ != 0 && "releasing an allocation slot nobody owns");
  alloc_owner_ = 0;
  if (!alloc_queue_.empty()) {
    HandOffAllocSlot();
    return;
  }
  MaybeArmNeedCheckTimer();
}

void QedDriver::MaybeArmNeedCheckTimer() {
  // The last allocating write finished: clear NEED_CHECK once things have been quiet a while.
  if (alloc_owner_ != 0 || !alloc_queue_.empty() || !in_flight_.empty()) return;
  if (header_.need_check() && !suspect_ && !closing_ && loop_started_) {
    need_check_timer_.Arm(need_check_delay_);
  }
}

bool QedDriver::OverlapsInFlight(uint64_t first, uint64_t end) const {
  for (const PendingRun* r : in_flight_) {
    if (first < r->guest_end && r->guest_first < end) return true;
  }
  return false;
}

void QedDriver::FinishInFlight(PendingRun* run) {
  auto it = std::find(in_flight_.begin(), in_flight_.end(), run);
  if (it == in_flight_.end()) return;
  *it = in_flight_.back();
  in_flight_.pop_back();
  in_flight_waiters_.WakeAll();
  MaybeArmNeedCheckTimer();
}

coro::Task<Result<void>> QedDriver::SetNeedCheckForAllocation(CoMutex::Guard& lock) {
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  // Also with a backing file, although its flush before the L2 updates already orders data
  // before metadata (QEMU leaves the flag alone there): a crash still leaves unlinked or freed
  // clusters behind, and only the flag makes the next read-write open compact them away.
  if (header_.need_check()) co_return Ok();
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
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  const uint64_t cs = geo_.cluster_size;
  const uint64_t first = geo_.cluster_start(pos);
  const uint64_t nclusters = (pos + len - first + cs - 1) / cs;
  ++stats_.allocating_runs;

  // Step 1: NEED_CHECK before anything is allocated.
  QEDFUSE_CO_TRY(co_await SetNeedCheckForAllocation(lock));

  uint64_t value = kZeroClusterEntry;
  if (!zero_entries) {
    // Reserve whole clusters at the in-memory EOF; only the allocation owner moves it, so the
    // range is ours even while the lock is released.
    const uint64_t host = file_size_;
    file_size_ += nclusters * cs;
    fresh_from_ = std::max(fresh_from_, file_size_);  // (CreateL2 flushes before linking)
    stats_.clusters_allocated += nclusters;
    lock.Release();
    // Step 2: data (with padding). Step 3 (the flush with a backing file) is the one CreateL2
    // issues after writing the table and before linking it: nothing refers to the data earlier.
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
  co_return co_await CreateL2(lock, first, nclusters, value, zero_entries);
}

void QedDriver::ReleaseReservation(uint64_t begin, uint64_t end) {
  // Reservations move file_size_ only under the table lock, without suspending in between, so a
  // range that still ends at file_size_ is the last one handed out and nothing after it exists. A
  // failed entry write (L2 or L1) never comes here: the entry may have reached the disk, so its
  // clusters must leak (leaks_unresolved_) rather than be handed out twice.
  if (begin == end) return;
  if (file_size_ != end) {
    // A later reservation is still in use (concurrent runs), or the range was free clusters:
    // nothing ever linked it, so it is free at once.
    AddFree(begin, (end - begin) / geo_.cluster_size, /*seq=*/0);
    return;
  }
  file_size_ = begin;
  trim_at_close_ = true;
}

bool QedDriver::Reusable(const FreeExtent& e) const {
  if (e.seq == 0) return true;  // never referenced
  return e.seq <= durable_seq_ && (data_io_.empty() || data_io_.begin()->first >= e.seq);
}

uint64_t QedDriver::ReserveClusters(uint64_t want, uint64_t& got, bool& reused) {
  assert(want > 0);
  const uint64_t cs = geo_.cluster_size;
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (Reusable(*it) && (best == free_.end() || it->host < best->host)) best = it;
  }
  stats_.clusters_allocated += want;
  if (best == free_.end()) {
    got = want;
    const uint64_t host = file_size_;
    file_size_ += want * cs;
    // Below the highest end the file ever had (a reservation given back at the end, or space
    // cut off by compaction) a cluster may still hold bytes of another guest offset.
    reused = host < fresh_from_;
    fresh_from_ = std::max(fresh_from_, file_size_);
    return host;
  }
  reused = true;
  got = std::min(want, best->n);
  const uint64_t host = best->host;
  best->host += got * cs;
  best->n -= got;
  if (best->n == 0) free_.erase(best);
  stats_.clusters_allocated -= want - got;
  stats_.clusters_reused += got;
  return host;
}

void QedDriver::AddFree(uint64_t host, uint64_t n, uint64_t seq) {
  assert(n > 0 && host % geo_.cluster_size == 0 && host + n * geo_.cluster_size <= file_size_);
  const uint64_t end = host + n * geo_.cluster_size;
  for (FreeExtent& e : free_) {
    // Adjacent extents merge; the merged one is reusable when both would be.
    if (e.host + e.n * geo_.cluster_size == host || end == e.host) {
      e.host = std::min(e.host, host);
      e.n += n;
      e.seq = std::max(e.seq, seq);
      return;
    }
  }
  free_.push_back(FreeExtent{host, n, seq});
}

QedDriver::DataIo::~DataIo() {
  auto it = d_.data_io_.find(seq_);
  assert(it != d_.data_io_.end());
  if (--it->second == 0) d_.data_io_.erase(it);
}

coro::Task<Result<void>> QedDriver::AllocateInTable(CoMutex::Guard& lock, Lookup& lk, uint64_t pos,
                                                    uint64_t& len, IoVector data, bool zero_entries,
                                                    AllocSlot& slot) {
  assert(slot.held());
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  const uint64_t cs = geo_.cluster_size;
  const uint64_t first = geo_.cluster_start(pos);
  uint64_t nclusters = (pos + len - first + cs - 1) / cs;
  ++stats_.allocating_runs;

  // Step 1: NEED_CHECK set and flushed before anything is allocated. The slot is held, so no
  // other run can be reserved (and so become in flight over our clusters) meanwhile; the lookup
  // in |lk| stays valid.
  QEDFUSE_CO_TRY(co_await SetNeedCheckForAllocation(lock));

  PendingRun run;
  run.guest_first = first;
  run.index = geo_.l2_index(pos);
  run.zero_entries = zero_entries;
  run.first_value = kZeroClusterEntry;
  uint64_t host = 0;
  // A zero run over allocated clusters frees them (contiguous on the host: one kFound run).
  const bool freeing = zero_entries && lk.kind == ClusterKind::kFound;
  const uint64_t freed_host = freeing ? lk.host_offset : 0;
  assert(!freeing || geo_.in_cluster(freed_host) == 0);
  if (!zero_entries) {
    // Reserve whole clusters: free ones, or at the in-memory EOF. Only the slot owner reserves,
    // and the range stays ours after the slot is released. Free clusters may cover only the
    // head of the run: the request then goes on with the rest.
    uint64_t got = 0;
    host = ReserveClusters(nclusters, got, run.reused);
    if (got < nclusters) {
      nclusters = got;
      len = std::min(len, first + got * cs - pos);
      data = data.Slice(0, len);
    }
    run.first_value = host;
  }
  run.guest_end = first + nclusters * cs;
  run.n = nclusters;
  if (freeing) ++frees_running_;
  run.l2 = std::move(lk.l2);  // pins the table until the entries are committed
  // From here until its entries are committed, requests touching these guest clusters wait
  // (they would otherwise allocate them a second time). Readers see the old contents (backing
  // file or zeros) until the committer makes the entries visible.
  in_flight_.push_back(&run);
  slot.Release();  // the next request reserves its clusters while our data is written
  lock.Release();

  Result<void> r = Ok();
  if (!zero_entries) {
    // Step 2: data (with padding), concurrently with other runs' data.
    r = co_await WriteNewClusters(lk, pos, len, data, host, first, nclusters);
  }
  if (r) {
    // Steps 3 and 4 (flush with a backing file, L2 entries) for a whole batch of runs.
    r = co_await CommitL2(run);
    lock = co_await table_lock_.Lock();
    if (!r) {
      leaks_unresolved_ = true;  // the entries may or may not be on disk
    } else if (freeing) {
      // The entries say "zero" (visible to lookups since the commit): the old clusters are free.
      // Their free sequence orders them after every data I/O that may still use the old mapping
      // and before the next flush (Reusable).
      const uint64_t seq = ++free_seq_;
      stats_.clusters_freed += nclusters;
      lock.Release();
      // The host range only holds space now. A failed punch leaves it allocated on the host (the
      // clusters are free all the same); the request reports the error.
      r = co_await file_.WriteZeroes(freed_host, nclusters * cs, block::ZeroFlags::kMayUnmap);
      lock = co_await table_lock_.Lock();
      AddFree(freed_host, nclusters, seq);
    }
    if (freeing) --frees_running_;
    co_return r;
  }
  lock = co_await table_lock_.Lock();
  // No entry points at the reserved clusters: give them back.
  if (!zero_entries) ReleaseReservation(host, host + nclusters * cs);
  if (freeing) --frees_running_;
  FinishInFlight(&run);
  co_return r;
}

coro::Task<Result<void>> QedDriver::FillPadding(const Lookup& lk, uint64_t guest_pos,
                                                IoBuffer& buf) {
  // A zero cluster's untouched bytes stay zeros: they must not be copied from the backing file
  // (QEMU does, bug Q3). Unallocated clusters take the backing file's bytes (zeros past its end).
  if (lk.kind == ClusterKind::kZero || !backing_) {
    std::fill_n(buf.data(), buf.size(), std::byte{0});
    co_return Ok();
  }
  co_return co_await ReadBacking(guest_pos, IoVector(buf), DebugEvent::kCowRead);
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
  // The write carries kWriteData; a write with copy-on-write padding announces kCowWrite first.
  if (head != 0 || tail != 0) file_.node().Annotate(DebugEvent::kCowWrite);
  // No flush here: with a backing file the flush of step 3 is issued once per L2 batch (or per
  // new table) after the data writes, before any entry refers to them.
  co_return co_await file_.Write(host, v, DebugEvent::kWriteData);
}

coro::Task<Result<void>> QedDriver::CreateL2(CoMutex::Guard& lock, uint64_t pos, uint64_t n,
                                             uint64_t first_value, bool zero_entries) {
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  const uint64_t idx = geo_.l2_index(pos);
  // A new L2 table goes after the data clusters. It is written whole and flushed before L1
  // points at it, so L1 never references a half-written table whose garbage would read as
  // cluster offsets (the flush also makes the data durable: step 3 with a backing file).
  const uint64_t l1i = geo_.l1_index(pos);
  Table table(geo_.table_nelems);
  for (uint64_t i = 0; i < n; ++i) {
    table.Set(idx + i, zero_entries ? kZeroClusterEntry : first_value + i * geo_.cluster_size);
  }
  const uint64_t l2_off = file_size_;
  file_size_ += geo_.table_bytes;
  fresh_from_ = std::max(fresh_from_, file_size_);
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
    leaks_unresolved_ = true;
    l1_.Set(l1i, 0);  // leak the table rather than trust an entry of unknown durability
    l2_cache_.Erase(l2_off);
    ++l2_generation_;
  }
  co_return r;
}

coro::Task<Result<void>> QedDriver::CommitL2(PendingRun& run) {
  CoMutex::Guard lock = co_await table_lock_.Lock();
  l2_pending_.push_back(&run);
  // Group commit: whoever finds no committer at work takes every queued run as one batch; runs
  // queued meanwhile go into the next batch.
  while (!run.done) {
    if (l2_committing_) {
      co_await l2_commit_waiters_.Wait(lock);
      continue;
    }
    l2_committing_ = true;
    std::vector<PendingRun*> batch;
    batch.swap(l2_pending_);
    co_await CommitBatch(lock, batch);
    l2_committing_ = false;
    l2_commit_waiters_.WakeAll();
  }
  co_return std::move(run.result);
}

coro::Task<void> QedDriver::WriteSpan(L2Span& sp, coro::Join* join) {
  sp.result = co_await file_.Write(sp.head->l2.offset() + sp.start, IoVector(sp.buf),
                                   DebugEvent::kL2Update);
  ++stats_.l2_commit_writes;
  if (join != nullptr) join->Done();
}

coro::Task<void> QedDriver::CommitBatch(CoMutex::Guard& lock, std::vector<PendingRun*>& batch) {
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  ++stats_.l2_commit_batches;
  stats_.l2_commit_runs += batch.size();
  std::sort(batch.begin(), batch.end(), [](const PendingRun* a, const PendingRun* b) {
    if (a->l2.offset() != b->l2.offset()) return a->l2.offset() < b->l2.offset();
    return a->index < b->index;
  });
  auto value = [&](const PendingRun& r, uint64_t i) {
    return r.zero_entries ? kZeroClusterEntry : r.first_value + i * geo_.cluster_size;
  };

  using Span = L2Span;
  std::vector<Span> spans;
  const uint64_t gran = tables_->granule();
  // Entries of one table at most one granule apart go into one span (rewriting the granule in
  // between from the cache, which equals the disk): cheaper than a separate write. Wider gaps get
  // their own writes, issued concurrently (copying and writing whole tables would cost more).
  const uint64_t max_gap = gran;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const PendingRun& r = *batch[i];
    const uint64_t s = AlignDown(r.index * 8, gran);
    const uint64_t e = std::min(geo_.table_bytes, AlignUp((r.index + r.n) * 8, gran));
    if (!spans.empty() && spans.back().head->l2.offset() == r.l2.offset() &&
        s <= spans.back().end + max_gap) {
      spans.back().end = std::max(spans.back().end, e);
      spans.back().last = i + 1;
    } else {
      Span sp;
      sp.head = &r;
      sp.start = s;
      sp.end = e;
      sp.first = i;
      sp.last = i + 1;
      spans.push_back(std::move(sp));
    }
  }
  // The new entries go into copies of the touched granules; the cached tables stay unchanged
  // until the copies are on disk, so no lookup can use an entry before it is written. This is the
  // only writer of existing tables (new tables are written before they are linked, and a repair
  // waits for every in-flight run), so the copies cannot miss a concurrent change.
  for (Span& sp : spans) {
    const Table& table = sp.head->l2.table();
    sp.buf = IoBuffer(sp.end - sp.start);
    std::memcpy(sp.buf.data(), table.buffer().data() + sp.start, sp.end - sp.start);
    for (std::size_t i = sp.first; i < sp.last; ++i) {
      const PendingRun& r = *batch[i];
      for (uint64_t k = 0; k < r.n; ++k) {
        StoreLE64(sp.buf.data() + (r.index + k) * 8 - sp.start, value(r, k));
      }
    }
  }
  lock.Release();

  // Step 3: with a backing file, one flush makes the data of every run in the batch (all of it
  // written before the run was queued) durable before any of their entries is written.
  // Without a backing file the flush is needed only when a run reuses clusters: they may hold
  // another guest offset's bytes, which a crash must never show under the new entry.
  Result<void> flushed = Ok();
  if (backing_ ||
      std::any_of(batch.begin(), batch.end(), [](const PendingRun* r) { return r->reused; })) {
    flushed = co_await FlushFile();
  }
  // Step 4: the L2 entries. Each data write completed before its run was queued, so no entry
  // written here points at unwritten data.
  if (!flushed) {
    for (Span& sp : spans) sp.result = flushed;
  } else if (spans.size() == 1) {
    co_await WriteSpan(spans[0], nullptr);
  } else {
    coro::Join join;
    join.Add(spans.size());
    for (Span& sp : spans) coro::Spawn(WriteSpan(sp, &join));
    co_await join.Wait();
  }

  lock = co_await table_lock_.Lock();
  // Only now do the new entries become visible. A failed span leaves the cached table as it was
  // (what the disk most likely holds); its runs fail and their clusters leak.
  ++l2_generation_;  // readers that missed a table meanwhile must not insert an older copy
  for (Span& sp : spans) {
    for (std::size_t i = sp.first; i < sp.last; ++i) {
      PendingRun& r = *batch[i];
      if (sp.result) {
        Table& table = r.l2.table();
        for (uint64_t k = 0; k < r.n; ++k) table.Set(r.index + k, value(r, k));
      }
      r.result = sp.result;
      r.done = true;
    }
  }
  for (PendingRun* r : batch) FinishInFlight(r);
}

}  // namespace qedfuse::qed
