// codec_server: a FUSE filesystem of one in-memory regular file, served by our own codec and
// transports (fusefs/protocol, fusefs/transport) without the block layer. It is how the
// transports are tested and measured end to end on a real mount:
//
//   codec_server [--io-uring=auto|on|off] [--size=BYTES] [--max-size=BYTES] [--entries=N]
//                [--no-writeback-cache] [--allow-root] [--sync-replies] [-d] [-o OPTS] MOUNTPOINT
//
// MOUNTPOINT is a regular file (created if missing). The file starts as --size zero bytes and
// behaves like qedfuse's mounted disk: writes and fallocate past the end grow it (up to
// --max-size, then EFBIG), shrinking fails with EPERM, PUNCH_HOLE and ZERO_RANGE zero the range,
// SEEK_DATA/SEEK_HOLE report 4 KiB blocks of zeros as holes. READ, WRITE, FSYNC and FALLOCATE are
// answered from a later loop turn (as the block layer would), unless --sync-replies.
//
// It runs in the foreground and logs to stderr: "transport: ..." once the mount is ready, and at
// exit how many requests each channel carried. It exits after `fusermount3 -u MOUNTPOINT` or on
// SIGINT/SIGTERM (then it unmounts itself).
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "fusefs/protocol/codec.h"
#include "fusefs/protocol/session.h"
#include "fusefs/transport/connection.h"
#include "fusefs/transport/fuse_mount.h"
#include "qedfuse/base/log.h"
#include "qedfuse/coro/blocking_pool.h"
#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/gate.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::fusefs {
namespace {

using protocol::Reply;
using transport::Request;

constexpr double kAttrTimeout = 1.0;
constexpr uint64_t kBlock = 4096;

struct Options {
  std::string mountpoint;
  protocol::IoUringMode io_uring = protocol::IoUringMode::kAuto;
  uint64_t size = 64 << 20;
  uint64_t max_size = uint64_t{4} << 30;
  unsigned entries = 32;
  bool writeback_cache = true;
  bool allow_root = false;
  bool sync_replies = false;
  bool debug = false;
  std::string mount_options;
};

bool ParseSize(std::string_view s, uint64_t* out) {
  char* end = nullptr;
  std::string str(s);
  unsigned long long v = std::strtoull(str.c_str(), &end, 10);
  if (end == str.c_str()) return false;
  std::string_view suffix(end);
  uint64_t mult = 1;
  if (suffix == "K" || suffix == "k")
    mult = 1 << 10;
  else if (suffix == "M")
    mult = 1 << 20;
  else if (suffix == "G")
    mult = 1 << 30;
  else if (!suffix.empty())
    return false;
  *out = v * mult;
  return true;
}

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view prefix, std::string_view* v) {
      if (a.substr(0, prefix.size()) != prefix) return false;
      *v = a.substr(prefix.size());
      return true;
    };
    std::string_view v;
    if (value("--io-uring=", &v)) {
      if (!protocol::ParseIoUringMode(v, &o->io_uring)) return false;
    } else if (value("--size=", &v)) {
      if (!ParseSize(v, &o->size)) return false;
    } else if (value("--max-size=", &v)) {
      if (!ParseSize(v, &o->max_size)) return false;
    } else if (value("--entries=", &v)) {
      o->entries = static_cast<unsigned>(std::atoi(std::string(v).c_str()));
      if (o->entries == 0) return false;
    } else if (a == "--no-writeback-cache") {
      o->writeback_cache = false;
    } else if (a == "--allow-root") {
      o->allow_root = true;
    } else if (a == "--sync-replies") {
      o->sync_replies = true;
    } else if (a == "-d") {
      o->debug = true;
    } else if (a == "-o" && i + 1 < argc) {
      o->mount_options = argv[++i];
    } else if (!a.empty() && a[0] != '-' && o->mountpoint.empty()) {
      o->mountpoint = a;
    } else {
      return false;
    }
  }
  return !o->mountpoint.empty() && o->size <= o->max_size;
}

// The in-memory file and the handlers of every request the Connection passes on.
class MemFileServer {
 public:
  MemFileServer(coro::EventLoop& loop, const Options& o) : loop_(loop), opt_(o) {
    void* p = mmap(nullptr, o.max_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      Log(LogLevel::kError, absl::StrCat("cannot reserve ", o.max_size, " bytes"));
      std::exit(1);
    }
    data_ = static_cast<std::byte*>(p);
    size_ = o.size;
    uid_ = getuid();
    gid_ = getgid();
    clock_gettime(CLOCK_REALTIME, &mtime_);
    atime_ = ctime_ = mtime_;
  }
  ~MemFileServer() { munmap(data_, opt_.max_size); }

