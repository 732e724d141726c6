// CUDA pointwise pass: one thread per (batch row, hidden unit), all gates of that unit, fp32 (fp64) arithmetic on
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

template <bool kForward, class Step>
void launch(const Step& s, c10::ScalarType dtype) {
  const int64_t elements = s.N * s.H;
  const auto blocks = static_cast<unsigned>((elements + kThreads - 1) / kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fusedrnn_step_cuda", [&] {
    step_kernel<scalar_t, Step, kForward><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(s);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

//: Layer norm needs sums over each row (step.h: forward_row, backward_row, host code): no CUDA kernel computes them
//: yet, so a call with the gains is an error here, never a silent pass without the norms.
constexpr const char* kNoLayerNorm = "fusedrnn: layer norm has no CUDA kernel yet (the cuda backend refuses it)";

void forward_cuda(const ForwardStep& s, c10::ScalarType dtype) {
  TORCH_CHECK(s.norm.ih.p == nullptr, kNoLayerNorm);
  launch<true>(s, dtype);
}
void backward_cuda(const BackwardStep& s, c10::ScalarType dtype) {
  TORCH_CHECK(s.norm.ih.p == nullptr, kNoLayerNorm);
  launch<false>(s, dtype);
}

}  // namespace

const Pointwise& cuda_pointwise() {
  // One GEMM over the whole sequence: the caching allocator makes big buffers free, and a single cuBLAS call
  // accumulates weight gradients in fp32 even for fp16/bf16 storage.
  static const Pointwise pointwise{forward_cuda, backward_cuda, /*gemm_rows=*/0};
  return pointwise;
}

}  // namespace fusedrnn
