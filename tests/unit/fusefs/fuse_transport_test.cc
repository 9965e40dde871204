// transport::Connection over the /dev/fuse channel, with a SOCK_SEQPACKET socketpair standing in
// for /dev/fuse (one message per read, one per writev, like the device): INIT, the requests the
// Connection answers itself, requests handed to the handler, replies composed in place, and
// payload ownership while requests are in flight. (The io_uring channel needs the real kernel:
// tests/integration/codec_transport_test.sh.)
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fusefs/transport/connection.h"
#include "qedfuse/coro/event_loop.h"

namespace qedfuse::fusefs::transport {
namespace {

using protocol::Reply;

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds_), 0);
    ConnectionConfig c;
    c.session.io_uring = protocol::IoUringMode::kOff;
    c.policy = policy_;
    conn_ = std::make_unique<Connection>(loop_, fds_[0], c);
    conn_->SetOnReady([this] { ready_ = true; });
    conn_->SetOnClosed([this](const std::string& why) { closed_ = why; });
    ASSERT_TRUE(conn_->Start([this](Request r) { held_.push_back(std::move(r)); }).ok());
  }
  void TearDown() override {
    held_.clear();
    loop_.RunUntilIdle();
    conn_->Close();
    conn_.reset();
    loop_.RunUntilIdle();
    close(fds_[0]);
    close(fds_[1]);
  }

  uint64_t Send(uint32_t opcode, const void* arg, std::size_t arg_size,
                std::string_view payload = {}, uint32_t uid = 0) {
    fuse_in_header h{};
    h.len = static_cast<uint32_t>(sizeof(h) + arg_size + payload.size());
    h.opcode = opcode;
    h.unique = ++unique_;
    h.nodeid = FUSE_ROOT_ID;
    h.uid = uid;
    std::string m(reinterpret_cast<const char*>(&h), sizeof(h));
    m.append(static_cast<const char*>(arg), arg_size);
    m.append(payload);
    EXPECT_EQ(write(fds_[1], m.data(), m.size()), static_cast<ssize_t>(m.size()));
    Pump();
    return h.unique;
  }
  template <typename T>
  uint64_t SendStruct(uint32_t opcode, const T& arg, std::string_view payload = {},
                      uint32_t uid = 0) {
    return Send(opcode, &arg, sizeof(arg), payload, uid);
  }

  // Runs the loop until it has nothing more to do right now.
  void Pump() {
    for (int i = 0; i < 20; ++i) {
      loop_.RunUntilIdle();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // The next reply the "kernel" received; empty if none is waiting.
  std::string Receive() {
    Pump();
    char buf[1 << 16];
    ssize_t n = recv(fds_[1], buf, sizeof(buf), MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  static fuse_out_header Header(const std::string& reply) {
    fuse_out_header h{};
    EXPECT_GE(reply.size(), sizeof(h));
    std::memcpy(&h, reply.data(), std::min(reply.size(), sizeof(h)));
    EXPECT_EQ(h.len, reply.size());
    return h;
  }

  void Init() {
    fuse_init_in in{};
    in.major = 7;
    in.minor = 44;
    in.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | static_cast<uint32_t>(abi::kInitExt);
    uint64_t u = SendStruct(FUSE_INIT, in);
    std::string r = Receive();
    fuse_out_header h = Header(r);
    ASSERT_EQ(h.unique, u);
    ASSERT_EQ(h.error, 0);
    ASSERT_EQ(r.size(), sizeof(h) + sizeof(fuse_init_out));
    fuse_init_out out;
    std::memcpy(&out, r.data() + sizeof(h), sizeof(out));
    EXPECT_EQ(out.minor, 42u);
    EXPECT_EQ(out.flags & FUSE_MAX_PAGES, uint32_t{FUSE_MAX_PAGES});
    ASSERT_TRUE(ready_);
  }

  protocol::AccessPolicy policy_ = protocol::AccessPolicy::Anyone();
  coro::EventLoop loop_;
  int fds_[2] = {-1, -1};
  std::unique_ptr<Connection> conn_;
  std::vector<Request> held_;
  bool ready_ = false;
  std::string closed_;
  uint64_t unique_ = 0;
};

TEST_F(ConnectionTest, InitThenRequestsReachTheHandler) {
  fuse_getattr_in g{};
  uint64_t early = SendStruct(FUSE_GETATTR, g);
  EXPECT_EQ(Header(Receive()).error, -EIO);  // nothing but INIT before INIT
  EXPECT_EQ(early, 1u);
  Init();
  EXPECT_EQ(conn_->TransportDescription(), "/dev/fuse");
  uint64_t u = SendStruct(FUSE_GETATTR, g);
  ASSERT_EQ(held_.size(), 1u);
  EXPECT_EQ(held_[0].opcode(), uint32_t{FUSE_GETATTR});
  EXPECT_EQ(Receive(), "");  // not answered yet
  struct stat st {};
  st.st_size = 777;
  held_[0].ReplyStruct(protocol::MakeAttrOut(st, 1));
  std::string r = Receive();
  EXPECT_EQ(Header(r).unique, u);
  fuse_attr_out out;
  ASSERT_EQ(r.size(), sizeof(fuse_out_header) + sizeof(out));
  std::memcpy(&out, r.data() + sizeof(fuse_out_header), sizeof(out));
  EXPECT_EQ(out.attr.size, 777u);
  EXPECT_GE(conn_->dev_requests(), 3u);
}

TEST_F(ConnectionTest, AnswersWhatNoFilesystemNeedsToSee) {
  Init();
  fuse_forget_in f{1};
  SendStruct(FUSE_FORGET, f);
  fuse_interrupt_in i{1};
  SendStruct(FUSE_INTERRUPT, i);
  EXPECT_EQ(Receive(), "");  // no answers
  Send(FUSE_DESTROY, nullptr, 0);
  EXPECT_EQ(Header(Receive()).error, 0);
  Send(12345, nullptr, 0);
  EXPECT_EQ(Header(Receive()).error, -ENOSYS);
  Send(FUSE_LOOKUP, nullptr, 0, "unterminated");
  EXPECT_EQ(Header(Receive()).error, -EINVAL);
  fuse_init_in again{};
  again.major = 7;
  again.minor = 44;
  SendStruct(FUSE_INIT, again);
  EXPECT_EQ(Header(Receive()).error, -EIO);
  EXPECT_TRUE(held_.empty());
}

TEST_F(ConnectionTest, WritesOwnTheirAlignedPayloadWhileInFlight) {
  Init();
  std::string a(8192, 'a'), b(4096, 'b');
  fuse_write_in w{};
  w.size = static_cast<uint32_t>(a.size());
  SendStruct(FUSE_WRITE, w, a);
  w.size = static_cast<uint32_t>(b.size());
  w.offset = 8192;
  SendStruct(FUSE_WRITE, w, b);
  fuse_read_in r{};
  r.size = 4096;
  SendStruct(FUSE_READ, r);  // read into another buffer while both writes are held
  ASSERT_EQ(held_.size(), 3u);
  const auto& wa = held_[0].Get<protocol::WriteArgs>();
  const auto& wb = held_[1].Get<protocol::WriteArgs>();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(wa.data.data()) % 4096, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(wb.data.data()) % 4096, 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(wa.data.data()), wa.data.size()), a);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(wb.data.data()), wb.data.size()), b);
  // The READ's reply is composed in place, in its own aligned reply area.
  auto area = held_[2].ReplyArea();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(area.data()) % 4096, 0u);
  EXPECT_GE(area.size(), std::size_t{1} << 20);
  std::memset(area.data(), 'r', 4096);
  held_[2].ReplyData(area.first(4096));
  std::string reply = Receive();
  ASSERT_EQ(reply.size(), sizeof(fuse_out_header) + 4096);
  EXPECT_EQ(reply.substr(sizeof(fuse_out_header)), std::string(4096, 'r'));
  held_[1].ReplyStruct(fuse_write_out{.size = 4096});
  held_[0].ReplyStruct(fuse_write_out{.size = 8192});
  EXPECT_EQ(Header(Receive()).len, sizeof(fuse_out_header) + sizeof(fuse_write_out));
  EXPECT_EQ(Header(Receive()).len, sizeof(fuse_out_header) + sizeof(fuse_write_out));
}

