// Image creation (docs/qed-format.md §12), byte for byte what `qemu-img create -f qed` writes:
// the 64-byte header, the backing file name at offset 64, and a zeroed L1 table of table_size
// clusters right after the one header cluster. The rest of cluster 0 is never written, so it
// stays a hole, exactly as in QEMU's file.
//
// Everything that can be refused is refused before the image file is touched, so a failed create
// leaves an existing file as it was. Plain synchronous POSIX I/O: this runs in tools and tests,
// never on the event loop.
#include "block/qed/qed_create.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_format.h"
#include "block/file/file_lock.h"
#include "qedfuse/base/align.h"
#include "qedfuse/base/errors.h"

namespace qedfuse::qed {
namespace {

constexpr uint64_t kSectorSize = 512;

// A failed system call on the file being created or its backing file: "WHAT: " and the C
// library's text for the errno, as qemu-img words it. Creating over a file that refuses to
// shrink (a mounted disk) then reads "Operation not permitted", which is what happened; the
// short descriptions of ErrnoStatus would call EPERM "permission denied", a different problem.
absl::Status CallError(int err, const std::string& what) { return ToStatus(ErrnoCode(err), what); }

// Closes the descriptor on every path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports the error close() returned.
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

// Reads exactly |n| bytes at |off|, or fewer at end of file. Returns bytes read, or -errno.
ssize_t PreadFull(int fd, void* buf, size_t n, off_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, static_cast<char*>(buf) + done, n - done, off + done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

int PwriteFull(int fd, const void* buf, size_t n, off_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, static_cast<const char*>(buf) + done, n - done, off + done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(r);
  }
  return 0;
}

// |name| as the image will look it up: relative names are relative to the image's directory.
std::string ResolveBackingPath(const std::string& image_path, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  const std::size_t slash = image_path.rfind('/');
  if (slash == std::string::npos) return name;
  return image_path.substr(0, slash + 1) + name;
}

uint64_t LoadBe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// The virtual size of the backing file, as QEMU would open it with |format| ("" probes).
// Only regular files and block devices are opened (a FIFO would block the open forever); the
// open cannot block either (O_NONBLOCK), and the opened file must be the one checked.
absl::StatusOr<uint64_t> BackingVirtualSize(const std::string& path, const std::string& format) {
  struct stat before;
  if (::stat(path.c_str(), &before) != 0) {
    return CallError(errno, "cannot open backing file '" + path + "'");
  }
  if (!S_ISREG(before.st_mode) && !S_ISBLK(before.st_mode)) {
    return absl::InvalidArgumentError("backing file '" + path +
                                      "' is neither a regular file nor a block device");
  }
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return CallError(errno, "cannot open backing file '" + path + "'");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return CallError(errno, "cannot stat backing file '" + path + "'");
  }
  if (st.st_dev != before.st_dev || st.st_ino != before.st_ino) {
    return absl::AbortedError("backing file '" + path + "' was replaced while it was opened");
  }
  std::array<std::byte, kHeaderBytes> buf{};
  const ssize_t got = PreadFull(fd.get(), buf.data(), buf.size(), 0);
  if (got < 0) return CallError(static_cast<int>(-got), "cannot read backing file '" + path + "'");
  const auto* u = reinterpret_cast<const unsigned char*>(buf.data());

  std::string fmt = format;
  if (fmt.empty()) {
    // Probe the way QEMU does for the formats whose size we can read.
    const bool full = static_cast<size_t>(got) == buf.size();
    if (full && DecodeHeader(buf).magic == kMagic) {
      fmt = "qed";
    } else if (full && std::memcmp(u, "QFI\xfb", 4) == 0) {
      fmt = "qcow2";
    } else {
      fmt = "raw";
    }
  }
  if (fmt == "raw") {
    // The block layer sees whole sectors: a raw file's size is rounded up to 512.
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    return AlignUp(size, kSectorSize);
  }
  if (static_cast<size_t>(got) != buf.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backing file '%s' is too short (%d bytes) to be a %s image", path, got, fmt));
  }
  if (fmt == "qed") {
    const Header bh = DecodeHeader(buf);
    if (absl::StatusOr<Geometry> g = ValidateHeader(bh, static_cast<uint64_t>(st.st_size));
        !g.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("backing file '%s': %s", path, g.status().message()));
    }
    return bh.image_size;
  }
  if (fmt == "qcow2") {
    if (std::memcmp(u, "QFI\xfb", 4) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("backing file '%s' is not a qcow2 image", path));
    }
    return LoadBe64(u + 24);  // big-endian virtual size
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "cannot determine the size of backing file '%s' in format '%s'; give a size", path, fmt));
}

}  // namespace

