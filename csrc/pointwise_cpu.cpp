// CPU pointwise pass: one of its compiled variants (pointwise_cpu_kernels.h), chosen at load time. The GEMMs it is
// paired with (Pointwise::step_gemm, prepared_gemm) live in gemm_cpu.cpp.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "gemm_cpu.h"
#include "pointwise.h"
#include "pointwise_cpu_dispatch.h"

namespace fusedrnn {
namespace {

//: Whether this CPU runs `capability`'s variant: ATen's requirements for it (AVX2: AVX2 and FMA; AVX512: F, BW, VL,
//: DQ and FMA), asked of the CPU itself, so a forced ATEN_CPU_CAPABILITY never selects code the CPU cannot run.
bool cpu_runs(const std::string& capability) {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (capability == "AVX2") return avx2;
  if (capability == "AVX512") {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
#endif
  return capability == "DEFAULT";
}

//: The variant for ATen's CPU capability (at::get_cpu_capability: the CPU's best, or ATEN_CPU_CAPABILITY where set,
//: as torch.backends.cpu.get_cpu_capability() reports it), else the widest narrower one compiled here and runnable.
const PointwiseKernels& selected_kernels() {
  static const PointwiseKernels& kernels = []() -> const PointwiseKernels& {
    const std::string wanted = at::get_cpu_capability();
    const PointwiseKernels* widest_first[] = {AVX512::pointwise_kernels(), AVX2::pointwise_kernels()};
    bool reached = false;  // candidates at or below the wanted capability
    for (const PointwiseKernels* candidate : widest_first) {
      if (candidate == nullptr) continue;
      reached = reached || wanted == candidate->capability;
      if (reached && cpu_runs(candidate->capability)) return *candidate;
    }
    return *DEFAULT::pointwise_kernels();
  }();
  return kernels;
}

void forward_cpu(const ForwardStep& s, c10::ScalarType dtype) {
  selected_kernels().forward(s, dtype);
}

void backward_cpu(const BackwardStep& s, c10::ScalarType dtype) {
  selected_kernels().backward(s, dtype);
}

void slstm_forward_cpu(const SlstmForwardStep& s, c10::ScalarType dtype) {
  selected_kernels().slstm_forward(s, dtype);
}

void slstm_backward_cpu(const SlstmBackwardStep& s, c10::ScalarType dtype) {
  selected_kernels().slstm_backward(s, dtype);
}

//: Rows of one input-projection / weight-gradient GEMM: BLAS reaches its large-GEMM speed well below this, and the
//: chunk's buffers (rows x G*H) stay small enough to be reused from cache.
constexpr int64_t kGemmRows = 1024;

}  // namespace

const Pointwise& cpu_pointwise() {
  static const Pointwise pointwise{forward_cpu,       backward_cpu,       kGemmRows,         step_gemm_cpu,
                                   &cpu_prepared_gemm(), headwise_gemm_cpu, slstm_forward_cpu, slstm_backward_cpu};
  return pointwise;
}

const char* cpu_pointwise_capability() {
  return selected_kernels().capability;
}

const FusedLstmKernel& cpu_fused_lstm_kernel() {
  return *selected_kernels().fused_lstm;
}

}  // namespace fusedrnn
