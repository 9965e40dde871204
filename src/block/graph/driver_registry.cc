// Format table: qed (probed by magic) and raw (the fallback).
#include "block/graph/driver_registry.h"

#include <array>
#include <cstring>

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

std::string_view ForeignFormat(std::span<const std::byte> head) {
  struct Signature {
    std::string_view format;
    std::size_t offset;
    std::string_view bytes;
  };
  // Signatures at fixed offsets, as each format's specification places them.
  static constexpr Signature kSignatures[] = {
      {"qcow2", 0, "QFI\xfb"},  // qcow (version 1) shares it
      {"vmdk", 0, "KDMV"},
      {"vmdk", 0, "COWD"},
      {"vmdk", 0, "# Disk DescriptorFile"},
      {"vhdx", 0, "vhdxfile"},
      {"vpc", 0, "conectix"},
      {"luks", 0, "LUKS\xba\xbe"},
      {"vdi", 0x40, "\x7f\x10\xda\xbe"},
      {"parallels", 0, "WithoutFreeSpace"},
      {"parallels", 0, "WithouFreSpacExt"},
      {"bochs", 0, "Bochs Virtual HD Image"},
  };
  for (const Signature& s : kSignatures) {
    if (head.size() >= s.offset + s.bytes.size() &&
        std::memcmp(head.data() + s.offset, s.bytes.data(), s.bytes.size()) == 0) {
      return s.format;
    }
  }
  return {};
}

const FormatInfo& ProbeFormat(std::span<const std::byte> head) {
  for (const FormatInfo& f : kFormats) {
    if (f.probe != nullptr && f.probe(head)) return f;
  }
  return *FindFormat("raw");
}

}  // namespace qedfuse::block
