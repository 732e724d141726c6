// CPU pointwise pass: at::parallel_for over batch rows, at::vec::Vectorized lanes over hidden units. The per-step
// recurrent GEMM it is paired with (Pointwise::step_gemm) lives in gemm_cpu.cpp.
//
// On x86-64 the extension is compiled with -mavx2 -mfma (setup.py, fusedrnn/_extension.py); ATen's vector types
// then live in their at::vec::AVX2 namespace, so nothing here collides with default-capability copies in libtorch.
// The loader refuses to import the extension on a CPU without AVX2. Elsewhere the portable vector fallback is used.
#if defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>

#include "gemm_cpu.h"
#include "pointwise.h"

namespace fusedrnn {
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
};

//: `count` consecutive elements (count <= V::size()); the tail of a row is a partial lane.
template <class S>
struct VecLane {
  using V = at::vec::Vectorized<S>;
  int64_t count;
  V load(const S* p) const { return V::loadu(p, count); }
  void store(S* p, const V& v) const { v.store(p, count); }
  V zero() const { return V(S(0)); }
};

//: Rows of one input-projection / weight-gradient GEMM: BLAS reaches its large-GEMM speed well below this, and the
//: chunk's buffers (rows x G*H) stay small enough to be reused from cache.
constexpr int64_t kGemmRows = 1024;

//: Rows per parallel task: enough elements that a task outweighs the thread hand-off (~a few microseconds).
constexpr int64_t kElementsPerTask = 16384;

template <class S, class Step, class Body>
void for_each_lane(const Step& s, Body body) {
  using V = at::vec::Vectorized<S>;
  // max(1, ...): a hidden size of 0 (torch.nn allows it for cells) must not divide by zero.
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, s.H * gates_of(s.mode)));
  at::parallel_for(0, s.N, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t j = 0; j < s.H; j += V::size()) {
        body(VecLane<S>{std::min<int64_t>(V::size(), s.H - j)}, n, j);
      }
    }
  });
}

void forward_cpu(const ForwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_forward_cpu", [&] {
    for_each_lane<scalar_t>(s, [&](const auto& lane, int64_t n, int64_t j) {
      forward_element<VecMath, scalar_t>(s, lane, n, j);
    });
  });
}

void backward_cpu(const BackwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_backward_cpu", [&] {
    for_each_lane<scalar_t>(s, [&](const auto& lane, int64_t n, int64_t j) {
      backward_element<VecMath, scalar_t>(s, lane, n, j);
    });
  });
}

}  // namespace

const Pointwise& cpu_pointwise() {
  static const Pointwise pointwise{forward_cpu, backward_cpu, kGemmRows, step_gemm_cpu, &cpu_prepared_gemm()};
  return pointwise;
}

}  // namespace fusedrnn
