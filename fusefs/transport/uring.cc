// UringChannel: FUSE over io_uring (see uring.h).
#include "fusefs/transport/uring.h"

#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "fusefs/protocol/fuse_abi.h"
#include "qedfuse/base/log.h"

namespace qedfuse::fusefs::transport {
namespace {

constexpr std::size_t kPage = 4096;
// A registration refused with EAGAIN (INIT reply not processed yet) is retried this often.
constexpr unsigned kMaxRetries = 1000;

std::size_t RoundUp(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

bool ConnectionGone(int err) { return err == ENOTCONN || err == ECONNABORTED || err == ENODEV; }

}  // namespace

unsigned PossibleCpuCount() {
  // The kernel makes one queue per possible CPU (num_possible_cpus()): count the CPUs in the
  // "0-3,8-11" list.
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string list;
  unsigned count = 0;
  if (in && std::getline(in, list)) {
    std::stringstream ss(list);
    std::string range;
    while (std::getline(ss, range, ',')) {
      unsigned lo = 0, hi = 0;
      char dash = 0;
      std::stringstream rs(range);
      if (!(rs >> lo)) continue;
      if (rs >> dash >> hi && dash == '-' && hi >= lo) {
        count += hi - lo + 1;
      } else {
        count += 1;
      }
    }
  }
  if (count == 0) count = static_cast<unsigned>(std::max(1, get_nprocs_conf()));
  return count;
}

struct UringChannel::Ring {
  explicit Ring(boost::asio::io_context& ctx) : event(ctx) {}
  ~Ring() {
    if (ring_ok) io_uring_queue_exit(&ring);
  }
  struct io_uring ring {};
  bool ring_ok = false;
  boost::asio::posix::stream_descriptor event;  // eventfd signalled for each completion
};

// One ring entry: its header and payload buffers, and the slot of the request in it.
class UringChannel::Entry final : public Slot {
 public:
  enum class State { kIdle, kKernel, kUser };

  std::span<std::byte> ReplyArea() override { return {payload, channel->payload_bytes_}; }
  void Send(uint64_t unique, const protocol::Reply& reply) override;
  // Over the ring every request must be answered to get its entry back.
  void Release() override { Send(commit_id, protocol::Reply::Error(ENOSYS)); }

  UringChannel* channel = nullptr;
  uint16_t qid = 0;
  abi::UringReqHeader* header = nullptr;
  std::byte* payload = nullptr;
  iovec iov[2]{};  // what REGISTER points at; must outlive the submission
  State state = State::kIdle;
  bool registering = false;  // the command the kernel holds is a REGISTER
  uint64_t commit_id = 0;
};

// One kernel queue: its entries and their buffers (one mapping: the headers, then the payloads).
class UringChannel::Queue {
 public:
  Queue(UringChannel* channel, uint16_t qid, unsigned count, std::size_t payload_bytes)
      : entries_(count) {
    const std::size_t headers = RoundUp(sizeof(abi::UringReqHeader) * count, kPage);
    const std::size_t stride = RoundUp(payload_bytes, kPage);
    map_bytes_ = headers + stride * count;
    void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    map_ = static_cast<std::byte*>(p);
    for (unsigned i = 0; i < count; ++i) {
      Entry& e = entries_[i];
      e.channel = channel;
      e.qid = qid;
      e.header = reinterpret_cast<abi::UringReqHeader*>(map_) + i;
      e.payload = map_ + headers + stride * i;
      e.iov[0] = {e.header, sizeof(abi::UringReqHeader)};
      e.iov[1] = {e.payload, payload_bytes};
    }
  }
  ~Queue() {
    // Buffers the kernel may still write into are kept (see uring.h).
    if (map_ != nullptr && !leak_) munmap(map_, map_bytes_);
  }
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  bool ok() const { return map_ != nullptr; }
  uint64_t requests = 0;
  std::vector<Entry>& entries() { return entries_; }
  void Leak() { leak_ = true; }

