// qed::QedDriver: the QED format driver (QEMU's block/qed.c), and its factory OpenQed().
//
// Architecture (see docs/qed-format.md §6, §7, §9, §10):
//  - The L1 table lives in memory; L2 tables go through a write-through L2Cache. table_lock_
//    guards every table and file_size_ but is never held across data I/O, so reads and in-place
//    writes run concurrently.
//  - Allocation turns (the allocation slot) are serialised: one request at a time owns the slot
//    (alloc_owner_); the others wait in FIFO order in alloc_waiters_ and redo their lookup when
//    woken. A run inside an existing L2 table holds the slot only while it reserves its clusters
//    (and sets NEED_CHECK): it registers the guest clusters as in flight (in_flight_), releases
//    the slot, writes its data concurrently with other runs, then queues its entries for the L2
//    committer, which writes the entries of every queued run in one batch (one write per span of
//    touched granules) and only then makes them visible in the cached tables. A request whose
//    run overlaps an in-flight run's guest clusters waits for it and looks up again. A run that
//    needs a new L2 table keeps the slot until its table and L1 entry are written.
//  - Crash ordering of an allocating run: NEED_CHECK set and flushed (no backing file) -> data
//    clusters (head/tail padding included) -> flush (backing file, or reused clusters) -> L2
//    entries (a new L2 table is written whole and flushed) -> L1 entry.
//  - Freeing (a zero write over whole allocated clusters): NEED_CHECK set and flushed -> the
//    L2 entries become 1 (zero clusters, through the L2 committer like an allocation) -> the
//    host range is punched -> the clusters join free_. An allocation inside an existing table
//    takes free clusters before growing the file, but only once the entry change that freed
//    them is durable (a flush completed after it) and no read or in-place write that may still
//    use the old mapping is in flight (otherwise a crash, or that I/O, could see one cluster
//    under two guest offsets). Free clusters are leaks on disk, so NEED_CHECK stays set while
//    any are left; Close() removes them by compaction (qed_compact.h), and so does the repair at
//    the open of a dirty image.
//  - One long-lived coroutine per read-write image (NeedCheckLoop) clears NEED_CHECK once
//    allocations have been quiet for OpenOptions::need_check_delay and no freed cluster is left;
//    Close() stops it, compacts, flushes and clears the flag.
// Everything runs on the event-loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "block/backing_chain.h"
#include "block/qed/qed_check.h"
#include "block/qed/qed_cluster.h"
#include "block/qed/qed_format.h"
#include "block/qed/qed_l2_cache.h"
#include "block/qed/qed_table.h"
#include "qedfuse/block/block_driver.h"
#include "qedfuse/block/child.h"
#include "qedfuse/block/options.h"
#include "qedfuse/coro/co_mutex.h"
#include "qedfuse/coro/co_queue.h"
#include "qedfuse/coro/co_timer.h"
#include "qedfuse/coro/gate.h"
#include "qedfuse/coro/join.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::qed {

// True if |first_bytes| (at least 4) start with the QED magic.
bool ProbeQed(std::span<const std::byte> first_bytes);

// Opens a QED image on top of the already-open protocol node |file|. Opens the backing chain
// through chain.open_backing. With a read-write open of a dirty image (and not for_check) it runs
// check-and-repair first and records the outcome in |report|.
coro::Task<absl::StatusOr<std::unique_ptr<block::BlockDriver>>> OpenQed(
    std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
    block::ChainContext& chain, block::OpenReport* report);

// Knobs that are not part of OpenOptions (benchmarks and tests).
struct QedTuning {
  uint64_t l2_cache_bytes = 32u << 20;  // byte budget of the L2 cache
  std::size_t l2_cache_min_entries = 8;
  std::size_t l2_cache_max_entries = 4096;
};

// One guest range's mapping, for `qedimg map` and tests.
struct QedMapping {
  ClusterKind kind = ClusterKind::kUnallocatedL1;
  uint64_t length = 0;
  uint64_t host_offset = 0;  // kFound only
};

class QedDriver final : public block::BlockDriver {
 public:
  // Like OpenQed(), returning the concrete type.
  static coro::Task<absl::StatusOr<std::unique_ptr<QedDriver>>> Open(
      std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
      block::ChainContext& chain, block::OpenReport* report, QedTuning tuning = {});

  ~QedDriver() override;
  QedDriver(const QedDriver&) = delete;
  QedDriver& operator=(const QedDriver&) = delete;

