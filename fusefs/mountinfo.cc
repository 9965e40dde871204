// Mount table parsing and unmounting (see mountinfo.h).
#include "fusefs/mountinfo.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace qedfuse::fusefs {
namespace {

// Decodes the \ooo escapes the kernel writes for space, tab, newline and backslash.
std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> SplitSpaces(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t pos = 0;
  while (pos < line.size()) {
    std::size_t end = line.find(' ', pos);
    if (end == std::string_view::npos) end = line.size();
    if (end > pos) fields.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  return fields;
}

bool ParseInt(std::string_view s, int* out) {
  if (s.empty() || s.size() > 9) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// Runs fusermount3 with |args|; returns its exit status (-1: could not run it) and its output.
int RunFusermount(const std::vector<std::string>& args, std::string* output) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    *output = absl::StrCat("pipe: ", std::strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  // Nothing else of ours (image files, the FUSE device, sockets) reaches the helper.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  std::string prog = "fusermount3";
  argv.push_back(prog.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int err = posix_spawnp(&pid, prog.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    *output = absl::StrCat("cannot run fusermount3: ", std::strerror(err));
    return -1;
  }
  char buf[512];
  for (;;) {
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output->append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  while (!output->empty() && output->back() == '\n') output->pop_back();
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::vector<MountEntry> ParseMountInfo(std::string_view text) {
  std::vector<MountEntry> table;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::vector<std::string_view> f = SplitSpaces(text.substr(pos, end - pos));
    pos = end + 1;
    // id parent major:minor root mount_point options [optional...] - fstype source super
    std::size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (f.size() < 6 || sep + 2 >= f.size()) continue;
    MountEntry e;
    if (!ParseInt(f[0], &e.id) || !ParseInt(f[1], &e.parent_id)) continue;
    e.mount_point = Unescape(f[4]);
    e.mount_options = std::string(f[5]);
    e.fstype = Unescape(f[sep + 1]);
    e.source = Unescape(f[sep + 2]);
    if (sep + 3 < f.size()) e.super_options = Unescape(f[sep + 3]);
    table.push_back(std::move(e));
  }
  return table;
}

std::vector<MountEntry> ReadMountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseMountInfo(ss.str());
}

std::optional<MountEntry> TopMountAt(const std::vector<MountEntry>& table, std::string_view path) {
  // Mounts stacked on one path form a chain: each newer one has the older one as its parent.
  // The table lists a mount after its parent, so the last match is the top.
  std::optional<MountEntry> top;
  for (const MountEntry& e : table) {
    if (e.mount_point == path) top = e;
  }
  return top;
}

bool HasMountOption(std::string_view list, std::string_view option) {
  std::size_t pos = 0;
  while (pos <= list.size()) {
    std::size_t end = list.find(',', pos);
    if (end == std::string_view::npos) end = list.size();
    if (list.substr(pos, end - pos) == option) return true;
    pos = end + 1;
  }
  return false;
}

std::string ResolveParent(const std::string& path, int* error) {
  std::string dir = ".";
  std::string base = path;
  if (std::size_t slash = path.find_last_of('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : path.substr(0, slash);
    base = path.substr(slash + 1);
  }
  char resolved[PATH_MAX];
  if (realpath(dir.c_str(), resolved) == nullptr) {
    *error = errno;
    return "";
  }
  if (base.empty() || base == "." || base == "..") {
    // Not a file name: let the caller's own checks resolve (and reject) it.
    if (realpath(path.c_str(), resolved) == nullptr) {
      *error = errno;
      return "";
    }
    return resolved;
  }
  std::string out = resolved;
  if (out != "/") out += "/";
  return out + base;
}

bool MountIsDead(const std::string& path) {
  struct sigaction quiet {};
  struct sigaction old {};
  quiet.sa_handler = [](int) {};
  sigaction(SIGALRM, &quiet, &old);  // no SA_RESTART: the alarm ends the wait with EINTR
  alarm(2);
  struct statfs st {};
  const bool dead = statfs(path.c_str(), &st) != 0 && errno == ENOTCONN;
  alarm(0);
  sigaction(SIGALRM, &old, nullptr);
  return dead;
}

std::string StaleMountFix(const std::string& path) {
  return absl::StrCat("remove it with `umount ", path, "` (as root) or `fusermount3 -u ", path,
                      "`, then mount again (the image is checked and repaired if it needs it); "
                      "mount with -o auto_unmount to have such a mount removed automatically "
                      "when its daemon dies");
}

UnmountResult UnmountPath(const std::string& path, bool lazy) {
  UnmountResult r;
  // The path is ours (resolved, no symlinks), but never follow one planted in its place.
  const int flags = UMOUNT_NOFOLLOW | (lazy ? MNT_DETACH : 0);
  if (umount2(path.c_str(), flags) == 0) return r;
  r.error = errno;
  if (geteuid() == 0 || (r.error != EPERM && r.error != EACCES)) {
    r.message = std::strerror(r.error);
    return r;
  }
  // An unprivileged mount: fusermount3 checks that it is ours and unmounts it.
  std::vector<std::string> args = {"-u"};
  if (lazy) args.push_back("-z");
  args.push_back("--");
  args.push_back(path);
  std::string output;
  const int status = RunFusermount(args, &output);
  if (status == 0) return UnmountResult{};
  r.message = output.empty() ? absl::StrCat("fusermount3 exited with status ", status) : output;
  r.error = output.find(std::strerror(EBUSY)) != std::string::npos ? EBUSY : EPERM;
  return r;
}

std::string LoopDevicesBackedBy(const std::string& path) {
  std::string found;
  DIR* dir = opendir("/sys/block");
  if (dir == nullptr) return found;
  while (struct dirent* d = readdir(dir)) {
    if (std::strncmp(d->d_name, "loop", 4) != 0) continue;
    std::ifstream in(absl::StrCat("/sys/block/", d->d_name, "/loop/backing_file"));
    std::string backing;
    if (!in || !std::getline(in, backing)) continue;
    if (backing == path || backing == path + " (deleted)") {
      absl::StrAppend(&found, found.empty() ? "" : ", ", "/dev/", d->d_name);
    }
  }
  closedir(dir);
  return found;
}

}  // namespace qedfuse::fusefs
