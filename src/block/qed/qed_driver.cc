// QedDriver: open, close, reads, block status, flush, resize, the consistency check of an open
// image and the need-check coroutine. The write path (in place, allocating, zero writes) is in
// qed_write.cc. See qed_driver.h for the locking and ordering rules.
#include "block/qed/qed_driver.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/log.h"
#include "qedfuse/base/macros.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::qed {

using block::DebugEvent;
using block::IoBuffer;
using block::IoVector;
using coro::CoMutex;

namespace {

constexpr uint64_t kMaxTransfer = 16u << 20;

// Marks an error that already names the image it happened in: images further up the backing
// chain pass it on unchanged (one context, not one per level of a deep chain).
constexpr absl::string_view kNamedPayload = "qedfuse.dev/image-named";

absl::Status Annotated(const absl::Status& s, std::string_view context) {
  if (s.GetPayload(kNamedPayload)) return s;
  return absl::Status(s.code(), absl::StrCat(std::string(context), ": ", std::string(s.message())));
}

}  // namespace

bool ProbeQed(std::span<const std::byte> first_bytes) {
  if (first_bytes.size() < 4) return false;
  uint32_t magic = 0;
  for (int i = 3; i >= 0; --i) magic = (magic << 8) | static_cast<uint8_t>(first_bytes[i]);
  return magic == kMagic;
}

coro::Task<absl::StatusOr<std::unique_ptr<block::BlockDriver>>> OpenQed(
    std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
    block::ChainContext& chain, block::OpenReport* report) {
  absl::StatusOr<std::unique_ptr<QedDriver>> d =
      co_await QedDriver::Open(std::move(file), options, chain, report);
  if (!d.ok()) co_return d.status();
  co_return std::unique_ptr<block::BlockDriver>(std::move(*d));
}

QedDriver::QedDriver(std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
                     const Header& header, const Geometry& geo, QedTuning tuning)
    : file_(std::move(file)),
      path_(options.path),
      geo_(geo),
      read_only_(options.read_only || file_.read_only()),
      need_check_delay_(options.need_check_delay),
      tables_(std::make_unique<TableIo>(file_, geo_)),
      header_(header),
      l2_cache_(L2Cache::CapacityFor(geo.table_bytes, tuning.l2_cache_bytes,
                                     tuning.l2_cache_min_entries, tuning.l2_cache_max_entries)) {}

QedDriver::~QedDriver() {
  if (loop_started_ && loop_gate_.count() > 0) {
    // Close() was not called. The need-check coroutine must not outlive the driver: stop it and
    // drive the loop until it has finished.
    Log(LogLevel::kError, absl::StrCat(path_, ": QED driver destroyed without Close()"));
    need_check_timer_.Close();
    while (loop_gate_.count() > 0 && coro::EventLoop::Current().RunOne() != 0) {
    }
  }
}

