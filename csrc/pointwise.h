// The seam between the device-agnostic host loop (rnn_loop.cpp) and a device's pointwise pass.
#pragma once

#include <c10/core/ScalarType.h>

#include "step.h"

namespace at {
class Tensor;
}

namespace fusedrnn {

//: One device's pointwise pass (one step for all N*H elements, asynchronously on the current stream), and how the
//: host loop should size that device's GEMMs.
struct Pointwise {
  void (*forward)(const ForwardStep&, c10::ScalarType);
  void (*backward)(const BackwardStep&, c10::ScalarType);
  //: Rows (steps x batch) per input-projection / weight-gradient GEMM; 0: the whole sequence in one GEMM.
  int64_t gemm_rows;
  //: Optional per-step recurrent GEMM c = a b (c += a b when accumulate) on 2-D tensors (a [M, K], b [K, C] or a
  //: transposed view, c [M, C]); returns false where it does not apply, and the host loop calls ATen instead.
  bool (*step_gemm)(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) = nullptr;
};

const Pointwise& cpu_pointwise();
//: The CPU capability whose pointwise variant cpu_pointwise() runs: "DEFAULT", "AVX2" or "AVX512" (ATen's names).
const char* cpu_pointwise_capability();
#ifdef FUSEDRNN_WITH_CUDA
const Pointwise& cuda_pointwise();
#endif

}  // namespace fusedrnn
