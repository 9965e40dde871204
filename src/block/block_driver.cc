// Default implementations of BlockDriver's optional data-path methods.
#include "qedfuse/block/block_driver.h"

#include <algorithm>

#include "qedfuse/base/macros.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::block {

coro::Task<Result<void>> BlockDriver::WriteZeroes(uint64_t offset, uint64_t len,
                                                  ZeroFlags /*flags*/) {
  // Chunks are a multiple of any power-of-two request_alignment up to 1 MiB, and the buffer is
  // 4 KiB aligned, so the child sees requests as valid as the caller's range.
  uint64_t chunk = std::min<uint64_t>({len, uint64_t{1} << 20, limits().max_transfer});
  if (chunk == 0) co_return Ok();
  IoBuffer zeros(chunk, /*zero=*/true);
  while (len > 0) {
    uint64_t n = std::min(len, chunk);
    QEDFUSE_CO_TRY(co_await Write(offset, IoVector(zeros.data(), n)));
    offset += n;
    len -= n;
  }
  co_return Ok();
}

coro::Task<Result<BlockStatus>> BlockDriver::GetStatus(uint64_t offset, uint64_t len) {
  BlockStatus st;
  st.length = len;
  st.data = true;
  st.present = true;
  st.offset = offset;
  co_return st;
}

coro::Task<Result<void>> BlockDriver::Truncate(uint64_t /*new_length*/) {
  co_return Unexpected(Errc::kNotSupported);
}

}  // namespace qedfuse::block
