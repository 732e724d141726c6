// CUDA pointwise pass: one thread per (batch row, hidden unit), all gates of that unit (layer norm: one block per
// batch row, below), fp32 (fp64) arithmetic on
// fp16/bf16/fp32 (fp64) storage, launched on the current stream. The math is cell_math.h's, through step.h's body.
// Only c10 CUDA headers: ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers this file does not need
// (and that a minimal toolkit lacks).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include "pointwise.h"

namespace fusedrnn {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size; the pass is memory-bound, occupancy is what matters

//: One element, converted to the accumulate type A on load and back to the storage type on store.
template <class A>
struct ScalarLane {
  template <class S>
  __device__ A load(const S* p) const {
    return static_cast<A>(*p);
  }
  template <class S>
  __device__ void store(S* p, A v) const {
    *p = static_cast<S>(v);
  }
  __device__ A zero() const { return A(0); }
};

template <class S, class Step, bool kForward>
__global__ void step_kernel(const Step s) {
  using A = at::acc_type<S, /*is_cuda=*/true>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= s.N * s.H) return;
  const int64_t n = index / s.H, j = index % s.H;
  if constexpr (kForward) {
    forward_element<ScalarMath, S>(s, ScalarLane<A>{}, n, j);
  } else {
    backward_element<ScalarMath, S>(s, ScalarLane<A>{}, n, j);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Layer norm: one block per batch row (haste's structure). The row's G*H pre-activations are reduced by the whole
// block (mean, then variance: two block reductions per norm), then the same threads run the gates, in the same
// kernel; step.h's forward_row / backward_row are the code, shared with the CPU pass. Any H: each thread strides
// over the row. UNVERIFIED on a GPU: compiled for sm_80/sm_90 without spills (tests/test_cuda_kernels_compile.py);
// the row partition and its barriers emulated by host threads under ThreadSanitizer
// (tests/test_cuda_row_kernel_host.py); the scalar math on the host (tests/test_cell_math_host.py);
// tests/test_variants_cuda.py runs it under `pytest -m gpu`.

//: Threads per row block: a G*H = 4096-wide row (LSTM, H = 1024) is 16 elements per thread per pass; the kernel is
//: latency-bound (a few passes over a row in L2), and 8 warps keep the block reduction to one shared-memory round.
constexpr int kRowThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kRowWarps = kRowThreads / kWarpSize;

//: step.h's Lanes for one block owning one row: thread k takes elements k, k + blockDim.x, ...; the lane is a single
//: element in the accumulate type A (so Vec = Compute = A, and keep() has nothing past the row's end to zero).
template <class A>
struct BlockLane : ScalarLane<A> {
  __device__ A keep(A v) const { return v; }
};

template <class A>
struct BlockLanes {
  using Compute = A;
  using Vec = A;
  template <class Body>
  __device__ void operator()(int64_t width, const Body& body) const {
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) body(BlockLane<A>{}, j);
  }
  //: The sum of every thread's v, returned to every thread in the same order of additions (deterministic). The
  //: closing barrier lets the next call reuse the shared partials.
  __device__ static A total(A v) {
    __shared__ A partial[kRowWarps];
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x % kWarpSize == 0) partial[threadIdx.x / kWarpSize] = v;
    __syncthreads();
    A sum = A(0);
    for (int w = 0; w < kRowWarps; ++w) sum += partial[w];
    __syncthreads();
    return sum;
  }
  __device__ void sync() const { __syncthreads(); }
};

template <class S, class Step, bool kForward>
__global__ void row_kernel(const Step s) {
  using A = at::acc_type<S, /*is_cuda=*/true>;
  if constexpr (kForward) {
    forward_row<ScalarMath, S>(s, BlockLanes<A>{}, blockIdx.x);
  } else {
    backward_row<ScalarMath, S>(s, BlockLanes<A>{}, blockIdx.x);
  }
}

//: One step: the element kernel over N*H, or with layer norm the row kernel over N blocks (grid x: up to 2^31 - 1).
template <bool kForward, class Step>
void launch(const Step& s, c10::ScalarType dtype) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool rows = s.norm.ih.p != nullptr;  // layer norm: one block per batch row
  const int64_t elements = s.N * s.H;
  if (elements == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fusedrnn_step_cuda", [&] {
    if (rows) {
      row_kernel<scalar_t, Step, kForward><<<static_cast<unsigned>(s.N), kRowThreads, 0, stream>>>(s);
    } else {
      const auto blocks = static_cast<unsigned>((elements + kThreads - 1) / kThreads);
      step_kernel<scalar_t, Step, kForward><<<blocks, kThreads, 0, stream>>>(s);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void forward_cuda(const ForwardStep& s, c10::ScalarType dtype) { launch<true>(s, dtype); }
void backward_cuda(const BackwardStep& s, c10::ScalarType dtype) { launch<false>(s, dtype); }

}  // namespace

const Pointwise& cuda_pointwise() {
  // One GEMM over the whole sequence: the caching allocator makes big buffers free, and a single cuBLAS call
  // accumulates weight gradients in fp32 even for fp16/bf16 storage.
  static const Pointwise pointwise{forward_cuda, backward_cuda, /*gemm_rows=*/0};
  return pointwise;
}

}  // namespace fusedrnn
