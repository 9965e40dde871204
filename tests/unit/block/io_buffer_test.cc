// IoBuffer: alignment, zeroing, moves, and the per-thread recycling of 4 KiB-4 MiB buffers.
#include "qedfuse/block/io_buffer.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace qedfuse::block {
namespace {

using io_buffer_internal::ClassOf;
using io_buffer_internal::kRecycle;

TEST(IoBufferTest, ClassesCoverFourKiBToFourMiB) {
  if (!kRecycle) GTEST_SKIP() << "recycling is off under AddressSanitizer";
  EXPECT_EQ(ClassOf(1), 0);
  EXPECT_EQ(ClassOf(4096), 0);
  EXPECT_EQ(ClassOf(4097), 1);
  EXPECT_EQ(ClassOf(65536), 4);
  EXPECT_EQ(ClassOf(65537), 5);
  EXPECT_EQ(ClassOf(std::size_t{4} << 20), 10);
  EXPECT_EQ(ClassOf((std::size_t{4} << 20) + 1), -1);
}

TEST(IoBufferTest, EverySizeIsAlignedWritableAndZeroedOnRequest) {
  for (std::size_t size :
       {std::size_t{1}, std::size_t{512}, std::size_t{4096}, std::size_t{5000}, std::size_t{65536},
        std::size_t{100000}, std::size_t{1} << 20, (std::size_t{4} << 20) + 512}) {
    for (int round = 0; round < 3; ++round) {
      IoBuffer b(size, /*zero=*/true);
      ASSERT_EQ(b.size(), size);
      ASSERT_EQ(reinterpret_cast<uintptr_t>(b.data()) % IoBuffer::kAlignment, 0u) << size;
      for (std::size_t i = 0; i < size; ++i) ASSERT_EQ(b.data()[i], std::byte{0}) << size;
      std::fill_n(b.data(), size, std::byte{0xab});  // dirty it: the next round must re-zero
    }
  }
}

TEST(IoBufferTest, SmallBuffersAreReusedOnTheSameThread) {
  if (!kRecycle) GTEST_SKIP() << "recycling is off under AddressSanitizer";
  std::byte* first;
  {
    IoBuffer a(4096);
    first = a.data();
  }
  IoBuffer b(3000);  // same class
  EXPECT_EQ(b.data(), first);
  // Another thread has its own cache.
  std::byte* other = nullptr;
  std::thread([&] {
    IoBuffer c(4096);
    other = c.data();
  }).join();
  EXPECT_NE(other, b.data());
}

TEST(IoBufferTest, MovesTransferOwnership) {
  IoBuffer a(8192);
  std::byte* p = a.data();
  IoBuffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  IoBuffer c(4096);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), 8192u);
  std::vector<IoBuffer> many;
  for (int i = 0; i < 200; ++i) many.emplace_back(4096);  // more than the cache keeps
  many.clear();
}

}  // namespace
}  // namespace qedfuse::block
