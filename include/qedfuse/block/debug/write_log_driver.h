// block::WriteLog and block::WriteLogDriver: a recorder of the writes and flushes that pass
// through the driver graph, for crash-consistency testing in the manner of Linux's
// dm-log-writes. A test replays the log onto a copy of the image as it was when the image was
// opened, cut at a chosen point with unflushed writes dropped (tests/integration/crash_replay.py).
//
// Two WriteLogDriver filters usually share one WriteLog:
//  - a kImage filter over the top image's file node records every write, zero write and
//    truncate that reaches the file, each once it has completed, and every flush twice: when it
//    is issued (kImageFlushBegin) and when it has completed (kImageFlush). After a crash, every
//    image write recorded before the kImageFlushBegin of a completed flush is on disk; writes
//    recorded later may or may not be.
//  - a kGuest filter over the top format driver records what the guest was promised: completed
//    writes (with their data) and zero writes, and each flush as kGuestFlushBegin when it is
//    called and kGuestFlushDone when it has succeeded. Every guest write recorded before the
//    kGuestFlushBegin of a flush whose kGuestFlushDone precedes the crash must read back.
// Failed operations are not replayable: they are recorded as kIoError, and the replayer refuses
// a log that holds one. Everything runs on the event-loop thread, so the log is one ordered
// sequence.
//
// File format (all integers little-endian):
//   file header, 16 bytes:  "QEDFWLOG" | u32 version (1) | u32 header size (16)
//   record, 40-byte header: u32 magic 0x5243574c ("LWCR") | u16 type | u16 reserved (0)
//                           | u64 sequence number (0, 1, 2, ...) | u64 offset | u64 length
//                           | u64 payload bytes
//                           followed by the payload (the data of kImageWrite and kGuestWrite;
//                           empty for every other type).
//   kImageTruncate and kGuestTruncate carry the new length in |offset|. kIoError carries the
//   RecordType of the failed operation in |offset|. kEnd (length 0) is written when the image
//   file node is closed without a log error; a log without it is a prefix (kill -9, or a write
//   to the log failed).
// The stdio buffer is flushed after every flush record and at kEnd, so a killed daemon leaves a
// log that ends at (or after) its last completed flush.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "qedfuse/block/filter_driver.h"

namespace qedfuse::block {

enum class WriteLogRecord : uint16_t {
  kImageWrite = 1,
  kImageZero = 2,
  kImageTruncate = 3,
  kImageFlushBegin = 4,
  kImageFlush = 5,
  kIoError = 6,
  kGuestWrite = 16,
  kGuestZero = 17,
  kGuestTruncate = 18,
  kGuestFlushBegin = 19,
  kGuestFlushDone = 20,
  kEnd = 32,
};

inline constexpr char kWriteLogMagic[8] = {'Q', 'E', 'D', 'F', 'W', 'L', 'O', 'G'};
inline constexpr uint32_t kWriteLogVersion = 1;
inline constexpr uint32_t kWriteLogRecordMagic = 0x5243574c;

class WriteLog {
 public:
  // Creates (or truncates) |path| and writes the file header.
  static absl::StatusOr<std::shared_ptr<WriteLog>> Create(const std::string& path);
  ~WriteLog();
  WriteLog(const WriteLog&) = delete;
  WriteLog& operator=(const WriteLog&) = delete;

  // Appends one record; |data| (may be null) is its payload. Flush records and kEnd also push
  // the stdio buffer to the file. A failure is remembered (see status()); later records are
  // dropped.
  void Append(WriteLogRecord type, uint64_t offset, uint64_t length, const IoVector* data);
  // Writes kEnd unless an error happened, and closes the file. Returns the first error.
  absl::Status Finish();
  absl::Status status() const { return status_; }
  uint64_t records() const { return seq_; }
  const std::string& path() const { return path_; }

 private:
  WriteLog(std::string path, std::FILE* f) : path_(std::move(path)), file_(f) {}
  void Fail(const char* what, int err);

  std::string path_;
  std::FILE* file_;
  uint64_t seq_ = 0;
  absl::Status status_;
};

class WriteLogDriver final : public FilterDriver {
 public:
  enum class Role { kImage, kGuest };
  WriteLogDriver(std::unique_ptr<BlockDriver> child, std::shared_ptr<WriteLog> log, Role role);
  ~WriteLogDriver() override;

  // FilterDriver: the calls that change the image are recorded; reads and status pass through.
  coro::Task<Result<void>> Write(uint64_t offset, IoVector iov) override;
  coro::Task<Result<void>> WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) override;
  coro::Task<Result<void>> Flush() override;
  coro::Task<Result<void>> Truncate(uint64_t new_length) override;
  // kImage: closes the child, then finishes the log (kEnd) and reports a log error, if any.
  coro::Task<absl::Status> Close() override;

 private:
  // Appends the record of one completed operation: |image| or |guest| by role if it succeeded,
  // kIoError (naming that type) if it failed.
  void Record(bool ok, WriteLogRecord image, WriteLogRecord guest, uint64_t offset, uint64_t length,
              const IoVector* data);

  std::shared_ptr<WriteLog> log_;
  Role role_;
};

}  // namespace qedfuse::block
