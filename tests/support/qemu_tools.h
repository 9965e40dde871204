// Running QEMU's tools (the oracle) from tests: qemu-img and qemu-io with captured output, and
// parsers for the JSON that `qemu-img check` and `qemu-img map` print.
//
//   QEDFUSE_SKIP_WITHOUT_QEMU();                       // GTEST_SKIP if qemu-img is missing
//   CommandResult r = QemuImg({"create", "-f", "qed", path, "1M"});
//   QemuCheck c = QemuImgCheckJson(path);             // c.corruptions, c.leaks, c.exit_code
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace qedfuse::test {

struct CommandResult {
  int exit_code = -1;  // -1 if the program could not be started or died from a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] (looked up in PATH) with the arguments, waits, and captures both streams.
CommandResult RunCommand(const std::vector<std::string>& argv);

bool HaveProgram(const std::string& name);
bool HaveQemuImg();
bool HaveQemuIo();

CommandResult QemuImg(const std::vector<std::string>& args);
CommandResult QemuIo(const std::vector<std::string>& args);

// `qemu-img check --output=json [-r all] image`. Fields QEMU leaves out (it omits zero
// corruption/leak counts, and QED reports no image-end-offset) read as 0.
struct QemuCheck {
  int exit_code = -1;
  bool parsed = false;
  int64_t corruptions = 0;
  int64_t leaks = 0;
  int64_t check_errors = 0;
  int64_t corruptions_fixed = 0;
  int64_t leaks_fixed = 0;
  int64_t image_end_offset = 0;
  int64_t total_clusters = 0;
  int64_t allocated_clusters = 0;
  std::string output;  // the raw JSON plus stderr, for failure messages
};
QemuCheck QemuImgCheckJson(const std::string& image, bool repair = false,
                           const std::string& format = "");

// `qemu-img convert -O raw image out` (format probed unless given).
absl::Status QemuImgConvertToRaw(const std::string& image, const std::string& out_raw,
                                 const std::string& format = "");

// One extent of `qemu-img map --output=json image`.
struct MapExtent {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;
  bool present = false;
  bool zero = false;
  bool data = false;
  std::optional<uint64_t> offset;
};
// Empty vector and a failed status in |status| if qemu-img failed.
std::vector<MapExtent> QemuImgMapJson(const std::string& image, absl::Status* status = nullptr,
                                      const std::string& format = "");

// A child process that runs until stopped (e.g. `qemu-io -c 'sleep 5000' img` holding locks).
class BackgroundProcess {
 public:
  explicit BackgroundProcess(const std::vector<std::string>& argv);
  ~BackgroundProcess();  // SIGKILLs and reaps the child if it still runs
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Kills the child and waits for it.
  void Stop();

 private:
  pid_t pid_ = -1;
};

// True if /proc/locks shows an OFD lock on byte |byte| of |path| held by anyone.
bool FileHasLockOnByte(const std::string& path, uint64_t byte);

}  // namespace qedfuse::test

#define QEDFUSE_SKIP_WITHOUT_QEMU()                                          \
  do {                                                                       \
    if (!::qedfuse::test::HaveQemuImg() || !::qedfuse::test::HaveQemuIo()) { \
      GTEST_SKIP() << "qemu-img/qemu-io not installed";                      \
    }                                                                        \
  } while (0)
