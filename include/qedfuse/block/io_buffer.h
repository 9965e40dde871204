// block::IoBuffer: an owned, 4 KiB-aligned byte buffer (usable for O_DIRECT I/O).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>
#include <vector>

#include "qedfuse/base/align.h"

namespace qedfuse::block {

namespace io_buffer_internal {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kRecycle = false;  // let ASan see every allocation and free
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kRecycle = false;
#else
inline constexpr bool kRecycle = true;
#endif
#else
inline constexpr bool kRecycle = true;
#endif

// Buffers are recycled per thread in power-of-two classes from 4 KiB to 4 MiB.
//  - Large ones (request payloads, cluster I/O): a fresh buffer of that size is mmapped (or carved
//    from a heap that glibc then trims), so every request page-faulted it in again: about half
//    the daemon's CPU time on 1 MiB requests. Keeping them resident in the heap instead fragments
//    it (4 KiB-aligned allocations pad every chunk), to 150+ MiB after a few GiB of writes.
//  - Small ones (4 KiB reads, table granules, padding): aligned_alloc/free cost about 13% of the
//    daemon's instructions per 4 KiB read.
// The cache keeps at most DepthOf(class) buffers per class and thread (more of the small ones,
// whose memory is negligible); everything beyond is freed at once.
inline constexpr std::size_t kMinClassBytes = std::size_t{4} << 10;
inline constexpr int kClasses = 11;
inline constexpr std::size_t kSmallClassBytes = std::size_t{64} << 10;

inline constexpr std::size_t DepthOf(int c) noexcept {
  return (kMinClassBytes << c) <= kSmallClassBytes ? 64 : 16;
}

// The class of a buffer of |bytes|, or -1 when it is not recycled.
inline int ClassOf(std::size_t bytes) noexcept {
  if (!kRecycle || bytes > (kMinClassBytes << (kClasses - 1))) return -1;
  if (bytes <= kMinClassBytes) return 0;
  // Smallest c with bytes <= kMinClassBytes << c.
  return static_cast<int>(std::bit_width((bytes - 1) / kMinClassBytes));
}

struct Cache {
  std::array<std::vector<void*>, kClasses> free;
  ~Cache() {
    for (auto& list : free) {
      for (void* p : list) std::free(p);
    }
  }
};

inline Cache& ThreadCache() {
  thread_local Cache cache;
  return cache;
}

inline void* Allocate(std::size_t rounded, std::size_t alignment) {
  const int c = ClassOf(rounded);
  if (c < 0) return std::aligned_alloc(alignment, rounded);
  std::vector<void*>& list = ThreadCache().free[c];
  if (!list.empty()) {
    void* p = list.back();
    list.pop_back();
    return p;
  }
  return std::aligned_alloc(alignment, kMinClassBytes << c);
}

inline void Release(void* p, std::size_t rounded) noexcept {
  if (p == nullptr) return;
  const int c = ClassOf(rounded);
  if (c >= 0) {
    std::vector<void*>& list = ThreadCache().free[c];
    if (list.size() < DepthOf(c)) {
      try {
        list.push_back(p);
        return;
      } catch (...) {  // no room to remember it: free it instead
      }
    }
  }
  std::free(p);
}

}  // namespace io_buffer_internal

class IoBuffer {
 public:
  static constexpr std::size_t kAlignment = 4096;

  IoBuffer() noexcept = default;
  // Allocates |size| bytes; contents are uninitialised unless |zero| is set.
  explicit IoBuffer(std::size_t size, bool zero = false) : size_(size) {
    if (size == 0) return;
    data_ = static_cast<std::byte*>(io_buffer_internal::Allocate(Rounded(size), kAlignment));
    if (data_ == nullptr) throw std::bad_alloc();
    if (zero) std::memset(data_, 0, size);
  }
  IoBuffer(IoBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  IoBuffer& operator=(IoBuffer&& o) noexcept {
    if (this != &o) {
      io_buffer_internal::Release(data_, Rounded(size_));
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  ~IoBuffer() { io_buffer_internal::Release(data_, Rounded(size_)); }

  std::byte* data() noexcept { return data_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> span() noexcept { return {data_, size_}; }
  std::span<const std::byte> span() const noexcept { return {data_, size_}; }

 private:
  static std::size_t Rounded(std::size_t size) noexcept { return AlignUp(size, kAlignment); }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace qedfuse::block
