// LRU, reference-pinning L2 table cache (see qed_l2_cache.h).
#include "block/qed/qed_l2_cache.h"

#include <algorithm>

namespace qedfuse::qed {

L2Cache::L2Cache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

std::size_t L2Cache::CapacityFor(uint64_t table_bytes, uint64_t budget_bytes,
                                 std::size_t min_entries, std::size_t max_entries) {
  uint64_t n = table_bytes == 0 ? max_entries : budget_bytes / table_bytes;
  return static_cast<std::size_t>(
      std::clamp<uint64_t>(n, std::max<std::size_t>(min_entries, 1), max_entries));
}

L2Ref L2Cache::Find(uint64_t offset) {
  auto it = map_.find(offset);
  if (it == map_.end()) {
    ++stats_.misses;
    return L2Ref();
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return L2Ref(*it->second);
}

L2Ref L2Cache::Insert(uint64_t offset, Table table) {
  auto it = map_.find(offset);
  if (it != map_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return L2Ref(*it->second);
  }
  auto e = std::make_shared<CachedL2>();
  e->offset = offset;
  e->table = std::move(table);
  lru_.push_front(e);
  map_.emplace(offset, lru_.begin());
  L2Ref ref(std::move(e));
  Evict();
  return ref;
}

void L2Cache::Evict() {
  auto it = lru_.end();
  while (map_.size() > capacity_ && it != lru_.begin()) {
    --it;
    if (it->use_count() > 1) continue;  // pinned by an L2Ref
    map_.erase((*it)->offset);
    it = lru_.erase(it);
    ++stats_.evictions;
  }
}

void L2Cache::Erase(uint64_t offset) {
  auto it = map_.find(offset);
  if (it == map_.end()) return;
  lru_.erase(it->second);
  map_.erase(it);
}

void L2Cache::Clear() {
  map_.clear();
  lru_.clear();
}

}  // namespace qedfuse::qed
