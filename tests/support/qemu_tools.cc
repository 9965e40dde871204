// Process helpers and JSON field extraction for the QEMU oracle (see qemu_tools.h).
#include "support/qemu_tools.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace qedfuse::test {
namespace {

std::vector<char*> Argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  out.reserve(argv.size() + 1);
  for (const std::string& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// The value text after "key": in |json| starting at |from| (up to ',' or '}' or newline).
std::optional<std::string> Field(const std::string& json, const std::string& key,
                                 std::size_t from = 0, std::size_t until = std::string::npos) {
  std::string needle = "\"" + key + "\":";
  std::size_t p = json.find(needle, from);
  if (p == std::string::npos || p >= until) return std::nullopt;
  p += needle.size();
  while (p < json.size() && json[p] == ' ') ++p;
  std::size_t e = json.find_first_of(",}\n", p);
  return json.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

int64_t IntField(const std::string& json, const std::string& key, std::size_t from = 0,
                 std::size_t until = std::string::npos) {
  std::optional<std::string> v = Field(json, key, from, until);
  int64_t out = 0;
  if (v && absl::SimpleAtoi(*v, &out)) return out;
  return 0;
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv) {
  CommandResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return result;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<char*> args = Argv(argv);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc == 0) {
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_count = 2;
    char buf[4096];
    while (open_count > 0) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          sinks[i]->append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          fds[i].fd = -1;
          --open_count;
        }
      }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  } else {
    result.err = absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc));
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  return result;
}

bool HaveProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
  }
  return false;
}

bool HaveQemuImg() {
  static const bool have = HaveProgram("qemu-img");
  return have;
}

bool HaveQemuIo() {
  static const bool have = HaveProgram("qemu-io");
  return have;
}

CommandResult QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

CommandResult QemuIo(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-io"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

QemuCheck QemuImgCheckJson(const std::string& image, bool repair, const std::string& format) {
  std::vector<std::string> args = {"check", "--output=json"};
  if (repair) {
    args.push_back("-r");
    args.push_back("all");
  }
  if (!format.empty()) {
    args.push_back("-f");
    args.push_back(format);
  }
  args.push_back(image);
  CommandResult r = QemuImg(args);
  QemuCheck c;
  c.exit_code = r.exit_code;
  c.output = r.out + r.err;
  c.parsed = r.out.find('{') != std::string::npos && Field(r.out, "check-errors").has_value();
  c.corruptions = IntField(r.out, "corruptions");
  c.leaks = IntField(r.out, "leaks");
  c.check_errors = IntField(r.out, "check-errors");
  c.corruptions_fixed = IntField(r.out, "corruptions-fixed");
  c.leaks_fixed = IntField(r.out, "leaks-fixed");
  c.image_end_offset = IntField(r.out, "image-end-offset");
  c.total_clusters = IntField(r.out, "total-clusters");
  c.allocated_clusters = IntField(r.out, "allocated-clusters");
  return c;
}

absl::Status QemuImgConvertToRaw(const std::string& image, const std::string& out_raw,
                                 const std::string& format) {
  std::vector<std::string> args = {"convert"};
  if (!format.empty()) {
    args.push_back("-f");
    args.push_back(format);
  }
  args.insert(args.end(), {"-O", "raw", image, out_raw});
  CommandResult r = QemuImg(args);
  if (r.exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("qemu-img convert ", image, " failed (exit ", r.exit_code, "): ", r.err));
  }
  return absl::OkStatus();
}

std::vector<MapExtent> QemuImgMapJson(const std::string& image, absl::Status* status,
                                      const std::string& format) {
  std::vector<std::string> args = {"map", "--output=json"};
  if (!format.empty()) {
    args.push_back("-f");
    args.push_back(format);
  }
  args.push_back(image);
  CommandResult r = QemuImg(args);
  std::vector<MapExtent> out;
  if (r.exit_code != 0) {
    if (status != nullptr) {
      *status = absl::InternalError(absl::StrCat("qemu-img map ", image, ": ", r.err));
    }
    return out;
  }
  std::size_t pos = 0;
  while ((pos = r.out.find('{', pos)) != std::string::npos) {
    std::size_t end = r.out.find('}', pos);
    if (end == std::string::npos) break;
    MapExtent e;
    e.start = static_cast<uint64_t>(IntField(r.out, "start", pos, end));
    e.length = static_cast<uint64_t>(IntField(r.out, "length", pos, end));
    e.depth = static_cast<int>(IntField(r.out, "depth", pos, end));
    e.present = Field(r.out, "present", pos, end).value_or("") == "true";
    e.zero = Field(r.out, "zero", pos, end).value_or("") == "true";
    e.data = Field(r.out, "data", pos, end).value_or("") == "true";
    if (Field(r.out, "offset", pos, end)) {
      e.offset = static_cast<uint64_t>(IntField(r.out, "offset", pos, end));
    }
    out.push_back(e);
    pos = end + 1;
  }
  if (status != nullptr) *status = absl::OkStatus();
  return out;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args = Argv(argv);
  if (::posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&fa);
}

BackgroundProcess::~BackgroundProcess() { Stop(); }

void BackgroundProcess::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool FileHasLockOnByte(const std::string& path, uint64_t byte) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  std::ifstream locks("/proc/locks");
  std::string line;
  std::string ino = absl::StrCat(":", st.st_ino, " ");
  while (std::getline(locks, line)) {
    // "1: OFDLCK ADVISORY READ -1 fd:01:1234 100 101"
    std::size_t at = line.find(ino);
    if (at == std::string::npos) continue;
    std::vector<std::string> parts =
        absl::StrSplit(line.substr(at + ino.size()), ' ', absl::SkipEmpty());
    if (parts.size() < 2) continue;
    uint64_t start = 0;
    uint64_t end = 0;
    if (!absl::SimpleAtoi(parts[0], &start)) continue;
    if (parts[1] == "EOF") {
      end = UINT64_MAX;
    } else if (!absl::SimpleAtoi(parts[1], &end)) {
      continue;
    }
    if (byte >= start && byte <= end) return true;
  }
  return false;
}

}  // namespace qedfuse::test
