// The QEMU oracle helpers themselves: command capture, check/map JSON parsing, conversion.
#include "support/qemu_tools.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <vector>

#include "support/temp_dir.h"

namespace qedfuse::test {
namespace {

std::vector<char> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

TEST(QemuToolsTest, RunCommandCapturesStreamsAndExitCode) {
  CommandResult ok = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(ok.exit_code, 3);
  EXPECT_EQ(ok.out, "out\n");
  EXPECT_EQ(ok.err, "err\n");
  CommandResult missing = RunCommand({"qedfuse-no-such-program"});
  EXPECT_EQ(missing.exit_code, -1);
}

TEST(QemuToolsTest, CheckMapAndConvert) {
  QEDFUSE_SKIP_WITHOUT_QEMU();
  TempDir dir;
  std::string img = dir.File("img.qed");
  ASSERT_EQ(QemuImg({"create", "-q", "-f", "qed", img, "4M"}).exit_code, 0);
  CommandResult w = QemuIo({"-c", "write -P 0xab 0 64k", "-c", "write -z 1M 64k", img});
  ASSERT_EQ(w.exit_code, 0) << w.err;

  QemuCheck c = QemuImgCheckJson(img);
  EXPECT_TRUE(c.parsed) << c.output;
  EXPECT_EQ(c.exit_code, 0);
  EXPECT_EQ(c.corruptions, 0);
  EXPECT_EQ(c.leaks, 0);
  EXPECT_EQ(c.total_clusters, 64);  // 4 MiB of 64 KiB clusters
  EXPECT_EQ(c.allocated_clusters, 1);

  absl::Status st;
  std::vector<MapExtent> map = QemuImgMapJson(img, &st);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_FALSE(map.empty());
  EXPECT_EQ(map[0].start, 0u);
  EXPECT_EQ(map[0].length, 65536u);
  EXPECT_TRUE(map[0].data);
  EXPECT_FALSE(map[0].zero);
  EXPECT_TRUE(map[0].offset.has_value());
  bool saw_zero = false;
  for (const MapExtent& e : map) {
    if (e.start <= (1u << 20) && (1u << 20) < e.start + e.length) saw_zero = e.zero && !e.data;
  }
  EXPECT_TRUE(saw_zero);

  std::string raw = dir.File("img.raw");
  ASSERT_TRUE(QemuImgConvertToRaw(img, raw).ok());
  std::vector<char> bytes = ReadAll(raw);
  ASSERT_EQ(bytes.size(), 4u << 20);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0xab);
  EXPECT_EQ(static_cast<unsigned char>(bytes[65535]), 0xab);
  EXPECT_EQ(bytes[65536], 0);
  EXPECT_FALSE(QemuImgConvertToRaw(dir.File("missing.qed"), raw).ok());
}

}  // namespace
}  // namespace qedfuse::test