coro::Task<absl::StatusOr<std::unique_ptr<QedDriver>>> QedDriver::Open(
    std::unique_ptr<block::BlockDriver> file, const block::OpenOptions& options,
    block::ChainContext& chain, block::OpenReport* report, QedTuning tuning) {
  if (!file) co_return absl::InvalidArgumentError("qed: no file to open");
  // A backing file is named the way its parent stored it (OpenOptions::name), once.
  const std::string where =
      options.name.empty() ? absl::StrCat("qed image '", options.path, "'") : options.name;
  const uint64_t flen = file->length();
  const uint64_t gran = std::max<uint64_t>(512, file->limits().request_alignment);
  if (flen < kHeaderBytes) {
    co_return absl::InvalidArgumentError(absl::StrFormat(
        "%s: file size %d is smaller than the %d-byte QED header", where, flen, kHeaderBytes));
  }
  uint64_t n = std::min(gran, flen);
  if (n % std::max<uint64_t>(1, file->limits().request_alignment) != 0) {
    co_return absl::InvalidArgumentError(
        absl::StrFormat("%s: file size %d is too small to read its header", where, flen));
  }
  IoBuffer hb(n, /*zero=*/true);
  Result<void> r = co_await file->Read(0, IoVector(hb));  // aligned, shorter than max_transfer
  if (!r) co_return ToStatus(r.error(), where + ": reading the header");
  const Header h = DecodeHeader(std::span<const std::byte, kHeaderBytes>(hb.data(), kHeaderBytes));
  absl::StatusOr<Geometry> geo = ValidateHeader(h, flen);
  if (!geo.ok()) co_return Annotated(geo.status(), where);
  // The header's 64 bytes are at offset 0 whatever header_size says. With header_size 0 the L1
  // table may start there too (QEMU accepts it): its first eight entries are header fields, so an
  // L2 table linked through one of them is unlinked again by the next header write, and an L1
  // write puts back the header as it was at open. Such an image is only ever read.
  if (!options.read_only && !file->read_only() && h.l1_table_offset < kHeaderBytes) {
    co_return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the L1 table at offset 0x%x overlaps the 64-byte header (header_size %d); the image "
        "can only be opened read-only",
        where, h.l1_table_offset, h.header_size));
  }

  std::unique_ptr<QedDriver> d(new QedDriver(std::move(file), options, h, *geo, tuning));
  absl::Status st = co_await d->OpenInternal(options, chain, report);
  if (!st.ok()) {
    // Release what was opened; the original error is what the caller needs to see.
    d->closing_ = true;
    d->closed_ = true;
    if (d->backing_) {
      absl::Status ignored = co_await d->backing_->Close();
      (void)ignored;
    }
    absl::Status ignored = co_await d->file_.Close();
    (void)ignored;
    absl::Status named = Annotated(st, where);
    named.SetPayload(kNamedPayload, absl::Cord("1"));
    co_return named;
  }
  co_return std::move(d);
}