  // ---- BlockDriver ----
  std::string_view format_name() const override { return "qed"; }
  // request_alignment = max(512, file's), max_transfer = 16 MiB.
  block::BlockLimits limits() const override;
  uint64_t length() const override { return header_.image_size; }
  bool read_only() const override { return read_only_; }
  coro::Task<Result<void>> Read(uint64_t offset, block::IoVector iov) override;
  coro::Task<Result<void>> Write(uint64_t offset, block::IoVector iov) override;
  // Whole clusters become zero entries (allocated ones are freed: see above), whatever |flags|
  // say; parts of allocated clusters are zeroed in place (punched with kMayUnmap); parts of
  // unallocated clusters that do not already read as zeros get ordinary writes of zeros.
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len,
                                       block::ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<block::BlockStatus>> GetStatus(uint64_t offset, uint64_t len) override;
  // Grow only (rewrites image_size in the header, then flushes). Shrinking: kNotSupported;
  // not a multiple of 512 or above the geometry's maximum: kOutOfRange.
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  uint64_t AllocatedBytes() const override { return file_.AllocatedBytes(); }
  // Stops the need-check coroutine, flushes, clears NEED_CHECK (unless the image is known to be
  // corrupt), writes the 64-byte header, flushes, then closes the backing chain and the file.
  coro::Task<absl::Status> Close() override;

  // ---- Introspection (qedimg info/map, tests) ----
  const Header& header() const noexcept { return header_; }
  const Geometry& geometry() const noexcept { return geo_; }
  // In-memory end of the file (cluster-rounded at open, grown by allocations).
  uint64_t file_size() const noexcept { return file_size_; }
  block::BlockDriver& file() noexcept { return file_.node(); }
  // The backing chain's top node, or nullptr.
  block::BlockDriver* backing() noexcept { return backing_ ? &backing_->node() : nullptr; }
  // The name as stored in the header ("" without backing file) and as resolved for opening.
  const std::string& backing_filename() const noexcept { return backing_name_; }
  const std::string& backing_path() const noexcept { return backing_path_; }
  const Table& l1_table() const noexcept { return l1_; }
  const L2Cache& l2_cache() const noexcept { return l2_cache_; }
  // True when NEED_CHECK was found set and no clean check has cleared it since (the image is
  // suspect: Close() leaves the flag set).
  bool suspect() const noexcept { return suspect_; }
  // Clusters freed (or given back by failed allocations) and not reused yet: leaks on disk until
  // reused or compacted at close.
  uint64_t free_clusters() const noexcept {
    uint64_t n = 0;
    for (const FreeExtent& e : free_) n += e.n;
    return n;
  }
  // The mapping of the run starting at |offset| (at most |len| bytes).
  coro::Task<Result<QedMapping>> Map(uint64_t offset, uint64_t len);

  // Consistency check of the open image (waits for allocations to finish, blocks them while it
  // runs). With |repair|, invalid entries are cleared; when the result is clean (no corruptions,
  // no check errors) NEED_CHECK is cleared too.
  coro::Task<Result<CheckReport>> Check(bool repair);

  struct Stats {
    uint64_t allocating_runs = 0;
    uint64_t clusters_allocated = 0;
    uint64_t l2_tables_allocated = 0;
    uint64_t need_check_sets = 0;
    uint64_t need_check_clears = 0;  // by the timer
    uint64_t alloc_waits = 0;        // times a request queued for allocation
    uint64_t conflict_waits = 0;     // times a run waited for an overlapping in-flight run
    uint64_t l2_commit_batches = 0;  // L2 committer batches (existing tables)
    uint64_t l2_commit_runs = 0;     // runs committed by them
    uint64_t l2_commit_writes = 0;   // table writes issued by them
    uint64_t clusters_freed = 0;     // by zero writes over allocated clusters
    uint64_t clusters_reused = 0;    // allocated from freed clusters
    uint64_t data_relocated = 0;     // by leak compaction (close, repairs)
    uint64_t tables_relocated = 0;
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  QedDriver(std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
            const Header& header, const Geometry& geo, QedTuning tuning);

  struct Lookup {
    ClusterKind kind = ClusterKind::kUnallocatedL1;
    uint64_t host_offset = 0;
    uint64_t len = 0;
    L2Ref l2;  // the table, unless kind == kUnallocatedL1
  };