TEST_F(ConnectionTest, RequestDroppedWithoutReplyIsAnsweredEio) {
  Init();
  fuse_fsync_in f{};
  uint64_t u = SendStruct(FUSE_FSYNC, f);
  ASSERT_EQ(held_.size(), 1u);
  held_.clear();  // a handler that forgot to answer
  fuse_out_header h = Header(Receive());
  EXPECT_EQ(h.unique, u);
  EXPECT_EQ(h.error, -EIO);
}

TEST_F(ConnectionTest, MalformedMessagesAreDroppedAndEndOfFileCloses) {
  Init();
  char junk[10] = {};
  ASSERT_EQ(write(fds_[1], junk, sizeof(junk)), 10);
  Pump();
  EXPECT_EQ(Receive(), "");
  EXPECT_TRUE(closed_.empty());
  shutdown(fds_[1], SHUT_WR);
  Pump();
  EXPECT_NE(closed_.find("end of file"), std::string::npos) << closed_;
}

class AllowRootTest : public ConnectionTest {
 protected:
  void SetUp() override {
    policy_ = protocol::AccessPolicy::OwnerAndRoot(1000);
    ConnectionTest::SetUp();
  }
};

TEST_F(AllowRootTest, OthersAreRefusedExceptOnOpenFiles) {
  Init();
  fuse_open_in o{};
  SendStruct(FUSE_OPEN, o, {}, 2000);
  EXPECT_EQ(Header(Receive()).error, -EACCES);
  SendStruct(FUSE_OPEN, o, {}, 1000);
  fuse_read_in r{};
  SendStruct(FUSE_READ, r, {}, 2000);
  ASSERT_EQ(held_.size(), 2u);
  EXPECT_EQ(held_[0].header().uid, 1000u);
  EXPECT_EQ(held_[1].opcode(), uint32_t{FUSE_READ});
}

}  // namespace
}  // namespace qedfuse::fusefs::transport
