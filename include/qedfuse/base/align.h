// Rounding to a multiple: the one AlignUp/AlignDown of the project. |a| must be > 0 (any value,
// not only powers of two); AlignUp must not overflow (callers bound |v| first).
#pragma once

#include <cassert>
#include <cstdint>

namespace qedfuse {

constexpr uint64_t AlignDown(uint64_t v, uint64_t a) {
  assert(a > 0);
  return v / a * a;
}

constexpr uint64_t AlignUp(uint64_t v, uint64_t a) {
  assert(a > 0);
  return (v + a - 1) / a * a;
}

constexpr bool IsAligned(uint64_t v, uint64_t a) { return v % a == 0; }

}  // namespace qedfuse