  void Handle(Request req) {
    if (gate_.closing()) return req.ReplyError(EIO);  // shutting down
    if (req.nodeid() != FUSE_ROOT_ID) return req.ReplyError(ENOENT);
    switch (req.opcode()) {
      case FUSE_READ:
      case FUSE_WRITE:
      case FUSE_FSYNC:
      case FUSE_FALLOCATE:
        if (!opt_.sync_replies) return coro::Spawn(Later(std::move(req), *gate_.TryEnter()));
        return Serve(std::move(req));
      default:
        return Serve(std::move(req));
    }
  }

  // Refuses new requests and waits for those answered from a later turn.
  coro::Task<void> Drain() { co_await gate_.Close(); }

 private:
  coro::Task<void> Later(Request req, [[maybe_unused]] coro::Gate::Holder holder) {
    co_await loop_.Yield();
    Serve(std::move(req));
  }

  struct stat Attr() const {
    struct stat st {};
    st.st_ino = FUSE_ROOT_ID;
    st.st_mode = S_IFREG | mode_;
    st.st_nlink = 1;
    st.st_uid = uid_;
    st.st_gid = gid_;
    st.st_size = static_cast<off_t>(size_);
    st.st_blksize = kBlock;
    st.st_blocks = static_cast<blkcnt_t>((size_ + 511) / 512);
    st.st_atim = atime_;
    st.st_mtim = mtime_;
    st.st_ctim = ctime_;
    return st;
  }

  void Touch() {
    clock_gettime(CLOCK_REALTIME, &mtime_);
    ctime_ = mtime_;
  }

  // Grows the file to |end| (zeros); EFBIG past --max-size.
  int Grow(uint64_t end) {
    if (end <= size_) return 0;
    if (end > opt_.max_size) return EFBIG;
    size_ = end;  // the mapping reads as zeros beyond every earlier size (never shrinks)
    return 0;
  }

  void Zero(uint64_t offset, uint64_t length) {
    uint64_t end = offset + length;
    uint64_t page_lo = (offset + kBlock - 1) / kBlock * kBlock, page_hi = end / kBlock * kBlock;
    if (page_lo < page_hi) {
      std::memset(data_ + offset, 0, page_lo - offset);
      madvise(data_ + page_lo, page_hi - page_lo, MADV_DONTNEED);  // back to zero pages
      std::memset(data_ + page_hi, 0, end - page_hi);
    } else {
      std::memset(data_ + offset, 0, length);
    }
  }

  bool BlockIsZero(uint64_t block) const {
    const std::byte* p = data_ + block * kBlock;
    uint64_t n = std::min<uint64_t>(kBlock, size_ - block * kBlock);
    for (uint64_t i = 0; i < n; ++i) {
      if (p[i] != std::byte{0}) return false;
    }
    return true;
  }

