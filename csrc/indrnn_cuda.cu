// The whole-sequence IndRNN kernels (indrnn_plan.h decides when they run): one thread per (batch row, hidden unit),
// running indrnn_sequence.h's time loop, forward or backward, fp32 (fp64) arithmetic on fp16/bf16/fp32 (fp64) storage,
// on the current stream. Consecutive threads own consecutive units of a row, so every step's loads and stores are
// coalesced. Only c10 CUDA headers, as pointwise_cuda.cu. UNVERIFIED on a GPU: compiled for sm_80/sm_90 without
// spills (tests/test_cuda_kernels_compile.py), the loops run on the host against float64 autograd
// (tests/test_indrnn_sequence_host.py) and, with the host code around them, through the op on CPU
// (tests/test_indrnn_sequence_cpu.py); tests/test_indrnn_cuda.py runs them under `pytest -m gpu`.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "indrnn_host.h"
#include "indrnn_plan.h"
#include "indrnn_sequence.h"

namespace fusedrnn::indrnn {
namespace {

template <class S, class Params, bool kForward>
__global__ void __launch_bounds__(kThreads) sequence_kernel(const Params p) {
  using A = indrnn_accumulate_t<S>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= p.N * p.H) return;
  const int64_t n = index / p.H, j = index % p.H;
  if constexpr (kForward) {
    indrnn_forward_unit<ScalarMath, S, A>(p, n, j);
  } else {
    indrnn_backward_unit<ScalarMath, S, A>(p, n, j);
  }
}

template <bool kForward, class Params>
void launch(const Params& p, c10::ScalarType dtype) {
  if (p.N * p.H == 0) return;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto blocks = static_cast<unsigned>(blocks_for(p.N, p.H));  // the planner bounds it (kMaxBlocks)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fusedrnn_indrnn_sequence_cuda", [&] {
    sequence_kernel<scalar_t, Params, kForward><<<blocks, kThreads, 0, stream>>>(p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_forward(const IndrnnForward& p, c10::ScalarType dtype) { launch<true>(p, dtype); }
void launch_backward(const IndrnnBackward& p, c10::ScalarType dtype) { launch<false>(p, dtype); }

}  // namespace fusedrnn::indrnn
