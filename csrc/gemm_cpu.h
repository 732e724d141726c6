// The CPU backend's per-step recurrent GEMM, wired into cpu_pointwise() (pointwise_cpu.cpp).
#pragma once

#include "pointwise.h"

namespace fusedrnn {

//: c = a b (c += a b when accumulate) on 2-D CPU tensors, see Pointwise::step_gemm; false where it does not apply.
bool step_gemm_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate);

//: One operand of a headwise product, row-major in the call's dtype: head k's matrix starts `head_stride` elements
//: after head k-1's; element (i, j) is at p[i * ld + j], or at p[j * ld + i] when `transposed` (the memory holds
//: the operand's transpose, e.g. a row-major weight [C, K] used as its [K, C] transpose).
struct HeadOperand {
  const void* p;
  int64_t ld, head_stride;
  bool transposed = false;
};

//: The block-diagonal product of multi-head recurrences: for every head k < heads, c_k = a_k b_k (c_k += a_k b_k
//: when accumulate), a_k [M, K], b_k [K, C], c_k [M, C] (c never transposed); float or double. Heads run in parallel
//: over torch's threads, each one BLAS call (ATen's GEMM where libtorch has no BLAS).
void headwise_gemm_cpu(c10::ScalarType dtype, int64_t heads, int64_t M, int64_t K, int64_t C, HeadOperand a,
                       HeadOperand b, HeadOperand c, bool accumulate);

//: oneDNN's matmul (the library of torch.nn's CPU LSTM) with weights reordered once per call; see PreparedGemm.
const PreparedGemm& cpu_prepared_gemm();

}  // namespace fusedrnn