  void Serve(Request req) {
    switch (req.opcode()) {
      case FUSE_GETATTR:
        return req.ReplyStruct(protocol::MakeAttrOut(Attr(), kAttrTimeout));
      case abi::kOpStatx:
        return req.ReplyStruct(protocol::MakeStatxOut(Attr(), kAttrTimeout));
      case FUSE_SETATTR:
        return Setattr(std::move(req));
      case FUSE_OPEN: {
        const auto& a = req.Get<protocol::OpenArgs>();
        uint32_t flags = (a.flags & O_DIRECT) ? FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES
                                              : FOPEN_KEEP_CACHE;
        return req.ReplyStruct(protocol::MakeOpenOut(0, flags));
      }
      case FUSE_READ: {
        const auto& a = req.Get<protocol::ReadArgs>();
        if (a.offset >= size_) return req.ReplyData({});
        std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(a.size, size_ - a.offset));
        auto area = req.ReplyArea();
        std::memcpy(area.data(), data_ + a.offset, n);
        return req.ReplyData(area.first(n));
      }
      case FUSE_WRITE: {
        const auto& a = req.Get<protocol::WriteArgs>();
        const uint64_t end = a.offset + a.data.size();
        if (end < a.offset) return req.ReplyError(EFBIG);
        if (int err = Grow(end); err != 0) return req.ReplyError(err);
        std::memcpy(data_ + a.offset, a.data.data(), a.data.size());
        Touch();
        return req.ReplyStruct(fuse_write_out{.size = static_cast<uint32_t>(a.data.size())});
      }
      case FUSE_FLUSH:
      case FUSE_RELEASE:
      case FUSE_FSYNC:
      case FUSE_SYNCFS:
        return req.ReplyOk();
      case FUSE_STATFS: {
        struct statvfs st {};
        st.f_bsize = st.f_frsize = kBlock;
        st.f_blocks = opt_.max_size / kBlock;
        st.f_bfree = st.f_bavail = (opt_.max_size - size_) / kBlock;
        st.f_files = 1;
        st.f_namemax = 255;
        return req.ReplyStruct(protocol::MakeStatfsOut(st));
      }
      case FUSE_FALLOCATE:
        return Fallocate(std::move(req));
      case FUSE_LSEEK:
        return Lseek(std::move(req));
      case FUSE_LOOKUP:
        return req.ReplyError(ENOENT);  // the root is a file: nothing to look up
      case FUSE_OPENDIR:
      case FUSE_READDIR:
      case FUSE_READDIRPLUS:
        return req.ReplyError(ENOTDIR);
      case FUSE_LISTXATTR:
        if (req.Get<protocol::ListxattrArgs>().size == 0) {
          return req.ReplyStruct(fuse_getxattr_out{.size = 0});
        }
        return req.ReplyData({});
      case FUSE_IOCTL:
        return req.ReplyError(ENOTTY);
      default:
        return req.ReplyError(ENOSYS);
    }
  }

  void Setattr(Request req) {
    const fuse_setattr_in in = req.Get<protocol::SetattrArgs>().in;
    if (in.valid & FATTR_SIZE) {
      if (in.size < size_) return req.ReplyError(EPERM);
      if (int err = Grow(in.size); err != 0) return req.ReplyError(err);
      Touch();
    }
    if (in.valid & FATTR_MODE) mode_ = in.mode & 07777;
    if (in.valid & FATTR_UID) uid_ = in.uid;
    if (in.valid & FATTR_GID) gid_ = in.gid;
    struct timespec now {};
    clock_gettime(CLOCK_REALTIME, &now);
    if (in.valid & FATTR_ATIME_NOW) {
      atime_ = now;
    } else if (in.valid & FATTR_ATIME) {
      atime_ = {static_cast<time_t>(in.atime), static_cast<long>(in.atimensec)};
    }
    if (in.valid & FATTR_MTIME_NOW) {
      mtime_ = now;
    } else if (in.valid & FATTR_MTIME) {
      mtime_ = {static_cast<time_t>(in.mtime), static_cast<long>(in.mtimensec)};
    }
    if (in.valid & (FATTR_MODE | FATTR_UID | FATTR_GID)) ctime_ = now;
    req.ReplyStruct(protocol::MakeAttrOut(Attr(), kAttrTimeout));
  }

  void Fallocate(Request req) {
    const auto a = req.Get<protocol::FallocateArgs>();
    const bool keep = (a.mode & FALLOC_FL_KEEP_SIZE) != 0;
    const uint32_t op = a.mode & ~static_cast<uint32_t>(FALLOC_FL_KEEP_SIZE);
    uint64_t end = a.offset + a.length;
    if (a.length == 0 || end < a.offset) return req.ReplyError(EINVAL);
    if (op != 0 && op != FALLOC_FL_PUNCH_HOLE && op != FALLOC_FL_ZERO_RANGE) {
      return req.ReplyError(EOPNOTSUPP);
    }
    if (op == FALLOC_FL_PUNCH_HOLE && !keep) return req.ReplyError(EOPNOTSUPP);
    if (!keep) {
      if (int err = Grow(end); err != 0) return req.ReplyError(err);
    }
    end = std::min(end, size_);
    if (op != 0 && a.offset < end) {
      Zero(a.offset, end - a.offset);
      Touch();
    }
    req.ReplyOk();
  }

  void Lseek(Request req) {
    const auto a = req.Get<protocol::LseekArgs>();
    if (a.whence != SEEK_DATA && a.whence != SEEK_HOLE) return req.ReplyError(EINVAL);
    if (a.offset >= size_) return req.ReplyError(ENXIO);
    const bool want_hole = a.whence == SEEK_HOLE;
    for (uint64_t b = a.offset / kBlock; b * kBlock < size_; ++b) {
      if (BlockIsZero(b) == want_hole) {
        return req.ReplyStruct(fuse_lseek_out{.offset = std::max(a.offset, b * kBlock)});
      }
    }
    if (!want_hole) return req.ReplyError(ENXIO);
    req.ReplyStruct(fuse_lseek_out{.offset = size_});  // the end is an implicit hole
  }

  coro::EventLoop& loop_;
  const Options& opt_;
  coro::Gate gate_;
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t mode_ = 0600;
  uid_t uid_;
  gid_t gid_;
  struct timespec atime_, mtime_, ctime_;
};

