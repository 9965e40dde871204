// Format table: qed (probed by magic) and raw (the fallback).
#include "block/graph/driver_registry.h"

#include <array>

#include "block/qed/qed_driver.h"
#include "block/raw/raw_driver.h"

namespace qedfuse::block {
namespace {

coro::Task<absl::StatusOr<std::unique_ptr<BlockDriver>>> OpenRaw(std::unique_ptr<BlockDriver> file,
                                                                 const OpenOptions& /*options*/,
                                                                 ChainContext& /*chain*/,
                                                                 OpenReport* /*report*/) {
  co_return std::make_unique<RawDriver>(std::move(file));
}

constexpr std::array<FormatInfo, 2> kFormats = {{
    {"qed", &qed::ProbeQed, &qed::OpenQed, /*has_metadata=*/true},
    {"raw", nullptr, &OpenRaw, /*has_metadata=*/false},
}};

}  // namespace

std::span<const FormatInfo> Formats() { return kFormats; }

const FormatInfo* FindFormat(std::string_view name) {
  for (const FormatInfo& f : kFormats) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const FormatInfo& ProbeFormat(std::span<const std::byte> head) {
  for (const FormatInfo& f : kFormats) {
    if (f.probe != nullptr && f.probe(head)) return f;
  }
  return *FindFormat("raw");
}

}  // namespace qedfuse::block
