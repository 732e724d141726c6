// VecMath: the cell math's primitives (cell_math.h: ScalarMath's names) on at::vec::Vectorized lanes, for the CPU
// kernels compiled once per CPU capability (pointwise_cpu_kernels.h, lstm_cpu_fused_kernels.h). Include only from a
// variant file that defines CPU_CAPABILITY (see pointwise_cpu_kernels.h).
#pragma once

#ifndef CPU_CAPABILITY
#error "include cpu_vec_math.h from a variant file that defines CPU_CAPABILITY"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <type_traits>

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

//: rational_tanh's fitted range and the |x| below which it returns x (tanh(x) = x in float there).
constexpr float kRationalTanhClamp = 7.90531110763549805f;
constexpr float kRationalTanhTiny = 0.0004f;

//: Vectorized primitives with the same names as ScalarMath (cell_math.h).
struct VecMath {
  //: exp_u20: ATen's polynomial exp (about 20 ulp in float, 3x cheaper than SLEEF's; float64 keeps the exact exp).
  //: The sigmoids were the largest part of the LSTM step at small batch.
  template <class V>
  static V sigmoid(V x) {
    return V(1) / (V(1) + x.neg().exp_u20());
  }
  //: float: a [13/6] rational approximation (Eigen's fast tanh, max error 6 ulp), a few FMAs and one division;
  //: SLEEF's expm1 below was the largest single cost of the LSTM step in float (perf: as much as each GEMM).
  //: double: tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1], the sign put back. One exp: SLEEF's
  //: double expm1 (used here before) cost ~4x its exp and was the largest single cost of the float64 LSTM step
  //: (perf, N=97 H=51). The absolute error stays within a few ulp of 1; near 0 the relative error grows
  //: (1 - e cancels), as it does not matter next to the O(1) states it is added to.
  template <class V>
  static V tanh(V x) {
    if constexpr (std::is_same_v<typename V::value_type, float>) {
      return rational_tanh(x);
    } else {
      const V e = (x.abs() * V(-2)).exp();
      const V magnitude = (V(1) - e) / (V(1) + e);
      return V::blendv(magnitude, magnitude.neg(), x < V(0));
    }
  }
  template <class V>
  static V rational_tanh(V x) {
    // Odd numerator and even denominator coefficients, fitted on [-kRationalTanhClamp, kRationalTanhClamp]; beyond
    // the clamp the quotient is 1 to float precision. Below kRationalTanhTiny, tanh(x) = x in float.
    const V clamped = at::vec::clamp(x, V(-kRationalTanhClamp), V(kRationalTanhClamp));
    const V x2 = clamped * clamped;
    V p = V(-2.76076847742355e-16f);
    for (float a : {2.00018790482477e-13f, -8.60467152213735e-11f, 5.12229709037114e-08f, 1.48572235717979e-05f,
                    6.37261928875436e-04f, 4.89352455891786e-03f}) {
      p = at::vec::fmadd(p, x2, V(a));
    }
    V q = V(1.19825839466702e-06f);
    for (float b : {1.18534705686654e-04f, 2.26843463243900e-03f, 4.89352518554385e-03f}) {
      q = at::vec::fmadd(q, x2, V(b));
    }
    return V::blendv(clamped * p / q, x, x.abs() < V(kRationalTanhTiny));
  }
  template <class V>
  static V relu(V x) {
    return at::vec::maximum(x, V(0));  // propagates NaN, as torch.relu
  }
  template <class V>
  static V relu_backward(V y, V dy) {
    return V::blendv(V(0), dy, y > V(0));
  }
  // sLSTM's primitives (cell_math.h: ScalarMath's). exp is SLEEF's (1 ulp), not exp_u20: the stabiliser's
  // exp(i~ - m) and exp(log f + m_{t-1} - m) are gates themselves, not inputs to a saturating sigmoid.
  template <class V>
  static V exp(V x) {
    return x.exp();
  }
  template <class V>
  static V logsigmoid(V x) {
    return at::vec::minimum(x, V(0)) - x.abs().neg().exp().log1p();
  }
  template <class V>
  static V minimum(V a, V b) {
    return at::vec::minimum(a, b);
  }
  template <class V>
  static V maximum(V a, V b) {
    return at::vec::maximum(a, b);
  }
  template <class V>
  static V max_weight(V a, V b) {
    return V::blendv(V::blendv(V(0), V(0.5), a == b), V(1), a > b);
  }
  template <class V>
  static V at_most(V x, V bound) {
    return V::blendv(V(0), V(1), x <= bound);
  }
};

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