// Waits for the requests in flight, unmounts, then tears the connection down.
coro::Task<void> Shutdown(MemFileServer& fs, transport::FuseMount& mount,
                          transport::Connection& conn) {
  co_await fs.Drain();
  mount.Unmount();
  conn.Close();
  std::string queues = conn.RingQueueCounts();
  Log(LogLevel::kInfo, absl::StrCat("served ", conn.ring_requests(), " requests over io_uring",
                                    queues.empty() ? "" : " (" + queues + ")", " and ",
                                    conn.dev_requests(), " over /dev/fuse"));
}

// With the write-back cache the kernel owns i_size, and the root inode was created with size 0
// at mount: publish the real size the one way the kernel accepts, a truncate to it (blocking:
// from a worker, while the loop serves the SETATTR).
template <typename Finish>
coro::Task<void> PublishSize(coro::BlockingPool& pool, const Options& o, Finish& finish) {
  const char* path = o.mountpoint.c_str();
  const auto size = static_cast<off_t>(o.size);
  int err = co_await pool.Offload(
      [path, size]() -> int { return ::truncate(path, size) == 0 ? 0 : errno; });
  if (err != 0) {
    co_return finish(absl::StrCat("cannot publish the size: ", strerror(err)), true);
  }
  Log(LogLevel::kInfo, "ready on " + o.mountpoint);
}

int Main(int argc, char** argv) {
  Options o;
  if (!Parse(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: codec_server [--io-uring=auto|on|off] [--size=BYTES] [--max-size=BYTES] "
                 "[--entries=N] [--no-writeback-cache] [--allow-root] [--sync-replies] [-d] "
                 "[-o OPTS] MOUNTPOINT\n");
    return 2;
  }
  SetLogProgram("codec_server");
  SetLogDebug(o.debug);
  signal(SIGPIPE, SIG_IGN);
  if (access(o.mountpoint.c_str(), F_OK) != 0) {
    int fd = open(o.mountpoint.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      Log(LogLevel::kError, absl::StrCat("cannot create ", o.mountpoint, ": ", strerror(errno)));
      return 1;
    }
    close(fd);
  }

  coro::EventLoop loop;
  MemFileServer fs(loop, o);
  std::string mount_opts = "default_permissions,fsname=codec_server,subtype=codec_server";
  if (!o.mount_options.empty()) absl::StrAppend(&mount_opts, ",", o.mount_options);
  transport::FuseMount mount;
  if (absl::Status st = mount.Mount(o.mountpoint, mount_opts); !st.ok()) {
    Log(LogLevel::kError, std::string(st.message()));
    return 1;
  }
  transport::ConnectionConfig cc;
  cc.session.io_uring = o.io_uring;
  cc.session.writeback_cache = o.writeback_cache;
  cc.ring_entries_per_queue = o.entries;
  if (o.allow_root) cc.policy = protocol::AccessPolicy::OwnerAndRoot(getuid());
  transport::Connection conn(loop, mount.fd(), cc);

  bool done = false;
  int exit_code = 0;
  boost::asio::signal_set signals(loop.context(), SIGINT, SIGTERM);
  auto finish = [&](const std::string& why, bool failed) {
    if (done) return;
    done = true;
    Log(LogLevel::kInfo, why + ": shutting down");
    if (failed) exit_code = 1;
    conn.StopReading();
    signals.cancel();
    coro::Spawn(Shutdown(fs, mount, conn));
  };
  coro::BlockingPool pool(1);
  conn.SetOnReady([&] {
    if (!conn.negotiated().writeback_cache) return Log(LogLevel::kInfo, "ready on " + o.mountpoint);
    coro::Spawn(PublishSize(pool, o, finish));
  });
  conn.SetOnClosed([&](const std::string& why) {
    finish(why, !conn.initialized() || why.rfind("io_uring", 0) == 0);
  });
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (!ec) finish(absl::StrCat("received ", strsignal(signo)), false);
  });
  if (absl::Status st = conn.Start([&fs](Request r) { fs.Handle(std::move(r)); }); !st.ok()) {
    Log(LogLevel::kError, std::string(st.message()));
    return 1;
  }
  loop.Run();
  return exit_code;
}

}  // namespace
}  // namespace qedfuse::fusefs

int main(int argc, char** argv) { return qedfuse::fusefs::Main(argc, argv); }
