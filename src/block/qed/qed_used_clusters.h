// qed::UsedClusters: the paged "cluster is referenced" bitmap built by the consistency check
// and updated by leak compaction (qed_check.cc, qed_compact.cc).
//
// One 4 KiB page per 32768 clusters, allocated on first use: a dense 64 TiB image with 64 KiB
// clusters needs 128 MiB; a huge sparse file that refers to little costs little. Clusters at or
// past size() are ignored by Mark(); compaction grows size() when it parks a table past the end.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <map>
#include <memory>

namespace qedfuse::qed {

class UsedClusters {
 public:
  static constexpr uint64_t kPageBits = 1u << 15;  // clusters per page
  static constexpr uint64_t kPageWords = kPageBits / 64;

  explicit UsedClusters(uint64_t nclusters) : nclusters_(nclusters) {}

  uint64_t size() const { return nclusters_; }
  void Grow(uint64_t nclusters) { nclusters_ = std::max(nclusters_, nclusters); }

  // Marks |n| clusters from |first|; returns how many were already marked.
  uint64_t Mark(uint64_t first, uint64_t n) {
    uint64_t dups = 0;
    for (uint64_t c = first; c < first + n && c < nclusters_; ++c) {
      uint64_t& word = Word(c);
      const uint64_t mask = Bit(c);
      if (word & mask) {
        ++dups;
      } else {
        word |= mask;
        if (c >= counted_from_) ++count_;
        last_ = std::max(last_, c + 1);
      }
    }
    return dups;
  }

  // Clears |n| marked clusters from |first| (compaction moved what was there).
  void Unmark(uint64_t first, uint64_t n) {
    for (uint64_t c = first; c < first + n && c < nclusters_; ++c) {
      uint64_t& word = Word(c);
      assert((word & Bit(c)) != 0);
      word &= ~Bit(c);
      if (c >= counted_from_) --count_;
    }
    while (last_ > 0 && !IsMarked(last_ - 1)) --last_;
  }

  bool IsMarked(uint64_t c) const {
    auto it = pages_.find(c / kPageBits);
    if (it == pages_.end()) return false;
    const uint64_t bit = c % kPageBits;
    return (it->second[bit / 64] & (uint64_t{1} << (bit % 64))) != 0;
  }

  // Only marks at or after |first| are counted by count(); set before marking anything.
  void CountFrom(uint64_t first) { counted_from_ = first; }
  uint64_t count() const { return count_; }
  // One past the highest marked cluster (0 when nothing is marked).
  uint64_t end() const { return last_; }

  // Calls fn(first, n) for each maximal run of unmarked clusters in [from, size()).
  template <typename Fn>
  void ForEachUnmarkedRun(uint64_t from, Fn&& fn) const {
    uint64_t run_start = from;
    uint64_t pos = from;
    auto flush = [&](uint64_t until) {
      if (until > run_start) fn(run_start, until - run_start);
    };
    for (auto it = pages_.lower_bound(from / kPageBits); it != pages_.end(); ++it) {
      const uint64_t base = it->first * kPageBits;
      pos = std::max(pos, base);
      const uint64_t stop = std::min(base + kPageBits, nclusters_);
      while (pos < stop) {
        const uint64_t bit = pos - base;
        const uint64_t word = it->second[bit / 64];
        if (bit % 64 == 0 && pos + 64 <= stop && (word == 0 || word == ~uint64_t{0})) {
          if (word != 0) {  // 64 marked clusters end any run
            flush(pos);
            run_start = pos + 64;
          }
          pos += 64;
          continue;
        }
        if (word & (uint64_t{1} << (bit % 64))) {
          flush(pos);
          run_start = pos + 1;
        }
        ++pos;
      }
    }
    flush(nclusters_);
  }

 private:
  static uint64_t Bit(uint64_t c) { return uint64_t{1} << (c % kPageBits % 64); }
  uint64_t& Word(uint64_t c) {
    std::unique_ptr<uint64_t[]>& page = pages_[c / kPageBits];
    if (!page) page = std::make_unique<uint64_t[]>(kPageWords);
    return page[c % kPageBits / 64];
  }

  uint64_t nclusters_;
  uint64_t counted_from_ = 0;
  uint64_t count_ = 0;
  uint64_t last_ = 0;
  std::map<uint64_t, std::unique_ptr<uint64_t[]>> pages_;
};

}  // namespace qedfuse::qed
