// Helpers for the QED driver's own unit tests: images built with qed::CreateImage and loaded
// into a MemFile, QedDriver opened directly over it, and synchronous wrappers that drive the
// test's event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "block/qed/qed_create.h"
#include "block/qed/qed_driver.h"
#include "block/qed/qed_table.h"
#include "gtest/gtest.h"
#include "mem_file.h"
#include "qedfuse/block/io_vector.h"
#include "qedfuse/coro/event_loop.h"
#include "temp_dir.h"

namespace qedfuse::qedunit {

using Bytes = std::vector<std::byte>;

inline Bytes Fill(std::size_t n, uint8_t v) { return Bytes(n, std::byte{v}); }

inline bool AllEqual(const Bytes& b, uint8_t v) {
  for (std::byte x : b) {
    if (x != std::byte{v}) return false;
  }
  return true;
}

inline Bytes ReadPath(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  Bytes out;
  if (f == nullptr) return out;
  std::byte buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

// The bytes of a new image, as qed::CreateImage (byte-identical to qemu-img) writes them.
inline Bytes NewImageBytes(uint64_t size, uint32_t cs = 65536, uint32_t ts = 4) {
  test::TempDir dir;
  qed::CreateOptions co;
  co.path = dir.File("img.qed");
  co.size = size;
  co.cluster_size = cs;
  co.table_size = ts;
  absl::Status st = qed::CreateImage(co);
  EXPECT_TRUE(st.ok()) << st;
  return ReadPath(co.path);
}

inline uint64_t U64At(const Bytes& b, uint64_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b.at(off + i));
  return v;
}
inline void PutU64(Bytes& b, uint64_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.at(off + i) = std::byte(static_cast<uint8_t>(v >> (8 * i)));
}

// A QedDriver over a MemFile, opened as the top of its chain.
struct MemImage {
  std::shared_ptr<test::MemFileState> state;
  std::unique_ptr<qed::QedDriver> drv;
  test::MemFile* file = nullptr;  // owned by drv
  block::OpenReport report;
};

inline block::OpenOptions DefaultOptions(bool read_only = false) {
  block::OpenOptions o;
  o.path = "/nonexistent/mem.qed";
  o.format = "qed";
  o.read_only = read_only;
  o.need_check_delay = std::chrono::milliseconds(1);
  o.lock = false;
  return o;
}

inline absl::Status OpenMem(coro::EventLoop& loop, MemImage& img, block::OpenOptions o,
                            test::MemFile::Options mo = {}, qed::QedTuning tuning = {}) {
  mo.read_only = o.read_only;
  auto file = std::make_unique<test::MemFile>(img.state, mo);
  img.file = file.get();
  block::ChainContext chain;
  chain.names.push_back(o.path);
  chain.depth = 1;
  img.report = {};
  absl::StatusOr<std::unique_ptr<qed::QedDriver>> d =
      loop.RunSync(qed::QedDriver::Open(std::move(file), o, chain, &img.report, tuning));
  if (!d.ok()) {
    img.file = nullptr;
    return d.status();
  }
  img.drv = std::move(*d);
  return absl::OkStatus();
}

inline absl::Status CloseMem(coro::EventLoop& loop, MemImage& img) {
  if (!img.drv) return absl::OkStatus();
  absl::Status st = loop.RunSync(img.drv->Close());
  img.drv.reset();
  img.file = nullptr;
  return st;
}

inline Result<Bytes> ReadAt(coro::EventLoop& loop, block::BlockDriver& d, uint64_t off,
                            std::size_t len) {
  Bytes b(len, std::byte{0xEE});
  Result<void> r = loop.RunSync(d.Read(off, block::IoVector(b.data(), b.size())));
  if (!r) return Unexpected(r.error());
  return b;
}

inline Result<void> WriteAt(coro::EventLoop& loop, block::BlockDriver& d, uint64_t off,
                            Bytes data) {
  return loop.RunSync(d.Write(off, block::IoVector(data.data(), data.size())));
}

inline Result<void> ZeroAt(coro::EventLoop& loop, block::BlockDriver& d, uint64_t off, uint64_t len,
                           bool unmap = false) {
  return loop.RunSync(
      d.WriteZeroes(off, len, unmap ? block::ZeroFlags::kMayUnmap : block::ZeroFlags::kNone));
}

inline uint64_t HeaderFeatures(const test::MemFileState& s) {
  Bytes b(s.current.begin(), s.current.begin() + 64);
  return U64At(b, 16);
}
inline uint64_t DurableFeatures(const test::MemFileState& s) {
  Bytes b(s.durable.begin(), s.durable.begin() + 64);
  return U64At(b, 16);
}

// Entry |i| of the table at |table_off| in the current bytes of |s|.
inline uint64_t EntryAt(const test::MemFileState& s, uint64_t table_off, uint64_t i) {
  Bytes b(s.current.begin() + table_off + i * 8, s.current.begin() + table_off + i * 8 + 8);
  return U64At(b, 0);
}

}  // namespace qedfuse::qedunit
