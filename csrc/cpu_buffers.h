// Large per-call CPU buffers (saved activations, whole-sequence gate gradients) whose memory is recycled between
// calls. Fresh memory of that size costs its page faults on first touch, and glibc hands it back to the OS on free,
// so every training call paid them again: on the 2-core AMD EPYC (Zen 4), the fused LSTM forward's recurrence took
// 100-112 ms writing its 65 MB of saved activations into fresh memory and 66-74 ms into recycled memory (T=100, N=64,
// H=512), the backward's 52 MB of gate gradients 77 against 65 ms.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fusedrnn {

//: The most bytes of released buffers the process keeps for reuse; beyond it the oldest go back to the OS. Larger
//: buffers are never kept: their page faults are the same few percent of a call that is longer in proportion.
constexpr int64_t kMaxKeptBufferBytes = int64_t{256} << 20;

//: Smaller buffers come from ATen's allocator: malloc reuses such sizes without page faults, and the pool's lock and
//: list would cost more than they save.
constexpr int64_t kMinRecycledBufferBytes = int64_t{1} << 20;

//: An uninitialised contiguous tensor of `sizes` and `options`, as at::empty. On CPU, from kMinRecycledBufferBytes,
//: its memory comes from a buffer an earlier recycled_empty tensor released, where one of about its size is kept, and
//: returns there when the last reference to it is gone (any thread). Its storage is an ordinary resizable one, so
//: the layers' outputs come from here too: the user who drops a call's outputs before the next call (the usual
//: loop) gets them back without page faults (y at T=100 N=64 H=512 float32: 3,200 pages, ~2.5 us each under KVM).
at::Tensor recycled_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

//: Bytes of released buffers kept now (at most kMaxKeptBufferBytes): the op fusedrnn::cpu_kept_buffer_bytes, for tests.
int64_t kept_buffer_bytes();

//: Hands the kept buffers back to the OS (fusedrnn.empty_cache, the op fusedrnn::cpu_release_kept_buffers); returns
//: their bytes. Buffers still in use are kept again when released.
int64_t release_kept_buffers();

}  // namespace fusedrnn