  // ---- qed_driver.cc ----
  coro::Task<absl::Status> OpenInternal(const block::OpenOptions& options,
                                        block::ChainContext& chain, block::OpenReport* report);
  EntryValidator Validator() const;
  // Records which pre-existing L1 entries are invalid against the current file size (at open
  // and after a repair); L2 tables are scanned the same way when first loaded (ScanNewL2).
  void ResetValidation();
  void ScanNewL2(uint64_t l2_offset, const Table& table);
  // Finds the run at |pos| (at most |len| bytes). |lock| must own table_lock_; it may be
  // released and re-taken while an L2 table is loaded.
  coro::Task<Result<Lookup>> FindCluster(coro::CoMutex::Guard& lock, uint64_t pos, uint64_t len);
  void ReportCorrupt(uint64_t entry_file_offset, uint64_t value, uint64_t guest_offset,
                     const char* what);
  // Reads guest range |pos| from the backing chain (zeros past its end or without backing); the
  // read carries |event|.
  coro::Task<Result<void>> ReadBacking(uint64_t pos, block::IoVector iov,
                                       block::Child::Event event = std::nullopt);
  // Header writes, serialised by header_lock_ and encoding header_ at write time.
  coro::Task<Result<void>> WriteHeader64(block::DebugEvent event);      // the 64 header bytes
  coro::Task<Result<void>> WriteHeaderSector(block::DebugEvent event);  // RMW of sector 0
  coro::Task<Result<void>> FlushFile();
  coro::Task<void> NeedCheckLoop(coro::Gate::Holder holder);
  coro::Task<void> ClearNeedCheckOnTimer();
  // With |fix_leaks| (and repair) leaks are compacted away; NEED_CHECK is cleared only if the
  // image then has neither corruptions nor leaks.
  coro::Task<Result<CheckReport>> RunCheck(bool repair, bool fix_leaks);

  // ---- qed_write.cc ----
  using RequestId = uint64_t;
  struct FreeExtent {
    uint64_t host = 0;  // file offset of the first cluster
    uint64_t n = 0;     // clusters
    uint64_t seq = 0;   // free_seq_ when its entries changed (0: never referenced)
  };
  // One write or zero-write request (|iov| is empty for zero writes), run by run.
  coro::Task<Result<void>> WriteRequest(uint64_t offset, uint64_t len, block::IoVector iov,
                                        bool zero, block::ZeroFlags flags);
  // The allocation slot, owned (like CoMutex::Guard owns a mutex) by one request at a time: the
  // owner may reserve clusters and link new tables. Releasing it, explicitly or by destruction,
  // hands it to the longest waiter.
  class AllocSlot {
   public:
    AllocSlot() noexcept = default;
    bool held() const noexcept { return d_ != nullptr; }
    void Release() noexcept { d_.reset(); }

   private:
    friend class QedDriver;
    explicit AllocSlot(QedDriver* d) noexcept : d_(d) {}
    struct Releaser {
      void operator()(QedDriver* d) const noexcept { d->ReleaseAllocSlot(); }
    };
    std::unique_ptr<QedDriver, Releaser> d_;  // move-only; releases when reset or destroyed
  };
  // Waits for this request's turn to allocate and puts the slot in |slot|. Returns true if it
  // had to wait (its lookup is stale). |lock| is held on entry and on return.
  coro::Task<bool> AcquireAllocSlot(coro::CoMutex::Guard& lock, RequestId id, AllocSlot& slot);
  void ReleaseAllocSlot();
  void HandOffAllocSlot();
  // Allocates the run |lk| at |pos| (|len| bytes): data clusters filled from |data| plus
  // padding, or (zero_entries) entries set to 1. Caller owns allocation and holds |lock|.
  coro::Task<Result<void>> AllocateRun(coro::CoMutex::Guard& lock, Lookup& lk, uint64_t pos,
                                       uint64_t len, block::IoVector data, bool zero_entries);
  // Allocates the run |lk| (inside an existing L2 table) at |pos|: reserves its clusters while
  // owning the slot, releases |slot|, writes the data and commits the entries through the L2
  // committer. |lock| is held on entry and on return.
  // An allocation may get fewer free clusters than it asked for: |len| is then shortened to the
  // bytes it covered. A kFound run with zero_entries frees its clusters.
  coro::Task<Result<void>> AllocateInTable(coro::CoMutex::Guard& lock, Lookup& lk, uint64_t pos,
                                           uint64_t& len, block::IoVector data, bool zero_entries,
                                           AllocSlot& slot);
  // Reserves up to |want| clusters: a reusable free extent (lowest first) or the file end.
  // Returns the host offset and sets |got| (>= 1). Caller owns the slot and holds the lock.
  // |reused| tells whether they may hold older bytes (see fresh_from_).
  uint64_t ReserveClusters(uint64_t want, uint64_t& got, bool& reused);
  // Adds freed clusters whose entry change became visible at free sequence |seq| (0: never
  // referenced, reusable at once).
  void AddFree(uint64_t host, uint64_t n, uint64_t seq);
  bool Reusable(const FreeExtent& e) const;
  coro::Task<Result<void>> SetNeedCheckForAllocation(coro::CoMutex::Guard& lock);
  coro::Task<Result<void>> WriteNewClusters(const Lookup& lk, uint64_t pos, uint64_t len,
                                            block::IoVector data, uint64_t host, uint64_t first,
                                            uint64_t nclusters);
  coro::Task<Result<void>> FillPadding(const Lookup& lk, uint64_t guest_pos, block::IoBuffer& buf);
  // Writes a new L2 table holding the entries of the |n| clusters at guest |pos| (whose table
  // does not exist yet), then links it from L1. Caller owns allocation and holds |lock|.
  coro::Task<Result<void>> CreateL2(coro::CoMutex::Guard& lock, uint64_t pos, uint64_t n,
                                    uint64_t first_value, bool zero_entries);

