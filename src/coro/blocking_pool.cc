// BlockingPool over asio::thread_pool (see blocking_pool.h).
#include "qedfuse/coro/blocking_pool.h"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

namespace qedfuse::coro {

struct BlockingPool::Impl {
  explicit Impl(std::size_t n) : pool(n) {}
  boost::asio::thread_pool pool;
};

BlockingPool::BlockingPool(std::size_t threads)
    : impl_(std::make_unique<Impl>(threads == 0 ? 1 : threads)),
      threads_(threads == 0 ? 1 : threads) {}

BlockingPool::~BlockingPool() { impl_->pool.join(); }

void BlockingPool::Submit(std::function<void()> job) {
  boost::asio::post(impl_->pool, std::move(job));
}

}  // namespace qedfuse::coro
