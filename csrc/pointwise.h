// The seam between the device-agnostic host loop (rnn_loop.cpp) and a device's pointwise pass.
#pragma once

#include <c10/core/ScalarType.h>

#include "step.h"

namespace fusedrnn {

//: One device's pointwise pass (one step for all N*H elements, asynchronously on the current stream), and how the
//: host loop should size that device's GEMMs.
struct Pointwise {
  void (*forward)(const ForwardStep&, c10::ScalarType);
  void (*backward)(const BackwardStep&, c10::ScalarType);
  //: Rows (steps x batch) per input-projection / weight-gradient GEMM; 0: the whole sequence in one GEMM.
  int64_t gemm_rows;
};

const Pointwise& cpu_pointwise();
#ifdef FUSEDRNN_WITH_CUDA
const Pointwise& cuda_pointwise();
#endif

}  // namespace fusedrnn