coro::Task<absl::Status> QedDriver::OpenInternal(const block::OpenOptions& options,
                                                 block::ChainContext& chain,
                                                 block::OpenReport* report) {
  file_size_ = AlignDown(file_.length(), geo_.cluster_size);
  fresh_from_ = AlignUp(file_.length(), geo_.cluster_size);
  // The top image is the first file of the chain; backing files are opened read-only below it.
  const bool top = chain.names.size() <= 1;

  // Unknown autoclear bits are cleared on a read-write open before anything else happens.
  if (!read_only_ && (header_.autoclear_features & ~kKnownAutoclearFeatures) != 0) {
    header_.autoclear_features &= kKnownAutoclearFeatures;
    Result<void> r = co_await WriteHeader64(DebugEvent::kHeaderUpdate);
    if (r) r = co_await FlushFile();
    if (!r) co_return ToStatus(r.error(), "clearing unknown autoclear features");
  }

  l1_ = Table(geo_.table_nelems);
  {
    Result<void> r = co_await file_.Read(header_.l1_table_offset, IoVector(l1_.buffer()));
    if (!r) co_return ToStatus(r.error(), "reading the L1 table");
  }
  ResetValidation();

  if (header_.need_check()) {
    if (report != nullptr && top) report->was_dirty = true;
    if (!read_only_ && !options.for_check) {
      // The image was not closed cleanly: repair before accepting I/O. Corruptions that remain
      // keep NEED_CHECK set (suspect_); a check that could not read the image fails the open.
      // Clusters leaked by the crash (reserved and never linked, or freed) are compacted away,
      // so the repaired image checks clean (QEMU never fixes QED leaks).
      Result<CheckReport> rep = co_await RunCheck(/*repair=*/true, /*fix_leaks=*/true);
      if (!rep) co_return ToStatus(rep.error(), "consistency check of the dirty image");
      if (rep->check_errors != 0) {
        co_return absl::DataLossError(absl::StrFormat(
            "consistency check of the dirty image failed with %d I/O errors", rep->check_errors));
      }
      if (report != nullptr && top) {
        report->repaired = true;
        report->repair_summary =
            absl::StrFormat("fixed %d corruptions, %d corruptions remain, %d leaked clusters",
                            rep->corruptions_fixed, rep->corruptions, rep->leaks);
      }
    } else {
      suspect_ = true;
    }
  }

  if ((header_.features & kFeatureBackingFile) != 0) {
    const uint64_t end = uint64_t{header_.backing_filename_offset} + header_.backing_filename_size;
    const uint64_t gran = std::max<uint64_t>(512, file_.limits().request_alignment);
    const uint64_t n = std::min(AlignUp(std::max<uint64_t>(end, kHeaderBytes), gran),
                                AlignDown(file_.length(), gran));
    IoBuffer prefix(n, /*zero=*/true);
    Result<void> r = co_await file_.Read(0, IoVector(prefix));
    if (!r) co_return ToStatus(r.error(), "reading the backing file name");
    absl::StatusOr<std::string> name = BackingFileName(header_, prefix.span());
    if (!name.ok()) co_return name.status();
    backing_name_ = *name;
  }
  if (report != nullptr && !report->chain.empty())
    report->chain.back().backing_name = backing_name_;
  if (!backing_name_.empty() && options.backing == block::BackingPolicy::kNone) {
    // Not followed: the image reads as if it had no backing file (zeros where unallocated).
    if (report != nullptr && !report->chain.empty()) report->chain.back().backing_ignored = true;
  } else if (!backing_name_.empty()) {
    absl::StatusOr<std::string> resolved =
        block::ResolveBacking(path_, backing_name_, options.backing, chain);
    if (!resolved.ok()) co_return resolved.status();
    backing_path_ = *resolved;
    block::OpenOptions bo = options;
    bo.path = backing_path_;
    bo.format = (header_.features & kFeatureBackingFormatNoProbe) ? "raw" : "";
    bo.read_only = true;
    bo.for_check = false;
    // The opener's errors name the file this way, once: by the name stored here, plus the path
    // it was looked for at when that differs.
    bo.name = backing_path_ == backing_name_
                  ? absl::StrCat("backing file '", backing_name_, "'")
                  : absl::StrCat("backing file '", backing_name_, "' (", backing_path_, ")");
    absl::StatusOr<std::unique_ptr<block::BlockDriver>> b =
        co_await block::OpenBacking(bo, chain, report);
    if (!b.ok()) co_return b.status();
    backing_ = std::make_unique<block::Child>(std::move(*b));
  }

  if (!read_only_) {
    std::optional<coro::Gate::Holder> holder = loop_gate_.TryEnter();
    loop_started_ = true;
    coro::Spawn(NeedCheckLoop(std::move(*holder)));
  }
  co_return absl::OkStatus();
}

block::BlockLimits QedDriver::limits() const {
  const block::BlockLimits f = file_.limits();
  block::BlockLimits l;
  l.request_alignment = std::max<uint32_t>(512, f.request_alignment);
  l.memory_alignment = f.memory_alignment;
  l.max_transfer = kMaxTransfer;
  return l;
}

EntryValidator QedDriver::Validator() const {
  EntryValidator v;
  v.geo = &geo_;
  v.file_size = file_size_;
  v.l1_offset = header_.l1_table_offset;
  return v;
}

void QedDriver::ResetValidation() {
  validated_file_size_ = file_size_;
  bad_l1_.clear();
  scanned_l2_.clear();
  bad_l2_entries_.clear();
  const EntryValidator v = Validator();
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    const uint64_t e = l1_.Get(i);
    if (e != 0 && !v.ValidTable(e)) bad_l1_.insert(i);
  }
}

void QedDriver::ScanNewL2(uint64_t l2_offset, const Table& table) {
  // Tables allocated since the validation point hold only entries this driver wrote.
  if (l2_offset >= validated_file_size_ || !scanned_l2_.insert(l2_offset).second) return;
  EntryValidator v = Validator();
  v.file_size = validated_file_size_;
  for (uint64_t i = 0; i < table.size(); ++i) {
    const uint64_t e = table.Get(i);
    if (e > kZeroClusterEntry && !v.ValidCluster(e, l2_offset)) {
      bad_l2_entries_.insert(l2_offset + i * 8);
    }
  }
}

