// The CPU kernels' variants, one per CPU capability (pointwise_cpu_kernels.h: the pointwise pass, and the fused LSTM
// forward of lstm_cpu_fused_kernels.h), and what pointwise_cpu.cpp chooses among.
#pragma once

#include <c10/core/ScalarType.h>

#include "lstm_cpu_fused.h"

// Declared only: step.h must be included by the variants after their target pragma (pointwise_cpu_prelude.h).

namespace fusedrnn {

struct ForwardStep;
struct BackwardStep;
struct SlstmForwardStep;
struct SlstmBackwardStep;

struct PointwiseKernels {
  const char* capability;  // as ATen names it: "DEFAULT", "AVX2", "AVX512"
  void (*forward)(const ForwardStep&, c10::ScalarType);
  void (*backward)(const BackwardStep&, c10::ScalarType);
  void (*slstm_forward)(const SlstmForwardStep&, c10::ScalarType);
  void (*slstm_backward)(const SlstmBackwardStep&, c10::ScalarType);
  const FusedLstmKernel* fused_lstm;
};

// Each returns its variant, or null where that variant is not compiled in (not x86-64, or not GCC).
namespace DEFAULT {
const PointwiseKernels* pointwise_kernels();
}
namespace AVX2 {
const PointwiseKernels* pointwise_kernels();
}
namespace AVX512 {
const PointwiseKernels* pointwise_kernels();
}

}  // namespace fusedrnn
