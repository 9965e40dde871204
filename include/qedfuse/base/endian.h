// Little-endian loads and stores: the one byte codec of the project's on-disk formats (the QED
// header and tables, the write log). A load or store is one memcpy, plus a byte swap on a
// big-endian host, so tables can be read and written in place.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace qedfuse {

namespace endian_internal {

template <typename T>
constexpr T FromLE(T v) {
  if constexpr (std::endian::native == std::endian::big) {
    if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
    if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
    if constexpr (sizeof(T) == 8) return static_cast<T>(__builtin_bswap64(v));
  }
  return v;
}

template <typename T>
T Load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return FromLE(v);
}

template <typename T>
void Store(std::byte* p, T v) {
  v = FromLE(v);  // the swap is its own inverse
  std::memcpy(p, &v, sizeof v);
}

}  // namespace endian_internal

inline uint16_t LoadLE16(const std::byte* p) { return endian_internal::Load<uint16_t>(p); }
inline uint32_t LoadLE32(const std::byte* p) { return endian_internal::Load<uint32_t>(p); }
inline uint64_t LoadLE64(const std::byte* p) { return endian_internal::Load<uint64_t>(p); }
inline void StoreLE16(std::byte* p, uint16_t v) { endian_internal::Store(p, v); }
inline void StoreLE32(std::byte* p, uint32_t v) { endian_internal::Store(p, v); }
inline void StoreLE64(std::byte* p, uint64_t v) { endian_internal::Store(p, v); }

}  // namespace qedfuse