void QedDriver::ReportCorrupt(uint64_t entry_file_offset, uint64_t value, uint64_t guest_offset,
                              const char* what) {
  if (!reported_corrupt_.insert(entry_file_offset).second) return;
  Log(LogLevel::kError,
      absl::StrFormat("%s: corrupt image: %s entry at file offset 0x%x (guest offset %d) holds "
                      "invalid offset 0x%x",
                      path_, what, entry_file_offset, guest_offset, value));
}

coro::Task<Result<QedDriver::Lookup>> QedDriver::FindCluster(CoMutex::Guard& lock, uint64_t pos,
                                                             uint64_t len) {
  assert(lock.owns(table_lock_));  // precondition: the caller holds the table lock
  len = std::min(len, BytesToTableEnd(geo_, pos));
  const uint64_t l1i = geo_.l1_index(pos);
  if (l1i >= l1_.size()) co_return Unexpected(Errc::kOutOfRange);
  for (;;) {
    const uint64_t l2_off = l1_.Get(l1i);
    Lookup lk;
    if (l2_off == 0) {
      lk.kind = ClusterKind::kUnallocatedL1;
      lk.len = len;
      co_return std::move(lk);
    }
    if (bad_l1_.contains(l1i) || !Validator().ValidTable(l2_off)) {
      ReportCorrupt(header_.l1_table_offset + l1i * 8, l2_off, pos, "L1");
      co_return Unexpected(Errc::kCorruptImage);
    }
    L2Ref ref = l2_cache_.Find(l2_off);
    if (!ref) {
      Table t(geo_.table_nelems);
      const uint64_t gen = l2_generation_;
      lock.Release();
      Result<void> r = co_await tables_->Read(l2_off, t, DebugEvent::kL2Load);
      lock = co_await table_lock_.Lock();
      if (!r) co_return Unexpected(r.error());
      if (l1_.Get(l1i) != l2_off) continue;  // the L1 entry changed while unlocked
      // A table changed while unlocked: our copy may predate it. Look again (a hit uses the
      // cached copy, a miss reads the table anew).
      if (l2_generation_ != gen) continue;
      ScanNewL2(l2_off, t);
      ref = l2_cache_.Insert(l2_off, std::move(t));
    }
    Result<ClusterRun> run = ScanL2(ref.table(), l2_off, Validator(), pos, len, &bad_l2_entries_);
    if (!run) {
      const uint64_t idx = geo_.l2_index(pos);
      ReportCorrupt(l2_off + idx * 8, ref.table().Get(idx), pos, "L2");
      co_return Unexpected(run.error());
    }
    lk.kind = run->kind;
    lk.host_offset = run->host_offset;
    lk.len = run->len;
    lk.l2 = std::move(ref);
    co_return std::move(lk);
  }
}

coro::Task<Result<void>> QedDriver::ReadBacking(uint64_t pos, IoVector iov,
                                                block::Child::Event event) {
  // Past the end of the backing file (or without one) the image reads as zeros.
  if (!backing_) {
    iov.ZeroAll();
    co_return Ok();
  }
  co_return co_await backing_->Read(pos, iov, event);
}

coro::Task<Result<void>> QedDriver::Read(uint64_t offset, IoVector iov) {
  const uint64_t len = iov.size();
  uint64_t done = 0;
  CoMutex::Guard lock = co_await table_lock_.Lock();
  while (done < len) {
    Result<Lookup> lk = co_await FindCluster(lock, offset + done, len - done);
    if (!lk) co_return Unexpected(lk.error());
    lock.Release();  // data I/O runs unlocked, concurrently with other requests
    const uint64_t n = lk->len;
    IoVector part = iov.Slice(done, n);
    switch (lk->kind) {
      case ClusterKind::kFound: {
        DataIo io(*this);  // registered before anything suspends: see data_io_
        Result<void> r = co_await file_.Read(lk->host_offset, part, DebugEvent::kReadData);
        if (!r) co_return r;
        break;
      }
      case ClusterKind::kZero:
        part.ZeroAll();
        break;
      case ClusterKind::kUnallocatedL2:
      case ClusterKind::kUnallocatedL1: {
        Result<void> r = co_await ReadBacking(offset + done, part);
        if (!r) co_return r;
        break;
      }
    }
    done += n;
    if (done < len) lock = co_await table_lock_.Lock();
  }
  co_return Ok();
}

