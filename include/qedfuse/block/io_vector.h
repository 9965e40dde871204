// block::IoVector: a non-owning scatter-gather list of byte ranges (QEMU's QEMUIOVector).
//
// The memory it points at must stay valid until the I/O that uses it completes; on the write
// path the request owns it (an IoBuffer held by the request coroutine), never the kernel's or
// libfuse's buffer, so a payload cannot change while the request is suspended.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "absl/container/inlined_vector.h"
#include "qedfuse/block/io_buffer.h"

namespace qedfuse::block {

class IoVector {
 public:
  using Segments = absl::InlinedVector<iovec, 4>;

  IoVector() = default;
  IoVector(std::span<std::byte> s) { Append(s.data(), s.size()); }  // NOLINT
  IoVector(void* p, std::size_t n) { Append(p, n); }
  IoVector(IoBuffer& b) { Append(b.data(), b.size()); }  // NOLINT

  void Append(void* p, std::size_t n) {
    if (n == 0) return;
    segs_.push_back(iovec{p, n});
    size_ += n;
  }
  void Append(const IoVector& other) {
    for (const iovec& v : other.segs_) Append(v.iov_base, v.iov_len);
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const Segments& segments() const noexcept { return segs_; }
  const iovec* iov() const noexcept { return segs_.data(); }
  int iovcnt() const noexcept { return static_cast<int>(segs_.size()); }

  // The sub-range [offset, offset + len), which must lie inside this vector.
  IoVector Slice(std::size_t offset, std::size_t len) const {
    IoVector out;
    ForEachPart(offset, len, [&](std::byte* p, std::size_t k, std::size_t) { out.Append(p, k); });
    return out;
  }

  // Copies bytes into the vector at |offset| from |src| (n bytes). Returns bytes copied.
  std::size_t CopyFrom(std::size_t offset, const void* src, std::size_t n) const {
    const auto* s = static_cast<const std::byte*>(src);
    return ForEachPart(offset, n, [&](std::byte* p, std::size_t k, std::size_t done) {
      std::memcpy(p, s + done, k);
    });
  }

  // Copies bytes out of the vector at |offset| into |dst| (n bytes). Returns bytes copied.
  std::size_t CopyTo(std::size_t offset, void* dst, std::size_t n) const {
    auto* d = static_cast<std::byte*>(dst);
    return ForEachPart(offset, n, [&](std::byte* p, std::size_t k, std::size_t done) {
      std::memcpy(d + done, p, k);
    });
  }

  // Zero-fills [offset, offset + n).
  void Zero(std::size_t offset, std::size_t n) const {
    ForEachPart(offset, n, [](std::byte* p, std::size_t k, std::size_t) { std::memset(p, 0, k); });
  }
  void ZeroAll() const { Zero(0, size_); }

  // True if every byte is zero.
  bool IsZero() const {
    for (const iovec& v : segs_) {
      const auto* p = static_cast<const unsigned char*>(v.iov_base);
      for (std::size_t i = 0; i < v.iov_len; ++i) {
        if (p[i] != 0) return false;
      }
    }
    return true;
  }

 private:
  // Calls fn(address, bytes, bytes before this part) for each piece of the segments that holds
  // bytes of [offset, offset + n), in order; returns the bytes visited (n if they lie inside).
  template <typename Fn>
  std::size_t ForEachPart(std::size_t offset, std::size_t n, Fn&& fn) const {
    std::size_t done = 0;
    for (const iovec& v : segs_) {
      if (done == n) break;
      if (offset >= v.iov_len) {
        offset -= v.iov_len;
        continue;
      }
      std::size_t k = v.iov_len - offset;
      if (k > n - done) k = n - done;
      fn(static_cast<std::byte*>(v.iov_base) + offset, k, done);
      done += k;
      offset = 0;
    }
    return done;
  }

  Segments segs_;
  std::size_t size_ = 0;
};

}  // namespace qedfuse::block
