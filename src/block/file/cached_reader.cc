// CachedReader: reads on the loop thread that cannot wait for a device (see file_io.h).
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "block/file/file_io.h"

namespace qedfuse::block {

bool IsDirect(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_DIRECT) != 0;
}

bool SwapConfigured() {
  std::FILE* f = std::fopen("/proc/meminfo", "re");
  if (f == nullptr) return true;
  char line[256];
  unsigned long long kib = 1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "SwapTotal: %llu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib != 0;
}

CachedReader::Mode CachedReader::Probe(int fd, bool swap) {
  if (IsDirect(fd)) return Mode::kOff;
  // One byte at offset 0 tells whether the file system takes RWF_NOWAIT reads: data, end of
  // file or EAGAIN mean yes; EOPNOTSUPP (tmpfs) or EINVAL (a kernel without the flag) mean no.
  char byte;
  iovec v{&byte, 1};
  ssize_t n = ::preadv2(fd, &v, 1, 0, RWF_NOWAIT);
  if (n >= 0 || errno == EAGAIN) return Mode::kNowait;
  // Memory file systems hold every page in memory unless it is swapped out.
  struct statfs st;
  if (::fstatfs(fd, &st) != 0) return Mode::kOff;
  if (st.f_type == RAMFS_MAGIC || (st.f_type == TMPFS_MAGIC && !swap)) return Mode::kMemory;
  return Mode::kOff;
}

CachedReader::CachedReader(int fd) : fd_(fd), mode_(Probe(fd, SwapConfigured())) {}

ssize_t CachedReader::Read(uint64_t offset, const IoVector& iov) {
  if (mode_ == Mode::kOff || iov.size() == 0) return -1;
  int count = static_cast<int>(std::min<std::size_t>(iov.segments().size(), IOV_MAX));
  ssize_t n = ::preadv2(fd_, iov.segments().data(), count, static_cast<off_t>(offset),
                        mode_ == Mode::kNowait ? RWF_NOWAIT : 0);
  if (n >= 0) return n;
  if (errno == EOPNOTSUPP) mode_ = Mode::kOff;  // not expected after the probe; stop trying
  return -1;  // EAGAIN (not cached, or a lock is held), EINTR, or an error the backend reports
}

}  // namespace qedfuse::block
