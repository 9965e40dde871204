// Names of enumerators for messages, options and logs, kept in one table per enum.
//
// An enum that has names declares one `constexpr EnumName<E> kNames[] = {{E::kA, "a"}, ...}`
// and derives both directions from it: NameOf for printing, ValueOf for parsing an option
// value, so a name printed is always a name accepted. Where the enum has a count, the table's
// definition static_asserts that every enumerator is listed.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace qedfuse {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

// The name of |value| in |names|, or |unknown| when the table does not list it (a value cast
// from bad data).
template <typename E, std::size_t N>
constexpr const char* NameOf(const EnumName<E> (&names)[N], E value, const char* unknown) {
  for (const EnumName<E>& n : names) {
    if (n.value == value) return n.name;
  }
  return unknown;
}

// The enumerator called |name| in |names|, compared exactly; nullopt when there is none.
template <typename E, std::size_t N>
constexpr std::optional<E> ValueOf(const EnumName<E> (&names)[N], std::string_view name) {
  for (const EnumName<E>& n : names) {
    if (name == n.name) return n.value;
  }
  return std::nullopt;
}

}  // namespace qedfuse
