// Reads headers and file metadata of an image chain; see image_probe.h.
#include "tools/image_probe.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "tools/tool_util.h"

namespace qedfuse::tools {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status ErrnoStatus(const std::string& what, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrFormat("%s: %s", what, std::strerror(err)));
}

// Reads exactly |len| bytes at |off|, or fewer at end of file.
absl::StatusOr<std::size_t> ReadAt(int fd, void* buf, std::size_t len, uint64_t off,
                                   const std::string& path) {
  std::size_t done = 0;
  while (done < len) {
    ssize_t n =
        ::pread(fd, static_cast<char*>(buf) + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("Could not read '" + path + "'", errno);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

}  // namespace

std::string ResolveBacking(const std::string& image, const std::string& name) {
  if (name.empty() || name[0] == '/') return name;
  return DirName(image) + name;
}

std::string FeatureNames(uint64_t features) {
  if (features == 0) return "none";
  std::string out;
  auto add = [&out](const std::string& s) {
    if (!out.empty()) out += ", ";
    out += s;
  };
  if (features & qed::kFeatureBackingFile) add("backing-file");
  if (features & qed::kFeatureNeedCheck) add("need-check");
  if (features & qed::kFeatureBackingFormatNoProbe) add("backing-format-no-probe");
  uint64_t unknown = features & ~qed::kKnownFeatures;
  if (unknown != 0) add(absl::StrFormat("unknown 0x%x", unknown));
  return out;
}

absl::StatusOr<LayerInfo> DescribeLayer(const std::string& path, const std::string& format) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("Could not open '" + path + "'", errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("Could not stat '" + path + "'", errno);
  LayerInfo info;
  info.filename = path;
  info.file_size = static_cast<uint64_t>(st.st_size);
  info.actual_size = static_cast<uint64_t>(st.st_blocks) * 512;

  std::array<std::byte, qed::kHeaderBytes> raw{};
  auto got = ReadAt(fd.get(), raw.data(), raw.size(), 0, path);
  if (!got.ok()) return got.status();
  bool magic = *got >= 4 && qed::DecodeHeader(raw).magic == qed::kMagic;
  info.format = format.empty() ? (magic ? "qed" : "raw") : format;
  if (info.format != "qed") {
    info.virtual_size = info.file_size;
    return info;
  }
  if (*got < raw.size() || !magic) {
    return absl::InvalidArgumentError("Image not in QED format: '" + path + "'");
  }
  qed::Header h = qed::DecodeHeader(raw);
  info.header = h;
  info.virtual_size = h.image_size;
  if (h.has_backing()) {
    if (h.backing_filename_size >= qed::kPathMax) {
      return absl::InvalidArgumentError("QED backing file name is too long in '" + path + "'");
    }
    std::string name(h.backing_filename_size, '\0');
    auto n = ReadAt(fd.get(), name.data(), name.size(), h.backing_filename_offset, path);
    if (!n.ok()) return n.status();
    if (*n != name.size()) {
      return absl::InvalidArgumentError("QED backing filename offset is invalid in '" + path + "'");
    }
    info.backing_name = std::move(name);
    info.full_backing = ResolveBacking(path, info.backing_name);
    if (h.features & qed::kFeatureBackingFormatNoProbe) info.backing_format = "raw";
  }
  return info;
}

absl::StatusOr<std::vector<LayerInfo>> DescribeLayers(const std::vector<block::ChainLink>& links) {
  std::vector<LayerInfo> chain;
  for (std::size_t i = 0; i < links.size(); ++i) {
    auto layer = DescribeLayer(links[i].path, links[i].format);
    if (!layer.ok()) return layer.status();
    // The file below is the one the block layer opened; none when the policy ignored it.
    if (i + 1 == links.size()) layer->full_backing.clear();
    chain.push_back(std::move(*layer));
  }
  return chain;
}

}  // namespace qedfuse::tools
