// Table transfer between memory and the image file (see qed_table.h).
#include "block/qed/qed_table.h"

#include <algorithm>

#include "qedfuse/base/align.h"
#include "qedfuse/base/macros.h"

namespace qedfuse::qed {

std::vector<uint64_t> Table::ToVector() const {
  std::vector<uint64_t> v(nelems_);
  for (uint64_t i = 0; i < nelems_; ++i) v[i] = Get(i);
  return v;
}

void Table::FromVector(const std::vector<uint64_t>& v) {
  for (uint64_t i = 0; i < nelems_ && i < v.size(); ++i) Set(i, v[i]);
}

coro::Task<Result<void>> ReadChild(block::BlockDriver& child, uint64_t offset,
                                   block::IoVector iov) {
  const uint64_t max = std::max<uint64_t>(child.limits().max_transfer, 4096);
  for (uint64_t done = 0; done < iov.size();) {
    uint64_t n = std::min<uint64_t>(max, iov.size() - done);
    QEDFUSE_CO_TRY(co_await child.Read(offset + done, iov.Slice(done, n)));
    done += n;
  }
  co_return Ok();
}

coro::Task<Result<void>> WriteChild(block::BlockDriver& child, uint64_t offset,
                                    block::IoVector iov) {
  const uint64_t max = std::max<uint64_t>(child.limits().max_transfer, 4096);
  for (uint64_t done = 0; done < iov.size();) {
    uint64_t n = std::min<uint64_t>(max, iov.size() - done);
    QEDFUSE_CO_TRY(co_await child.Write(offset + done, iov.Slice(done, n)));
    done += n;
  }
  co_return Ok();
}

coro::Task<Result<void>> WriteZeroesChild(block::BlockDriver& child, uint64_t offset, uint64_t len,
                                          block::ZeroFlags flags) {
  const uint64_t max = std::max<uint64_t>(child.limits().max_transfer, 4096);
  for (uint64_t done = 0; done < len;) {
    uint64_t n = std::min<uint64_t>(max, len - done);
    QEDFUSE_CO_TRY(co_await child.WriteZeroes(offset + done, n, flags));
    done += n;
  }
  co_return Ok();
}

TableIo::TableIo(block::BlockDriver& file, const Geometry& geo)
    : file_(file), table_bytes_(geo.table_bytes) {
  block::BlockLimits l = file.limits();
  uint64_t g = std::max<uint64_t>({512, l.request_alignment, l.memory_alignment});
  granule_ = std::min<uint64_t>(std::bit_ceil(g), table_bytes_);
}

coro::Task<Result<void>> TableIo::Read(uint64_t offset, Table& table, block::DebugEvent event) {
  file_.Annotate(event);
  co_return co_await ReadChild(file_, offset, block::IoVector(table.buffer()));
}

coro::Task<Result<void>> TableIo::Write(uint64_t offset, const Table& table,
                                        block::DebugEvent event) {
  // Writing never modifies the buffer; IoVector just has no const flavour.
  auto* p = const_cast<std::byte*>(table.buffer().data());
  file_.Annotate(event);
  co_return co_await WriteChild(file_, offset, block::IoVector(p, table.bytes()));
}

coro::Task<Result<void>> TableIo::WriteEntries(uint64_t offset, const Table& table, uint64_t first,
                                               uint64_t n, block::DebugEvent event) {
  uint64_t start = AlignDown(first * 8, granule_);
  uint64_t end = std::min(table_bytes_, AlignUp((first + n) * 8, granule_));
  auto* p = const_cast<std::byte*>(table.buffer().data());
  file_.Annotate(event);
  co_return co_await WriteChild(file_, offset + start, block::IoVector(p + start, end - start));
}

}  // namespace qedfuse::qed
