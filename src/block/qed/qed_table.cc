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

TableIo::TableIo(block::Child& file, const Geometry& geo)
    : file_(file), table_bytes_(geo.table_bytes) {
  block::BlockLimits l = file.limits();
  uint64_t g = std::max<uint64_t>({512, l.request_alignment, l.memory_alignment});
  granule_ = std::min<uint64_t>(std::bit_ceil(g), table_bytes_);
}

coro::Task<Result<void>> TableIo::Read(uint64_t offset, Table& table, block::DebugEvent event) {
  co_return co_await file_.Read(offset, block::IoVector(table.buffer()), event);
}

coro::Task<Result<void>> TableIo::Write(uint64_t offset, const Table& table,
                                        block::DebugEvent event) {
  // Writing never modifies the buffer; IoVector just has no const flavour.
  auto* p = const_cast<std::byte*>(table.buffer().data());
  co_return co_await file_.Write(offset, block::IoVector(p, table.bytes()), event);
}

coro::Task<Result<void>> TableIo::WriteEntries(uint64_t offset, const Table& table, uint64_t first,
                                               uint64_t n, block::DebugEvent event) {
  uint64_t start = AlignDown(first * 8, granule_);
  uint64_t end = std::min(table_bytes_, AlignUp((first + n) * 8, granule_));
  auto* p = const_cast<std::byte*>(table.buffer().data());
  co_return co_await file_.Write(offset + start, block::IoVector(p + start, end - start), event);
}

}  // namespace qedfuse::qed
