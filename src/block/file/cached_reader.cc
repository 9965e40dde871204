// CachedReader: page-cache reads on the loop thread (preadv2 with RWF_NOWAIT).
#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

#include "block/file/file_io.h"

namespace qedfuse::block {

bool IsDirect(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_DIRECT) != 0;
}

CachedReader::CachedReader(int fd) : fd_(fd) {
  if (IsDirect(fd)) return;
  // One byte at offset 0 tells whether the file system takes RWF_NOWAIT reads: data, end of
  // file or EAGAIN mean yes; EOPNOTSUPP (tmpfs) or EINVAL (a kernel without the flag) mean no.
  char byte;
  iovec v{&byte, 1};
  ssize_t n = ::preadv2(fd, &v, 1, 0, RWF_NOWAIT);
  enabled_ = n >= 0 || errno == EAGAIN;
}

ssize_t CachedReader::Read(uint64_t offset, const IoVector& iov) {
  if (!enabled_ || iov.size() == 0) return -1;
  int count = static_cast<int>(std::min<std::size_t>(iov.segments().size(), IOV_MAX));
  ssize_t n = ::preadv2(fd_, iov.segments().data(), count, static_cast<off_t>(offset), RWF_NOWAIT);
  if (n >= 0) return n;
  if (errno == EOPNOTSUPP) enabled_ = false;  // not expected after the probe; stop trying
  return -1;  // EAGAIN (not cached, or a lock is held), EINTR, or an error the backend reports
}

}  // namespace qedfuse::block