coro::Task<Result<block::BlockStatus>> QedDriver::GetStatus(uint64_t offset, uint64_t len) {
  CoMutex::Guard lock = co_await table_lock_.Lock();
  Result<Lookup> lk = co_await FindCluster(lock, offset, len);
  lock.Release();
  if (!lk) co_return Unexpected(lk.error());
  block::BlockStatus st;
  st.length = lk->len;
  switch (lk->kind) {
    case ClusterKind::kFound:
      st.data = true;
      st.present = true;
      st.offset = lk->host_offset;
      co_return st;
    case ClusterKind::kZero:
      st.zero = true;
      st.present = true;
      co_return st;
    case ClusterKind::kUnallocatedL2:
    case ClusterKind::kUnallocatedL1:
      break;
  }
  if (backing_ && offset < backing_->length()) {
    const uint64_t n = std::min(lk->len, backing_->length() - offset);
    Result<block::BlockStatus> b = co_await backing_->GetStatus(offset, n);
    if (!b) co_return Unexpected(b.error());
    b->length = std::min(std::max<uint64_t>(b->length, 1), n);
    b->depth += 1;
    co_return b;
  }
  // No backing file, or past its end: the range reads as zeros and no layer defines it.
  st.zero = true;
  st.present = false;
  co_return st;
}

coro::Task<Result<QedMapping>> QedDriver::Map(uint64_t offset, uint64_t len) {
  CoMutex::Guard lock = co_await table_lock_.Lock();
  Result<Lookup> lk = co_await FindCluster(lock, offset, len);
  if (!lk) co_return Unexpected(lk.error());
  QedMapping m;
  m.kind = lk->kind;
  m.length = lk->len;
  m.host_offset = lk->host_offset;
  co_return m;
}

coro::Task<Result<void>> QedDriver::FlushFile() {
  // Frees whose entries were written before this flush started are durable once it completes.
  const uint64_t mark = free_seq_;
  Result<void> r = co_await file_.Flush(DebugEvent::kFlush);
  if (r) durable_seq_ = std::max(durable_seq_, mark);
  co_return r;
}

// The L2 cache is write-through, so a flush only has to reach the file.
coro::Task<Result<void>> QedDriver::Flush() {
  if (read_only_) co_return Ok();
  co_return co_await FlushFile();
}

coro::Task<Result<void>> QedDriver::WriteHeader64(DebugEvent event) {
  CoMutex::Guard hl = co_await header_lock_.Lock();
  // The Child pads the 64 bytes to the file's alignment (read-modify-write).
  IoBuffer b(kHeaderBytes, /*zero=*/true);
  EncodeHeader(header_, std::span<std::byte, kHeaderBytes>(b.data(), kHeaderBytes));
  co_return co_await file_.Write(0, IoVector(b), event);
}

// QEMU rewrites NEED_CHECK with a read-modify-write of sector 0, which keeps a backing file
// name stored in that sector; we do the same with max(512, alignment) bytes.
coro::Task<Result<void>> QedDriver::WriteHeaderSector(DebugEvent event) {
  CoMutex::Guard hl = co_await header_lock_.Lock();
  const uint64_t n = std::max<uint64_t>(512, file_.limits().request_alignment);
  IoBuffer b(n, /*zero=*/true);
  QEDFUSE_CO_TRY(co_await file_.Read(0, IoVector(b)));
  EncodeHeader(header_, std::span<std::byte, kHeaderBytes>(b.data(), kHeaderBytes));
  co_return co_await file_.Write(0, IoVector(b), event);
}

