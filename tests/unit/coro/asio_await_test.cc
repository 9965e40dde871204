// coro::use_task: awaiting Asio operations (timer, pipe, io_uring file) from a coro::Task.
#include "qedfuse/coro/asio_await.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <tuple>

#if defined(BOOST_ASIO_HAS_FILE)
#include <liburing.h>

#include <boost/asio/random_access_file.hpp>
#endif

#include "qedfuse/coro/event_loop.h"
#include "qedfuse/coro/task.h"

namespace qedfuse::coro {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

Task<boost::system::error_code> WaitTimer(asio::steady_timer* timer, std::thread::id* resumed_on) {
  boost::system::error_code ec = co_await timer->async_wait(use_task);
  *resumed_on = std::this_thread::get_id();
  co_return ec;
}

TEST(AsioAwaitTest, SteadyTimerExpiry) {
  EventLoop loop;
  asio::steady_timer timer(loop.context());
  timer.expires_after(milliseconds(1));
  std::thread::id resumed_on;
  Task<boost::system::error_code> t = WaitTimer(&timer, &resumed_on);
  EXPECT_FALSE(t.done());  // never completes inside the initiating call
  boost::system::error_code ec = loop.RunSync(std::move(t));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

TEST(AsioAwaitTest, SteadyTimerCancellation) {
  EventLoop loop;
  asio::steady_timer timer(loop.context());
  timer.expires_after(std::chrono::hours(1));
  std::thread::id resumed_on;
  Task<boost::system::error_code> t = WaitTimer(&timer, &resumed_on);
  loop.RunUntilIdle();
  EXPECT_FALSE(t.done());
  EXPECT_EQ(timer.cancel(), 1u);
  EXPECT_FALSE(t.done());  // the aborted completion is posted too
  EXPECT_EQ(loop.RunSync(std::move(t)), asio::error::operation_aborted);
}

Task<int> PostNoArguments(EventLoop* loop, int* step) {
  *step = 1;
  co_await asio::post(loop->context(), use_task);  // signature void(): the await yields void
  *step = 2;
  co_return 5;
}

TEST(AsioAwaitTest, VoidSignatureYieldsNothing) {
  EventLoop loop;
  int step = 0;
  Task<int> t = PostNoArguments(&loop, &step);
  EXPECT_EQ(step, 1);
  EXPECT_EQ(loop.RunOne(), 1u);
  EXPECT_EQ(step, 2);
  ASSERT_TRUE(t.done());
  EXPECT_EQ(t.Get(), 5);
}

class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe2(fds_, O_CLOEXEC | O_NONBLOCK), 0); }
  ~Pipe() {
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  // Hands the descriptor over (to an asio object that will close it).
  int Release(int end) { return std::exchange(fds_[end], -1); }
  int fd(int end) const { return fds_[end]; }

 private:
  int fds_[2] = {-1, -1};
};

Task<std::string> ReadSome(asio::posix::stream_descriptor* in) {
  std::array<char, 64> buf{};
  auto [ec, n] = co_await in->async_read_some(asio::buffer(buf), use_task);
  if (ec) co_return "error: " + ec.message();
  co_return std::string(buf.data(), n);
}

TEST(AsioAwaitTest, PipeReadResumesOnlyAfterDataArrives) {
  EventLoop loop;
  Pipe pipe;
  asio::posix::stream_descriptor in(loop.context(), pipe.Release(0));
  Task<std::string> reader = ReadSome(&in);
  loop.RunUntilIdle();
  EXPECT_FALSE(reader.done());  // nothing written yet
  ASSERT_EQ(::write(pipe.fd(1), "hello", 5), 5);
  EXPECT_FALSE(reader.done());  // the completion is delivered by the loop, not inline
  EXPECT_EQ(loop.RunSync(std::move(reader)), "hello");
}

Task<std::tuple<boost::system::error_code, std::size_t>> WriteAll(
    asio::posix::stream_descriptor* out, std::string data) {
  auto result = co_await asio::async_write(*out, asio::buffer(data), use_task);
  co_return result;
}

TEST(AsioAwaitTest, PipeWriteThenReadBetweenTwoCoroutines) {
  EventLoop loop;
  Pipe pipe;
  asio::posix::stream_descriptor in(loop.context(), pipe.Release(0));
  asio::posix::stream_descriptor out(loop.context(), pipe.Release(1));
  Task<std::string> reader = ReadSome(&in);
  Task<std::tuple<boost::system::error_code, std::size_t>> writer = WriteAll(&out, "ping");
  auto [ec, n] = loop.RunSync(std::move(writer));
  EXPECT_FALSE(ec);
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(loop.RunSync(std::move(reader)), "ping");
}

TEST(AsioAwaitTest, PipeReadReportsEndOfFile) {
  EventLoop loop;
  Pipe pipe;
  asio::posix::stream_descriptor in(loop.context(), pipe.Release(0));
  Task<std::string> reader = ReadSome(&in);
  ::close(pipe.Release(1));
  EXPECT_EQ(loop.RunSync(std::move(reader)),
            "error: " + asio::error::make_error_code(asio::error::eof).message());
}

#if defined(BOOST_ASIO_HAS_FILE)

bool IoUringWorks() {
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) return false;
  io_uring_queue_exit(&ring);
  return true;
}

class TempFile {
 public:
  TempFile() {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir != nullptr ? dir : "/tmp") + "/qedfuse-asio-await-XXXXXX";
    int fd = ::mkstemp(path_.data());
    EXPECT_GE(fd, 0);
    if (fd >= 0) ::close(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Task<std::string> FileRoundTrip(asio::random_access_file* file) {
  const std::string data = "qed-cluster-payload";
  auto [wec, written] = co_await file->async_write_some_at(4096, asio::buffer(data), use_task);
  if (wec) co_return "write: " + wec.message();
  std::string back(written, '\0');
  auto [rec, read] = co_await file->async_read_some_at(4096, asio::buffer(back), use_task);
  if (rec) co_return "read: " + rec.message();
  back.resize(read);
  co_return back;
}

TEST(AsioAwaitTest, RandomAccessFileOverIoUring) {
  if (!IoUringWorks()) GTEST_SKIP() << "io_uring_queue_init failed: io_uring unavailable here";
  EventLoop loop;
  TempFile tmp;
  asio::random_access_file file(loop.context(), tmp.path(), asio::random_access_file::read_write);
  Task<std::string> t = FileRoundTrip(&file);
  EXPECT_FALSE(t.done());
  EXPECT_EQ(loop.RunSync(std::move(t)), "qed-cluster-payload");
  EXPECT_EQ(file.size(), 4096u + 19u);
}

#else

TEST(AsioAwaitTest, RandomAccessFileOverIoUring) {
  GTEST_SKIP() << "built without io_uring file support";
}

#endif

}  // namespace
}  // namespace qedfuse::coro
