// The seam between the device-agnostic host loop (rnn_loop.cpp) and a device's pointwise pass.
#pragma once

#include <c10/core/ScalarType.h>

#include "step.h"

namespace fusedrnn {

//: One device's pointwise pass: runs one step for all N*H elements, asynchronously on the current stream.
struct Pointwise {
  void (*forward)(const ForwardStep&, c10::ScalarType);
  void (*backward)(const BackwardStep&, c10::ScalarType);
};

const Pointwise& cpu_pointwise();
#ifdef FUSEDRNN_WITH_CUDA
const Pointwise& cuda_pointwise();
#endif

}  // namespace fusedrnn
