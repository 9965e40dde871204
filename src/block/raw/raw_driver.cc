// RawDriver: every call forwards to the protocol node below.
#include "block/raw/raw_driver.h"

namespace qedfuse::block {

coro::Task<Result<void>> RawDriver::Read(uint64_t offset, IoVector iov) {
  co_return co_await file_->Read(offset, iov);
}

coro::Task<Result<void>> RawDriver::Write(uint64_t offset, IoVector iov) {
  co_return co_await file_->Write(offset, iov);
}

coro::Task<Result<void>> RawDriver::WriteZeroes(uint64_t offset, uint64_t len, ZeroFlags flags) {
  co_return co_await file_->WriteZeroes(offset, len, flags);
}

coro::Task<Result<void>> RawDriver::Flush() { co_return co_await file_->Flush(); }

coro::Task<Result<BlockStatus>> RawDriver::GetStatus(uint64_t offset, uint64_t len) {
  co_return co_await file_->GetStatus(offset, len);
}

coro::Task<Result<void>> RawDriver::Truncate(uint64_t new_length) {
  co_return co_await file_->Truncate(new_length);
}

coro::Task<absl::Status> RawDriver::Close() { co_return co_await file_->Close(); }

}  // namespace qedfuse::block
