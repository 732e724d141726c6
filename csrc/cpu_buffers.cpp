// The kept buffers of recycled_empty (cpu_buffers.h): a process-wide list behind a mutex, since a tensor's last
// reference may go on any thread (autograd frees saved activations on its own).
#include "cpu_buffers.h"

#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>

#include <deque>
#include <mutex>

namespace fusedrnn {
namespace {

struct Buffer {
  void* data;
  int64_t bytes;
};

//: A kept buffer serves requests from half its size up: a smaller request would hold memory it does not use.
constexpr int64_t kMaxWasteFactor = 2;

class BufferPool {
 public:
  //: A kept buffer of at least `bytes` (the smallest that serves it), or a fresh one.
  Buffer take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = kept_.end();
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        const bool serves = it->bytes >= bytes && it->bytes <= kMaxWasteFactor * bytes;
        if (serves && (best == kept_.end() || it->bytes < best->bytes)) best = it;
      }
      if (best != kept_.end()) {
        const Buffer buffer = *best;
        kept_bytes_ -= buffer.bytes;
        kept_.erase(best);
        return buffer;
      }
    }
    return {c10::alloc_cpu(static_cast<size_t>(bytes)), bytes};
  }

  int64_t kept_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return kept_bytes_;
  }

  //: Keeps `buffer` for a later take, handing the oldest kept ones back to the OS beyond kMaxKeptBufferBytes.
  void give(const Buffer& buffer) {
    std::deque<Buffer> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      kept_.push_back(buffer);
      kept_bytes_ += buffer.bytes;
      while (kept_bytes_ > kMaxKeptBufferBytes) {
        evicted.push_back(kept_.front());
        kept_bytes_ -= kept_.front().bytes;
        kept_.pop_front();
      }
    }
    for (const Buffer& old : evicted) c10::free_cpu(old.data);
  }

 private:
  std::mutex mutex_;
  std::deque<Buffer> kept_;  // oldest first
  int64_t kept_bytes_ = 0;
};

//: The pool. Never destroyed: a tensor released during the process's exit still finds it. A forked child (a
//: DataLoader worker) starts a pool of its own: the parent's lock may have been held by a thread that does not exist
//: in the child; the parent's kept buffers are left to the child's exit.
BufferPool* pool_instance = nullptr;

BufferPool& pool() {
  static const bool created = [] {
    pool_instance = new BufferPool();
    pthread_atfork(nullptr, nullptr, [] { pool_instance = new BufferPool(); });
    return true;
  }();
  (void)created;
  return *pool_instance;
}

}  // namespace

at::Tensor recycled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
  if (options.device().type() != c10::DeviceType::CPU || bytes < kMinRecycledBufferBytes ||
      bytes > kMaxKeptBufferBytes) {
    return at::empty(sizes, options);
  }
  const Buffer buffer = pool().take(bytes);
  return at::from_blob(
      buffer.data, sizes, [buffer](void*) { pool().give(buffer); }, options);
}

int64_t kept_buffer_bytes() {
  return pool().kept_bytes();
}

}  // namespace fusedrnn
