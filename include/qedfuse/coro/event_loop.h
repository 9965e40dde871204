// coro::EventLoop: the single thread that owns all block-layer state (QEMU's AioContext).
//
// Wraps an asio::io_context. Every coroutine of the block layer runs on the loop's thread, so
// block state needs no std::mutex. Wake-ups (CoMutex hand-off, CoQueue wake, timers) are posted
// to the loop rather than resumed inline, which keeps stacks flat and interleavings predictable.
//
// One loop per thread: constructing an EventLoop makes it the thread's Current() loop until it
// is destroyed (loops of one thread are destroyed in reverse order of creation). Tests drive the
// loop by hand with RunOne()/RunUntilIdle()/RunSync().
//
// Busy-polling: a source whose events show up in memory (an io_uring completion queue) can be
// added as a Poller. Run() then checks its pollers, without a system call, for a short window
// before it blocks in the kernel (asking the reactor too every few microseconds, so descriptors,
// timers and cross-thread posts are not held up), and keeps a poller's descriptor wake-ups off
// while it polls.
// The window adapts to the gaps between events: it grows (up to the limit) while events arrive
// just after the loop gave up polling, and shrinks while the loop blocks for longer than the
// limit, so an idle loop stops polling and sleeps. The limit is 0 (never poll) until
// SetPollLimit(); tests and RunOne()/RunUntilIdle() never poll.
//
// Destruction first waits until every AddWork() has been matched by RemoveWork() (work in
// flight on other threads, e.g. a BlockingPool job, still posts to the loop), then runs every
// ready handler. Coroutines still suspended after that (on a timer, a descriptor, a CoMutex)
// are neither resumed nor destroyed: stop them (close timers, gates) before the loop goes.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <functional>
#include <memory>

#include "qedfuse/coro/task.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace qedfuse::coro {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // The loop of the calling thread. Precondition: one exists.
  static EventLoop& Current();
  static EventLoop* CurrentOrNull() noexcept;

  boost::asio::io_context& context() noexcept;

  // Queues |h| to be resumed from a later loop turn. Safe to call from any thread.
  void Post(std::coroutine_handle<> h);
  // Queues |fn| to run on the loop. Safe to call from any thread.
  void Post(std::function<void()> fn);

  // Runs until Stop() is called or no work is left.
  void Run();
  // Makes Run() return as soon as the current handler finishes. Safe from any thread.
  void Stop();
  // Runs every handler that is ready now, and those they make ready, without blocking.
  // Returns the number of handlers run.
  std::size_t RunUntilIdle();
  // Runs at most one handler, blocking until one is ready if work is outstanding.
  // Returns 0 if there is nothing to run and no outstanding work.
  std::size_t RunOne();

  // Keeps Run()/RunOne() waiting while work happens elsewhere (e.g. on a BlockingPool), and the
  // destructor waiting too. Thread-safe. A thread that called AddWork() may Post() to the loop
  // until its RemoveWork(), which must be its last use of the loop.
  void AddWork() noexcept;
  void RemoveWork() noexcept;

  // Drives the loop until |task| finishes and returns its result. Aborts with a message if the
  // loop runs dry while the task is still suspended (a lost wake-up).
  template <typename T>
  T RunSync(Task<T> task) {
    while (!task.done()) {
      if (RunOne() == 0) DeadlockAbort();
    }
    return task.Get();
  }

  // A source of events the loop can check in memory (see the top of this file).
  class Poller {
   public:
    // Handles whatever is ready and returns true, or returns false at once. Makes no system
    // call when nothing is ready; never blocks. Runs on the loop's thread.
    virtual bool Poll() = 0;
    // |on|: the loop is about to block, so events must wake it through a descriptor the loop
    // watches; off: the loop is polling and such wake-ups are wasted system calls. Turning them
    // on is followed by a full memory fence and one more Poll() before the loop blocks.
    virtual void SetWakeups(bool on) = 0;

   protected:
    ~Poller() = default;
  };
  // On the loop's thread. AddPoller() not from inside Poller::Poll(); RemovePoller() anywhere.
  void AddPoller(Poller* poller);
  void RemovePoller(Poller* poller);
  // The longest Run() busy-polls before it blocks; zero turns polling off.
  void SetPollLimit(std::chrono::nanoseconds limit);

  // Awaitable that suspends the caller and resumes it from a later loop turn.
  struct YieldAwaiter {
    EventLoop* loop;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const { loop->Post(h); }
    void await_resume() const noexcept {}
  };
  YieldAwaiter Yield() noexcept { return {this}; }

 private:
  [[noreturn]] static void DeadlockAbort();
  // Run() with pollers: polls, then blocks, adapting the polling window.
  void RunPolling();
  bool PollOnce();

  struct Impl;
  std::unique_ptr<Impl> impl_;
  EventLoop* previous_ = nullptr;
};

}  // namespace qedfuse::coro