 private:
  std::vector<Entry> entries_;
  std::byte* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  bool leak_ = false;
};

void UringChannel::Entry::Send(uint64_t unique, const protocol::Reply& reply) {
  assert(state == State::kUser);
  protocol::Reply r = reply;
  std::size_t body = 0;
  if (r.error() == 0) {
    const auto in = r.inline_bytes();
    const auto data = r.data();
    if (r.body_size() > channel->payload_bytes_) {
      Log(LogLevel::kError, absl::StrCat("internal error: a reply of ", r.body_size(),
                                         " bytes does not fit the ring entry; answering EIO"));
      r = protocol::Reply::Error(EIO);
    } else {
      // Reply arguments all go to the payload buffer: the struct, then the data. Data composed in
      // the reply area is moved only if a struct has to go in front of it.
      if (!data.empty() && data.data() != payload + in.size()) {
        std::memmove(payload + in.size(), data.data(), data.size());
      }
      if (!in.empty()) std::memcpy(payload, in.data(), in.size());
      body = r.body_size();
    }
  }
  fuse_out_header out = protocol::MakeOutHeader(unique, r);
  std::memcpy(header->in_out, &out, sizeof(out));
  abi::UringEntInOut io{};
  io.commit_id = commit_id;
  io.payload_sz = static_cast<uint32_t>(body);
  std::memcpy(&header->ring_ent_in_out, &io, sizeof(io));
  channel->Commit(this);
}

UringChannel::UringChannel(coro::EventLoop& loop, int dev_fd, unsigned per_queue)
    : loop_(loop),
      dev_fd_(dev_fd),
      per_queue_(per_queue),
      ring_(std::make_unique<Ring>(loop.context())) {}

UringChannel::~UringChannel() { Close(); }

absl::StatusOr<std::unique_ptr<UringChannel>> UringChannel::Create(coro::EventLoop& loop,
                                                                   int dev_fd, unsigned queues,
                                                                   unsigned per_queue) {
  std::unique_ptr<UringChannel> ch(new UringChannel(loop, dev_fd, per_queue));
  // Room for every entry's command at once (a commit is one SQE per reply), and completions
  // for all of them.
  unsigned entries = 1;
  while (entries < queues * per_queue) entries <<= 1;
  // The kernel copies each request into its entry from task work in our thread. Deferred task
  // work runs it when we reap (the eventfd still fires), instead of interrupting the loop for
  // every request: measurably more IOPS at lower CPU per request (scripts/bench/profiling.md).
  // Kernels without it (before 6.1) get a plain ring.
  io_uring_params p{};
  p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = entries * 2;
  int rc = io_uring_queue_init_params(entries, &ch->ring_->ring, &p);
  if (rc == -EINVAL) {
    p = io_uring_params{};
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 2;
    rc = io_uring_queue_init_params(entries, &ch->ring_->ring, &p);
  }
  if (rc < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create an io_uring with 128-byte SQEs: ", strerror(-rc)));
  }
  ch->ring_->ring_ok = true;
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return absl::UnavailableError(absl::StrCat("eventfd: ", strerror(errno)));
  rc = io_uring_register_eventfd(&ch->ring_->ring, efd);
  boost::system::error_code ec;
  ch->ring_->event.assign(efd, ec);
  if (ec) {
    close(efd);
    return absl::UnavailableError("cannot watch the io_uring eventfd: " + ec.message());
  }
  if (rc < 0) {
    return absl::UnavailableError(absl::StrCat("io_uring_register_eventfd: ", strerror(-rc)));
  }
  ch->queues_.resize(queues);
  return ch;
}

unsigned UringChannel::queues() const noexcept { return static_cast<unsigned>(queues_.size()); }

std::vector<uint64_t> UringChannel::requests_per_queue() const {
  if (closed_) return final_counts_;
  std::vector<uint64_t> v;
  for (const auto& q : queues_) v.push_back(q != nullptr ? q->requests : 0);
  return v;
}

absl::Status UringChannel::Start(std::size_t payload_bytes, OnMessage on_message,
                                 OnStopped on_stopped) {
  payload_bytes_ = payload_bytes;
  on_message_ = std::move(on_message);
  on_stopped_ = std::move(on_stopped);
  for (std::size_t q = 0; q < queues_.size(); ++q) {
    queues_[q] = std::make_unique<Queue>(this, static_cast<uint16_t>(q), per_queue_, payload_bytes);
    if (!queues_[q]->ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot map ", per_queue_, " io_uring payload buffers of ", payload_bytes, " bytes"));
    }
  }
  running_ = true;
  Arm();
  loop_.AddPoller(this);
  for (auto& q : queues_) {
    for (Entry& e : q->entries()) Register(&e);
  }
  Submit();
  return absl::OkStatus();
}

void UringChannel::Abandon() {
  // sqe->len must be 2 (header and payload): with 0 the kernel's registration fails with
  // EINVAL, and a failed registration turns io_uring off for the connection.
  io_uring_sqe* sqe = NextSqe();
  std::memset(sqe, 0, 2 * sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd_;
  sqe->cmd_op = abi::kUringCmdRegister;
  sqe->user_data = 0;
  io_uring_submit(&ring_->ring);
}

io_uring_sqe* UringChannel::NextSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
  if (sqe == nullptr) {
    io_uring_submit(&ring_->ring);
    sqe = io_uring_get_sqe(&ring_->ring);
  }
  assert(sqe != nullptr && "the ring has room for every entry's command");
  return sqe;
}

void UringChannel::Register(Entry* e) {
  io_uring_sqe* sqe = NextSqe();
  std::memset(sqe, 0, 2 * sizeof(*sqe));  // 128-byte SQE
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd_;
  sqe->cmd_op = abi::kUringCmdRegister;
  sqe->addr = reinterpret_cast<uint64_t>(e->iov);
  sqe->len = 2;
  sqe->user_data = reinterpret_cast<uint64_t>(e);
  abi::UringCmdReq req{};
  req.qid = e->qid;
  std::memcpy(sqe->cmd, &req, sizeof(req));
  e->state = Entry::State::kKernel;
  e->registering = true;
  ++in_kernel_;
}

void UringChannel::Commit(Entry* e) {
  if (closed_) {
    e->state = Entry::State::kIdle;
    return;
  }
  io_uring_sqe* sqe = NextSqe();
  std::memset(sqe, 0, 2 * sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd_;
  sqe->cmd_op = abi::kUringCmdCommitAndFetch;
  sqe->user_data = reinterpret_cast<uint64_t>(e);
  abi::UringCmdReq req{};
  req.qid = e->qid;
  req.commit_id = e->commit_id;
  std::memcpy(sqe->cmd, &req, sizeof(req));
  e->state = Entry::State::kKernel;
  e->registering = false;
  ++in_kernel_;
  ScheduleSubmit();
}

void UringChannel::ScheduleSubmit() {
  if (submit_pending_) return;
  submit_pending_ = true;
  if (reaping_) return;  // Reap() submits when it is done
  // One io_uring_enter for every commit made during this loop turn.
  loop_.Post([this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired() || !submit_pending_) return;
    submit_pending_ = false;
    Submit();
  });
}

void UringChannel::Submit() {
  if (!ring_->ring_ok) return;
  int rc;
  do {
    rc = io_uring_submit(&ring_->ring);
  } while (rc == -EINTR);
  if (rc < 0) Log(LogLevel::kError, absl::StrCat("io_uring submit failed: ", strerror(-rc)));
}

void UringChannel::Arm() {
  ring_->event.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                          [this](const boost::system::error_code& ec) {
                            if (ec == boost::asio::error::operation_aborted || !running_) return;
                            if (ec) return Stopped("io_uring eventfd error: " + ec.message(), true);
                            Reap();
                            if (running_) Arm();
                          });
}

bool UringChannel::TaskWorkPending() const {
  const io_uring& r = ring_->ring;
  if ((r.flags & IORING_SETUP_DEFER_TASKRUN) == 0) return false;  // it runs by itself
  // Without IORING_SETUP_TASKRUN_FLAG the ring cannot tell: assume there is some.
  if ((r.flags & IORING_SETUP_TASKRUN_FLAG) == 0) return true;
  return (IO_URING_READ_ONCE(*r.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

bool UringChannel::Poll() {
  if (!running_ || reaping_) return false;
  if (io_uring_cq_ready(&ring_->ring) == 0 &&
      ((ring_->ring.flags & IORING_SETUP_TASKRUN_FLAG) == 0 || !TaskWorkPending())) {
    return false;
  }
  ReapRing();
  return true;
}

void UringChannel::SetWakeups(bool on) {
  if (ring_->ring_ok) io_uring_cq_eventfd_toggle(&ring_->ring, on);
}

void UringChannel::Reap() {
  uint64_t count;
  while (::read(ring_->event.native_handle(), &count, sizeof(count)) > 0) {
  }
  ReapRing();
}

void UringChannel::ReapRing() {
  // Run deferred task work: it moves the kernel's requests into our entries (skipped when the
  // ring says none is pending).
  if (TaskWorkPending()) io_uring_get_events(&ring_->ring);
  // Copy the completions out first: handling one may submit, or close the ring.
  struct Done {
    Entry* entry;
    int res;
  };
  std::vector<Done> done;
  for (;;) {
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_->ring, head, cqe) {
      done.push_back({reinterpret_cast<Entry*>(cqe->user_data), cqe->res});
      ++n;
    }
    if (n == 0) break;
    io_uring_cq_advance(&ring_->ring, n);
  }
  // Replies given while handling these completions go out in one submission right after them;
  // replies given later (from other handlers) are submitted at the end of their loop turn.
  reaping_ = true;
  for (const Done& d : done) {
    if (d.entry == nullptr) continue;  // Abandon()'s command
    Complete(d.entry, d.res);
  }
  reaping_ = false;
  if (submit_pending_) {
    submit_pending_ = false;
    Submit();
  }
  // One enter runs a bounded amount of task work: the kernel keeps the rest and raises
  // IORING_SQ_TASKRUN again, without signalling the eventfd. A polling loop sees the flag; a
  // sleeping one would not, so the rest is reaped from a later turn of the loop.
  if (running_ && !reap_posted_ && (TaskWorkPending() || io_uring_cq_ready(&ring_->ring) > 0)) {
    reap_posted_ = true;
    loop_.Post([this, alive = std::weak_ptr<char>(alive_)] {
      if (alive.expired()) return;
      reap_posted_ = false;
      if (running_) ReapRing();
    });
  }
}

void UringChannel::Complete(Entry* e, int res) {
  assert(e->state == Entry::State::kKernel);
  --in_kernel_;
  if (res < 0) {
    e->state = Entry::State::kIdle;
    const int err = -res;
    if (!running_) return;
    if (ConnectionGone(err)) return Stopped("the mount was removed", true);
    if (e->registering && err == EAGAIN && ++retries_ < kMaxRetries) {
      Register(e);  // INIT not processed yet
      return ScheduleSubmit();
    }
    if (e->registering) {
      return Stopped(absl::StrCat("the kernel refused io_uring registration: ", strerror(err)),
                     false);
    }
    // A commit the kernel could not match (the request was ended meanwhile): the entry is
    // stuck in the kernel's userspace list, so register its buffers again as a new entry.
    Log(LogLevel::kWarning,
        absl::StrCat("io_uring commit failed (", strerror(err), "); registering the entry again"));
    Register(e);
    return ScheduleSubmit();
  }
  e->state = Entry::State::kUser;
  ++requests_;
  ++queues_[e->qid]->requests;
  fuse_in_header h;
  std::memcpy(&h, e->header->in_out, sizeof(h));
  abi::UringEntInOut io;
  std::memcpy(&io, &e->header->ring_ent_in_out, sizeof(io));
  e->commit_id = io.commit_id;
  const std::size_t fixed = sizeof(fuse_in_header) + io.payload_sz;
  if (io.payload_sz > payload_bytes_ || h.len < fixed || h.len - fixed > abi::kUringOpInSize) {
    Log(LogLevel::kError, absl::StrCat("malformed io_uring request ", h.unique, " (length ", h.len,
                                       ", payload ", io.payload_sz, "); answering EIO"));
    return e->Send(h.unique, protocol::Reply::Error(EIO));
  }
  protocol::RequestBytes bytes;
  bytes.header = h;
  bytes.first_arg = {reinterpret_cast<const std::byte*>(e->header->op_in), h.len - fixed};
  bytes.payload = {e->payload, io.payload_sz};
  on_message_(bytes, e);
}

void UringChannel::Stopped(const std::string& why, bool closed) {
  if (!running_) return;
  running_ = false;
  loop_.RemovePoller(this);
  if (on_stopped_) on_stopped_(why, closed);
}

void UringChannel::Close() {
  if (closed_) return;
  running_ = false;
  loop_.RemovePoller(this);
  boost::system::error_code ec;
  ring_->event.cancel(ec);
  if (ring_->ring_ok) {
    // After unmount the kernel completes what it holds with ENOTCONN: collect those (bounded, as
    // a lazily detached mount may keep the connection alive).
    Submit();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (in_kernel_ > 0 && std::chrono::steady_clock::now() < deadline) {
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec ts{0, 100'000'000};
      if (io_uring_wait_cqe_timeout(&ring_->ring, &cqe, &ts) < 0 || cqe == nullptr) continue;
      auto* e = reinterpret_cast<Entry*>(cqe->user_data);
      io_uring_cqe_seen(&ring_->ring, cqe);
      if (e != nullptr && e->state == Entry::State::kKernel) {
        e->state = Entry::State::kIdle;
        --in_kernel_;
      }
    }
  }
  closed_ = true;
  for (auto& q : queues_) {
    if (q == nullptr) continue;
    for ([[maybe_unused]] const Entry& e : q->entries()) {
      assert(e.state != Entry::State::kUser && "a request still holds a ring entry");
    }
    if (in_kernel_ > 0) q->Leak();
  }
  if (in_kernel_ > 0) {
    Log(LogLevel::kDebug, absl::StrCat(in_kernel_,
                                       " io_uring entries were not given back; "
                                       "keeping their buffers"));
  }
  ring_->event.close(ec);
  if (ring_->ring_ok) {
    io_uring_queue_exit(&ring_->ring);
    ring_->ring_ok = false;
  }
  for (auto& q : queues_) final_counts_.push_back(q != nullptr ? q->requests : 0);
  queues_.clear();
}

}  // namespace qedfuse::fusefs::transport
