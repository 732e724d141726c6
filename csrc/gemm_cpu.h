// The CPU backend's per-step recurrent GEMM, wired into cpu_pointwise() (pointwise_cpu.cpp).
#pragma once

#include "pointwise.h"

namespace fusedrnn {

//: c = a b (c += a b when accumulate) on 2-D CPU tensors, see Pointwise::step_gemm; false where it does not apply.
bool step_gemm_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate);

//: Pointwise::headwise_gemm on CPU: the products run in parallel over torch's threads, each one BLAS call (float,
//: double; ATen's GEMM for the half types or where libtorch has no BLAS).
void headwise_gemm_cpu(c10::ScalarType dtype, int64_t heads, int64_t gates, int64_t M, int64_t K, int64_t C,
                       HeadOperand a, HeadOperand b, HeadOperand c, bool accumulate);

//: oneDNN's matmul (the library of torch.nn's CPU LSTM) with weights reordered once per call; see PreparedGemm.
const PreparedGemm& cpu_prepared_gemm();

}  // namespace fusedrnn
