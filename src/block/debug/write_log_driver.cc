// WriteLog and WriteLogDriver: the recorder behind --debug-log-writes (see the header for the
// record format and what each record promises).
#include "qedfuse/block/debug/write_log_driver.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "qedfuse/base/endian.h"

namespace qedfuse::block {
namespace {

constexpr std::size_t kFileHeaderBytes = 16;
constexpr std::size_t kRecordHeaderBytes = 40;

}  // namespace

absl::StatusOr<std::shared_ptr<WriteLog>> WriteLog::Create(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wbe");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create write log '", path, "': ", std::strerror(errno)));
  }
  // Big buffer: the log is written on the event-loop thread with blocking stdio calls.
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  std::shared_ptr<WriteLog> log(new WriteLog(path, f));
  std::byte head[kFileHeaderBytes];
  std::memcpy(head, kWriteLogMagic, sizeof kWriteLogMagic);
  StoreLE32(head + 8, kWriteLogVersion);
  StoreLE32(head + 12, kFileHeaderBytes);
  if (std::fwrite(head, 1, sizeof head, f) != sizeof head || std::fflush(f) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write write log '", path, "': ", std::strerror(errno)));
  }
  return log;
}

WriteLog::~WriteLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void WriteLog::Fail(const char* what, int err) {
  if (status_.ok()) {
    status_ = absl::DataLossError(
        absl::StrCat("write log '", path_, "': ", what, ": ", std::strerror(err)));
  }
}

void WriteLog::Append(WriteLogRecord type, uint64_t offset, uint64_t length, const IoVector* data) {
  if (file_ == nullptr || !status_.ok()) return;
  const uint64_t payload = data != nullptr ? data->size() : 0;
  std::byte head[kRecordHeaderBytes];
  StoreLE32(head, kWriteLogRecordMagic);
  StoreLE16(head + 4, static_cast<uint16_t>(type));
  StoreLE16(head + 6, 0);
  StoreLE64(head + 8, seq_++);
  StoreLE64(head + 16, offset);
  StoreLE64(head + 24, length);
  StoreLE64(head + 32, payload);
  if (std::fwrite(head, 1, sizeof head, file_) != sizeof head) return Fail("write", errno);
  if (data != nullptr) {
    for (const iovec& v : data->segments()) {
      if (std::fwrite(v.iov_base, 1, v.iov_len, file_) != v.iov_len) return Fail("write", errno);
    }
  }
  if (type == WriteLogRecord::kImageFlush || type == WriteLogRecord::kGuestFlushDone ||
      type == WriteLogRecord::kEnd || type == WriteLogRecord::kIoError) {
    if (std::fflush(file_) != 0) return Fail("flush", errno);
  }
}

absl::Status WriteLog::Finish() {
  if (file_ == nullptr) return status_;
  if (status_.ok()) Append(WriteLogRecord::kEnd, 0, 0, nullptr);
  if (std::fclose(file_) != 0) Fail("close", errno);
  file_ = nullptr;
  return status_;
}

WriteLogDriver::WriteLogDriver(std::unique_ptr<BlockDriver> child, std::shared_ptr<WriteLog> log,
                               Role role)
    : FilterDriver(std::move(child)), log_(std::move(log)), role_(role) {}

WriteLogDriver::~WriteLogDriver() = default;

void WriteLogDriver::Record(bool ok, WriteLogRecord image, WriteLogRecord guest, uint64_t offset,
                            uint64_t length, const IoVector* data) {
  const WriteLogRecord type = role_ == Role::kImage ? image : guest;
  if (ok) {
    log_->Append(type, offset, length, data);
  } else {
    log_->Append(WriteLogRecord::kIoError, static_cast<uint64_t>(type), length, nullptr);
  }
}

// Each operation is recorded once it has completed: only then may the caller rely on it, and
// the payload is still the caller's (it must stay valid until the call returns).
coro::Task<Result<void>> WriteLogDriver::Write(uint64_t offset, IoVector iov) {
  Result<void> r = co_await FilterDriver::Write(offset, iov);
  Record(r.has_value(), WriteLogRecord::kImageWrite, WriteLogRecord::kGuestWrite, offset,
         iov.size(), &iov);
  co_return r;
}

coro::Task<Result<void>> WriteLogDriver::WriteZeroes(uint64_t offset, uint64_t len,
                                                     ZeroFlags flags) {
  Result<void> r = co_await FilterDriver::WriteZeroes(offset, len, flags);
  Record(r.has_value(), WriteLogRecord::kImageZero, WriteLogRecord::kGuestZero, offset, len,
         nullptr);
  co_return r;
}

coro::Task<Result<void>> WriteLogDriver::Flush() {
  Record(true, WriteLogRecord::kImageFlushBegin, WriteLogRecord::kGuestFlushBegin, 0, 0, nullptr);
  Result<void> r = co_await FilterDriver::Flush();
  Record(r.has_value(), WriteLogRecord::kImageFlush, WriteLogRecord::kGuestFlushDone, 0, 0,
         nullptr);
  co_return r;
}

coro::Task<Result<void>> WriteLogDriver::Truncate(uint64_t new_length) {
  Result<void> r = co_await FilterDriver::Truncate(new_length);
  Record(r.has_value(), WriteLogRecord::kImageTruncate, WriteLogRecord::kGuestTruncate, new_length,
         0, nullptr);
  co_return r;
}

coro::Task<absl::Status> WriteLogDriver::Close() {
  absl::Status closed = co_await FilterDriver::Close();
  if (role_ != Role::kImage) co_return closed;
  absl::Status logged = log_->Finish();
  if (!closed.ok()) co_return closed;
  co_return logged;
}

}  // namespace qedfuse::block