  // A run allocated inside an existing L2 table, from the reservation of its clusters until its
  // entries are committed (or it failed). Lives in the frame of the request that runs it.
  // Registers a read or in-place write that uses a kFound mapping (see data_io_).
  class DataIo {
   public:
    explicit DataIo(QedDriver& d) : d_(d), seq_(d.free_seq_) { ++d_.data_io_[seq_]; }
    ~DataIo();
    DataIo(const DataIo&) = delete;
    DataIo& operator=(const DataIo&) = delete;

   private:
    QedDriver& d_;
    uint64_t seq_;
  };

  struct PendingRun {
    uint64_t guest_first = 0;  // first guest byte of its first cluster
    uint64_t guest_end = 0;    // end of its last cluster
    L2Ref l2;                  // the table (pinned in the cache while the run is pending)
    uint64_t index = 0;        // first L2 index
    uint64_t n = 0;            // entries
    uint64_t first_value = 0;  // host offset of the first cluster, or kZeroClusterEntry for all
    bool zero_entries = false;
    bool reused = false;  // its clusters may hold older bytes: data flushed before the entries
    bool done = false;    // set by the committer, with |result|
    Result<void> result;
  };
  // True if [first, end) overlaps the clusters of an in-flight run.
  bool OverlapsInFlight(uint64_t first, uint64_t end) const;
  // Drops |run| from in_flight_, wakes conflict waiters, and arms the need-check timer when it
  // was the last allocation.
  void FinishInFlight(PendingRun* run);
  void MaybeArmNeedCheckTimer();
  // Queues |run| for the L2 committer and waits until its entries are committed (or failed).
  // Called without the table lock.
  coro::Task<Result<void>> CommitL2(PendingRun& run);
  // A granule-aligned byte range of one L2 table rewritten by the committer: a copy of the
  // cached bytes with the new entries of batch runs [first, last) applied.
  struct L2Span {
    const PendingRun* head = nullptr;  // its table
    uint64_t start = 0;
    uint64_t end = 0;
    std::size_t first = 0;
    std::size_t last = 0;
    block::IoBuffer buf;
    Result<void> result;
  };
  // Writes |sp|; then, with |join|, reports itself done there.
  coro::Task<void> WriteSpan(L2Span& sp, coro::Join* join);
  // The committer's work on one batch (|lock| held on entry and return, released around I/O).
  coro::Task<void> CommitBatch(coro::CoMutex::Guard& lock, std::vector<PendingRun*>& batch);
  // After a failed allocation that nothing links to: gives [begin, end) back to the file end if
  // it is still the end of the allocated area, else to the free clusters. Caller holds the lock.
  void ReleaseReservation(uint64_t begin, uint64_t end);

  // Members by the protocol that guards them. Everything runs on the event-loop thread; a
  // "lock" below is a CoMutex that is held across suspensions, not a thread lock.

