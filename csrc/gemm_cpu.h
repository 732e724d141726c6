// The CPU backend's per-step recurrent GEMM, wired into cpu_pointwise() (pointwise_cpu.cpp).
#pragma once

namespace at {
class Tensor;
}

namespace fusedrnn {

//: c = a b (c += a b when accumulate) on 2-D CPU tensors, see Pointwise::step_gemm; false where it does not apply.
bool step_gemm_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate);

}  // namespace fusedrnn
