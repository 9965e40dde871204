// BlockingPool: worker threads over an intrusive FIFO of jobs (see blocking_pool.h).
//
// A hand-off costs one mutex lock on each side and a condition-variable signal only when a
// worker sleeps; nothing is allocated for Offload() jobs (the node is the awaiter). Workers
// drain the queue before sleeping, so a burst of jobs wakes as few threads as it needs.
#include "qedfuse/coro/blocking_pool.h"

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace qedfuse::coro {

struct BlockingPool::Impl {
  std::mutex mu;
  std::condition_variable cv;
  Job* head = nullptr;
  Job* tail = nullptr;
  std::size_t idle = 0;  // workers waiting on cv
  bool stop = false;
  std::vector<std::thread> workers;

  void Work() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      while (head == nullptr && !stop) {
        ++idle;
        cv.wait(lock);
        --idle;
      }
      if (head == nullptr) return;  // stopping and drained
      Job* job = head;
      head = job->next;
      if (head == nullptr) tail = nullptr;
      lock.unlock();
      job->run(job);
      lock.lock();
    }
  }
};

namespace {

// A std::function job for Submit(): owns itself and deletes itself after running.
struct FunctionJob : BlockingPool::Job {
  explicit FunctionJob(std::function<void()> f) : fn(std::move(f)) {
    run = [](BlockingPool::Job* j) {
      auto* self = static_cast<FunctionJob*>(j);
      self->fn();
      delete self;
    };
  }
  std::function<void()> fn;
};

}  // namespace

BlockingPool::BlockingPool(std::size_t threads)
    : impl_(std::make_unique<Impl>()), threads_(threads == 0 ? 1 : threads) {
  impl_->workers.reserve(threads_);
  for (std::size_t i = 0; i < threads_; ++i) {
    impl_->workers.emplace_back([impl = impl_.get()] { impl->Work(); });
  }
}

BlockingPool::~BlockingPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  for (std::thread& t : impl_->workers) t.join();
}

void BlockingPool::SubmitJob(Job* job) {
  job->next = nullptr;
  bool wake;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->tail != nullptr) {
      impl_->tail->next = job;
    } else {
      impl_->head = job;
    }
    impl_->tail = job;
    wake = impl_->idle > 0;
  }
  if (wake) impl_->cv.notify_one();
}

void BlockingPool::Submit(std::function<void()> job) { SubmitJob(new FunctionJob(std::move(job))); }

}  // namespace qedfuse::coro