  // ---- The graph and what is fixed at open (no lock: never changes afterwards) ----
  block::Child file_;                      // the image file
  std::unique_ptr<block::Child> backing_;  // the backing file's top node, if any
  std::string path_;
  std::string backing_name_;
  std::string backing_path_;
  Geometry geo_;
  bool read_only_;
  std::chrono::milliseconds need_check_delay_;
  std::unique_ptr<TableIo> tables_;

  // ---- Locks ----
  coro::CoMutex table_lock_;   // everything below up to the lifecycle group
  coro::CoMutex header_lock_;  // serialises header writes (each encodes header_ when it runs)

  // ---- Mapping state (table_lock_) ----
  Header header_;
  Table l1_;
  L2Cache l2_cache_;
  // Bumped whenever a table's contents change under a reference that a concurrent miss could
  // not see (an entry update or its rollback, a dropped table, a repair). A lookup that read a
  // table while unlocked inserts it only if this did not move, so a slow read can never put a
  // copy older than an update (whose table was evicted meanwhile) back into the cache.
  uint64_t l2_generation_ = 0;
  uint64_t file_size_ = 0;  // in-memory end of the allocated area
  // Entries that pointed past the end of the file when the image was opened stay invalid after
  // the file grows (otherwise they would alias clusters allocated since).
  uint64_t validated_file_size_ = 0;
  absl::flat_hash_set<uint64_t> bad_l1_;          // L1 indices
  absl::flat_hash_set<uint64_t> scanned_l2_;      // pre-existing tables already scanned
  absl::flat_hash_set<uint64_t> bad_l2_entries_;  // file offsets of L2 entries
  absl::flat_hash_set<uint64_t> reported_corrupt_;

  // ---- Allocation protocol (table_lock_): slot -> reserve -> in flight -> data -> commit
  // batch -> publish (QEMU's allocating_acb / allocating_write_reqs) ----
  RequestId next_request_id_ = 1;
  RequestId alloc_owner_ = 0;          // 0: nobody owns the slot (see AllocSlot)
  std::deque<RequestId> alloc_queue_;  // waiters, in the same FIFO order as alloc_waiters_
  coro::CoQueue alloc_waiters_;
  bool alloc_plugged_ = false;           // the need-check coroutine is clearing the flag
  std::vector<PendingRun*> in_flight_;   // runs reserved and not yet committed (or failed)
  coro::CoQueue in_flight_waiters_;      // requests waiting for an in-flight run to finish
  std::vector<PendingRun*> l2_pending_;  // runs whose data is written, waiting to be committed
  bool l2_committing_ = false;           // a committer is working on a batch
  coro::CoQueue l2_commit_waiters_;

  // ---- Free clusters and their reuse (table_lock_) ----
  // Clusters from here on have never held data (the highest end the file has had, never
  // lowered). A run reserving clusters below it, or from free_, makes its data durable before
  // its entries are written, backing file or not.
  uint64_t fresh_from_ = 0;
  // A released reservation may have left bytes past file_size_ (a write that failed halfway, or
  // data whose L2 table write failed): Close() cuts the file back to file_size_.
  bool trim_at_close_ = false;
  // Free clusters: freed by zero writes, or reserved by a failed allocation that nothing links
  // to. Reusable per Reusable(); all of them are leaks on disk until reused or compacted.
  std::vector<FreeExtent> free_;
  uint64_t free_seq_ = 0;     // bumped each time freed entries have become visible
  uint64_t durable_seq_ = 0;  // frees up to this sequence are durable (a flush completed after)
  // Reads and in-place writes in flight through a kFound lookup, by the free_seq_ at their
  // lookup: a free with a higher sequence waits until they are done (they may use the old
  // mapping).
  std::map<uint64_t, uint32_t> data_io_;
  // An entry write failed: clusters may have leaked where the driver cannot tell. Keeps
  // NEED_CHECK set and makes Close() compact.
  bool leaks_unresolved_ = false;
  int frees_running_ = 0;  // freeing runs between reservation and AddFree (or failure)

  // ---- Lifecycle: NEED_CHECK clearing and Close() ----
  coro::CoTimer need_check_timer_;
  coro::Gate loop_gate_;  // held by NeedCheckLoop while it runs
  bool loop_started_ = false;
  bool suspect_ = false;  // NEED_CHECK was found set and no clean check has cleared it
  bool closing_ = false;
  bool closed_ = false;
  bool close_started_ = false;  // a second, concurrent Close() waits for the first
  coro::Join close_join_;       // 1 while the first Close() runs
  absl::Status close_status_;

  Stats stats_;
};

}  // namespace qedfuse::qed