coro::Task<Result<void>> QedDriver::Truncate(uint64_t new_length) {
  if (read_only_) co_return Unexpected(Errc::kReadOnly);
  if (closing_) co_return Unexpected(Errc::kClosed);
  if (new_length < header_.image_size) co_return Unexpected(Errc::kNotSupported);
  if (new_length == header_.image_size) co_return Ok();
  if (new_length % 512 != 0 || new_length > geo_.max_image_size) {
    co_return Unexpected(Errc::kOutOfRange);
  }
  // Only image_size changes: the L1 table has a fixed size and entries past the old end are 0
  // (images never shrink).
  const uint64_t old = header_.image_size;
  header_.image_size = new_length;
  Result<void> r = co_await WriteHeader64(DebugEvent::kHeaderUpdate);
  if (r) r = co_await FlushFile();
  if (!r) header_.image_size = old;
  co_return r;
}

coro::Task<Result<CheckReport>> QedDriver::RunCheck(bool repair, bool fix_leaks) {
  std::vector<uint64_t> l1 = l1_.ToVector();
  CheckOptions opts;
  opts.repair = repair;
  // CheckImage compacts only when no corruption remains and no I/O error happened.
  opts.fix_leaks = repair && fix_leaks;
  Result<CheckReport> rep = co_await CheckImage(file_, header_, geo_, l1, file_size_, opts);
  if (!rep) co_return rep;
  stats_.data_relocated += rep->data_relocated;
  stats_.tables_relocated += rep->tables_relocated;
  if (repair) {
    l1_.FromVector(l1);
    l2_cache_.Clear();  // repaired tables were rewritten on disk
    ++l2_generation_;
    if (opts.fix_leaks && rep->corruptions == 0 && rep->check_errors == 0) {
      // The free clusters were leaks on disk: compaction moved data over them or cut them off.
      free_.clear();
      leaks_unresolved_ = rep->leaks != 0;
    }
    if (rep->leaks_fixed != 0) {
      // Compaction cut the file: new clusters must be allocated at its real end.
      file_size_ = AlignDown(file_.length(), geo_.cluster_size);
    } else if (rep->file_size != 0 && rep->file_size < file_size_) {
      file_size_ = rep->file_size;
    }
    ResetValidation();
  }
  if (rep->corruptions != 0 || rep->check_errors != 0) {
    suspect_ = header_.need_check() || suspect_;
    co_return rep;
  }
  if (repair) {
    suspect_ = false;
    // Leaks left (compaction not asked for, or stuck) keep the flag set: the next repair
    // retries.
    const bool leaks_left = rep->leaks != 0 && (fix_leaks || !free_.empty());
    if (header_.need_check() && !leaks_left) {
      // Everything the check fixed must be durable before the flag says the image is clean.
      QEDFUSE_CO_TRY(co_await FlushFile());
      header_.features &= ~kFeatureNeedCheck;
      Result<void> r = co_await WriteHeader64(DebugEvent::kNeedCheckClear);
      if (r) r = co_await FlushFile();
      if (!r) {
        header_.features |= kFeatureNeedCheck;
        co_return Unexpected(r.error());
      }
    }
  }
  co_return rep;
}

coro::Task<Result<CheckReport>> QedDriver::Check(bool repair) {
  if (repair && read_only_) co_return Unexpected(Errc::kReadOnly);
  if (closing_) co_return Unexpected(Errc::kClosed);
  // Take the allocation slot (no allocating write runs during the check) and keep the table lock
  // (no lookup uses a table the repair is rewriting).
  CoMutex::Guard lock = co_await table_lock_.Lock();
  const RequestId id = next_request_id_++;
  AllocSlot slot;
  co_await AcquireAllocSlot(lock, id, slot);
  // Runs reserved before we took the slot may still be writing data or entries: a repair must not
  // rewrite (and drop from the cache) a table they are about to commit into.
  while (!in_flight_.empty()) co_await in_flight_waiters_.Wait(lock);
  // Leaks stay, as with qemu-img check -r (qedimg check must leave the same file); only close
  // and the repair at a dirty open compact them.
  Result<CheckReport> rep = co_await RunCheck(repair, /*fix_leaks=*/false);
  lock.Release();
  slot.Release();
  co_return rep;
}

