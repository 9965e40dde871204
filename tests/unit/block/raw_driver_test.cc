// RawDriver: a transparent format over a protocol node (here MemFile and a real file).
#include "block/raw/raw_driver.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "block/file/file_protocol.h"
#include "support/mem_file.h"
#include "support/temp_dir.h"
#include "support/test_loop.h"

namespace qedfuse::block {
namespace {

using test::MemFile;
using test::MemFileState;
using test::MemIoRecord;
using test::TestLoop;

TEST(RawDriverTest, ForwardsEveryOperationUnchanged) {
  TestLoop loop;
  auto state = MemFileState::Create(65536);
  MemFile::Options opts;
  opts.request_alignment = 512;
  opts.max_transfer = 8192;
  RawDriver raw(std::make_unique<MemFile>(state, opts));
  EXPECT_EQ(raw.format_name(), "raw");
  EXPECT_EQ(raw.length(), 65536u);
  EXPECT_EQ(raw.limits().request_alignment, 512u);
  EXPECT_EQ(raw.limits().max_transfer, 8192u);
  EXPECT_FALSE(raw.read_only());

  std::vector<std::byte> data(4096, std::byte{0x61});
  ASSERT_TRUE(loop.Run(raw.Write(8192, IoVector(data.data(), data.size()))));
  ASSERT_EQ(state->log.size(), 1u);
  EXPECT_EQ(state->log[0].kind, MemIoRecord::kWrite);
  EXPECT_EQ(state->log[0].offset, 8192u);
  EXPECT_EQ(state->log[0].len, 4096u);
  EXPECT_EQ(state->current[8192], std::byte{0x61});

  std::vector<std::byte> back(4096);
  ASSERT_TRUE(loop.Run(raw.Read(8192, IoVector(back.data(), back.size()))));
  EXPECT_EQ(back, data);

  ASSERT_TRUE(loop.Run(raw.WriteZeroes(8192, 512, ZeroFlags::kMayUnmap)));
  EXPECT_EQ(state->current[8192], std::byte{0});
  EXPECT_EQ(state->log.back().kind, MemIoRecord::kZero);

  ASSERT_TRUE(loop.Run(raw.Flush()));
  EXPECT_EQ(state->flushes, 1u);
  EXPECT_EQ(state->durable, state->current);

  ASSERT_TRUE(loop.Run(raw.Truncate(131072)));
  EXPECT_EQ(raw.length(), 131072u);
  EXPECT_TRUE(loop.Run(raw.Close()).ok());
}

TEST(RawDriverTest, StatusComesFromTheFile) {
  TestLoop loop;
  test::TempDir dir;
  std::string path = dir.File("disk.raw");
  FileProtocolOptions fo;
  fo.path = path;
  fo.create = true;
  absl::StatusOr<std::unique_ptr<FileProtocol>> file = FileProtocol::Open(fo);
  ASSERT_TRUE(file.ok()) << file.status();
  RawDriver raw(*std::move(file));
  ASSERT_TRUE(loop.Run(raw.Truncate(1 << 20)));
  std::vector<std::byte> data(65536, std::byte{1});
  ASSERT_TRUE(loop.Run(raw.Write(65536, IoVector(data.data(), data.size()))));
  Result<BlockStatus> st = loop.Run(raw.GetStatus(0, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_FALSE(st->data);
  EXPECT_EQ(st->length, 65536u);
  st = loop.Run(raw.GetStatus(65536, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_EQ(st->length, 65536u);
  EXPECT_GE(raw.AllocatedBytes(), 65536u);
  EXPECT_TRUE(loop.Run(raw.Close()).ok());
}

}  // namespace
}  // namespace qedfuse::block
