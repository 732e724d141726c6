// The kept buffers of recycled_empty (cpu_buffers.h): a process-wide list behind a mutex, since a tensor's last
// reference may go on any thread (autograd frees saved activations on its own).
#include "cpu_buffers.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>

#include <deque>
#include <memory>
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

  //: Hands every kept buffer back to the OS; returns their bytes. Buffers in use return to the pool when released.
  int64_t release() {
    std::deque<Buffer> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released.swap(kept_);
      kept_bytes_ = 0;
    }
    int64_t bytes = 0;
    for (const Buffer& buffer : released) bytes += buffer.bytes, c10::free_cpu(buffer.data);
    return bytes;
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

//: ATen's allocator interface to the pool, so that a recycled tensor is an ordinary one: its storage resizable (a
//: resize to a size the pool does not serve goes to ATen's CPU allocator), and it may reach the user, as the layers'
//: outputs do.
class RecyclingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const auto bytes = static_cast<int64_t>(n);
    if (bytes < kMinRecycledBufferBytes || bytes > kMaxKeptBufferBytes) return c10::GetCPUAllocator()->allocate(n);
    auto* buffer = new Buffer(pool().take(bytes));
    return {buffer->data, buffer, &give_back, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static void give_back(void* context) {
    const std::unique_ptr<Buffer> buffer(static_cast<Buffer*>(context));
    pool().give(*buffer);
  }
};

}  // namespace

at::Tensor recycled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (options.device().type() != c10::DeviceType::CPU) return at::empty(sizes, options);
  static RecyclingAllocator allocator;
  return at::detail::empty_generic(sizes, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

int64_t kept_buffer_bytes() {
  return pool().kept_bytes();
}

int64_t release_kept_buffers() {
  return pool().release();
}

}  // namespace fusedrnn