coro::Task<void> QedDriver::NeedCheckLoop(coro::Gate::Holder holder) {
  for (;;) {
    coro::TimerEvent ev = co_await need_check_timer_.Wait();
    if (ev == coro::TimerEvent::kClosed) break;
    co_await ClearNeedCheckOnTimer();
  }
  holder.Leave();
}

// Allocations have been quiet for need_check_delay_: make everything durable, then clear the
// flag. Allocating writes are plugged meanwhile so none can slip in between the flush and the
// header write.
coro::Task<void> QedDriver::ClearNeedCheckOnTimer() {
  CoMutex::Guard lock = co_await table_lock_.Lock();
  if (alloc_owner_ != 0 || !in_flight_.empty() || alloc_plugged_ || !header_.need_check() ||
      suspect_ || closing_ || !free_.empty() || leaks_unresolved_ || frees_running_ != 0) {
    // An allocating write is active (it re-arms the timer when it finishes), or freed clusters
    // are leaks on disk until reused or compacted at close.
    co_return;
  }
  alloc_plugged_ = true;
  lock.Release();

  Result<void> r = co_await FlushFile();
  if (r) {
    header_.features &= ~kFeatureNeedCheck;
    r = co_await WriteHeaderSector(DebugEvent::kNeedCheckClear);
    if (r) {
      ++stats_.need_check_clears;
    } else {
      header_.features |= kFeatureNeedCheck;  // the on-disk state is unknown: keep it set
    }
  }
  lock = co_await table_lock_.Lock();
  alloc_plugged_ = false;
  HandOffAllocSlot();
  lock.Release();
  if (r) {
    Result<void> f = co_await FlushFile();
    (void)f;  // a failed flush leaves the flag set on disk, which is safe
  }
}

coro::Task<absl::Status> QedDriver::Close() {
  if (close_started_) {
    // A concurrent (or repeated) Close: wait for the first one and report its outcome.
    co_await close_join_.Wait();
    assert(closed_);
    co_return close_status_;
  }
  if (closed_) co_return absl::OkStatus();
  close_started_ = true;
  close_join_.Add();
  closing_ = true;
  if (loop_started_) {
    need_check_timer_.Close();
    co_await loop_gate_.Close();  // the need-check coroutine finishes its current step
  }
  absl::Status st;
  if (!read_only_) {
    Result<void> r = Ok();
    if (trim_at_close_ && !suspect_) {
      // Bytes a failed allocation left past the allocated area would read as leaked clusters.
      r = co_await file_.Truncate(file_size_);
    }
    if (r && !suspect_ && (!free_.empty() || leaks_unresolved_)) {
      // Freed clusters are leaks on disk: compact them away (NEED_CHECK is still set, so a crash
      // in the middle is repaired at the next open). A clean result clears the flag.
      Result<CheckReport> rep = co_await RunCheck(/*repair=*/true, /*fix_leaks=*/true);
      if (!rep) {
        r = Unexpected(rep.error());
      } else if (rep->check_errors != 0) {
        r = Unexpected(ErrnoCode(EIO));  // the image could not be read back: the close fails
      } else if (rep->corruptions != 0 || rep->leaks != 0) {
        Log(LogLevel::kWarning,
            absl::StrFormat("%s: %d leaked clusters and %d corruptions left at close; the next "
                            "read-write open repairs the image",
                            path_, rep->leaks, rep->corruptions));
      }
    }
    if (r) r = co_await FlushFile();
    if (r && header_.need_check() && !suspect_ && free_.empty() && !leaks_unresolved_) {
      header_.features &= ~kFeatureNeedCheck;
      r = co_await WriteHeader64(DebugEvent::kNeedCheckClear);
      if (r) r = co_await FlushFile();
    }
    if (!r) st = ToStatus(r.error(), absl::StrCat("closing qed image '", path_, "'"));
  }
  if (backing_) {
    absl::Status b = co_await backing_->Close();
    if (st.ok()) st = b;
  }
  absl::Status f = co_await file_.Close();
  if (st.ok()) st = f;
  close_status_ = st;
  closed_ = true;
  close_join_.Done();
  co_return st;
}

}  // namespace qedfuse::qed