absl::Status CreateImage(const CreateOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("no image file name given");
  if (options.table_size == 1) {
    // Quirk Q1: QEMU writes such images but its table check then rejects every L1 offset.
    return absl::InvalidArgumentError(
        "table size 1 is not supported: QEMU cannot open images with single-cluster tables");
  }
  absl::StatusOr<Geometry> geo = MakeGeometry(options.cluster_size, options.table_size, 1);
  if (!geo.ok()) return geo.status();

  const std::string& name = options.backing_file;
  if (name.empty() && !options.backing_format.empty()) {
    return absl::InvalidArgumentError("a backing format was given without a backing file");
  }
  if (name.size() >= kPathMax) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backing file name too long (%u bytes, the limit is %u)", name.size(), kPathMax - 1));
  }
  if (kHeaderBytes + name.size() > options.cluster_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backing file name (%u bytes) does not fit in the header cluster after the %u-byte "
        "header (cluster size %u)",
        name.size(), kHeaderBytes, options.cluster_size));
  }

  // Like qemu-img, the backing file must be openable whether or not a size is given.
  std::optional<uint64_t> backing_size;
  if (!name.empty()) {
    absl::StatusOr<uint64_t> s =
        BackingVirtualSize(ResolveBackingPath(options.path, name), options.backing_format);
    if (!s.ok()) return s.status();
    backing_size = *s;
  }
  uint64_t size = 0;
  if (options.size) {
    size = *options.size;
  } else if (backing_size) {
    size = *backing_size;
  } else {
    return absl::InvalidArgumentError("an image size is required when there is no backing file");
  }
  if (size > std::numeric_limits<uint64_t>::max() - (kSectorSize - 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("image size %u is too large", size));
  }
  size = AlignUp(size, kSectorSize);
  if (size > geo->max_image_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image size %u exceeds the maximum %u for this geometry (cluster size %u, table size %u)",
        size, geo->max_image_size, options.cluster_size, options.table_size));
  }

  Header h;
  h.cluster_size = options.cluster_size;
  h.table_size = options.table_size;
  h.header_size = 1;
  h.l1_table_offset = options.cluster_size;
  h.image_size = size;
  if (!name.empty()) {
    h.features |= kFeatureBackingFile;
    h.backing_filename_offset = kHeaderBytes;
    h.backing_filename_size = static_cast<uint32_t>(name.size());
    if (options.backing_format == "raw") h.features |= kFeatureBackingFormatNoProbe;
  }
  std::array<std::byte, kHeaderBytes> hbytes;
  EncodeHeader(h, hbytes);

  // QED ties the file length to allocation, so an existing file's old contents must go. The
  // file is emptied with ftruncate, whose result is checked, rather than with O_TRUNC, which
  // some files ignore without an error (block devices, a FUSE file that never shrinks): a new
  // header over old data would leave that data in the image as leaked clusters.
  // O_RDWR: the lock bytes are read locks, which need a readable descriptor.
  Fd fd(::open(options.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd.get() < 0) return CallError(errno, "cannot create '" + options.path + "'");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return CallError(errno, "cannot stat '" + options.path + "'");
  if (S_ISBLK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Cannot resize device files: a QED image grows as it allocates clusters, so '%s' must "
        "be a regular file",
        options.path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("'%s' is not a regular file", options.path));
  }
  // As qemu-img does, refuse to overwrite a file another process uses (the locks go with the fd).
  absl::Status locked = block::ApplyQemuLocks(fd.get(), options.path, block::QemuCreateLockPerms());
  if (!locked.ok()) return locked;
  if (st.st_size != 0 && ::ftruncate(fd.get(), 0) != 0) {
    return CallError(errno, "cannot empty '" + options.path + "' to write a new image into it");
  }
  auto fail = [&](int err, const std::string& what) {
    // Leave an empty file behind, as qemu-img does after a failed create.
    if (::ftruncate(fd.get(), 0) != 0) {
      // Nothing more can be done; the original error is the one worth reporting.
    }
    return CallError(err, what + " '" + options.path + "'");
  };
  if (int err = PwriteFull(fd.get(), hbytes.data(), hbytes.size(), 0)) {
    return fail(err, "cannot write the header of");
  }
  if (!name.empty()) {
    if (int err = PwriteFull(fd.get(), name.data(), name.size(), kHeaderBytes)) {
      return fail(err, "cannot write the backing file name of");
    }
  }
  // The L1 table is written as real zeros (not a hole), as QEMU does.
  const uint64_t l1_bytes = geo->table_bytes;
  const size_t chunk = static_cast<size_t>(std::min<uint64_t>(l1_bytes, 1u << 20));
  const std::vector<char> zeros(chunk, 0);
  for (uint64_t done = 0; done < l1_bytes; done += chunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, l1_bytes - done));
    if (int err =
            PwriteFull(fd.get(), zeros.data(), n, static_cast<off_t>(h.l1_table_offset + done))) {
      return fail(err, "cannot write the L1 table of");
    }
  }
  if (::fsync(fd.get()) != 0) return fail(errno, "cannot sync");
  if (int err = fd.Close()) return CallError(err, "cannot close '" + options.path + "'");
  return absl::OkStatus();
}

}  // namespace qedfuse::qed
