// The CPU pointwise pass: at::parallel_for over batch rows, at::vec::Vectorized lanes over hidden units.
//
// Compiled once per CPU capability, as ATen compiles its kernels: a variant file (pointwise_cpu_avx512.cpp, ...)
// includes pointwise_cpu_prelude.h, defines CPU_CAPABILITY / CPU_CAPABILITY_<NAME>, switches the instruction set on
// with `#pragma GCC target` and includes this file. Everything here, ATen's vector types included, then lives in that
// capability's namespace (fusedrnn::AVX512, at::vec::AVX512, ...), so no two variants, and none of them and
// libtorch's own copies, share a symbol. pointwise_cpu.cpp picks one variant at load time.
//
// Storage types: float and double compute in their own type; bfloat16 and float16 are loaded into float lanes
// (at::opmath_type), run the same float cell math and are rounded back to the storage type when stored. So h and c
// are rounded to the storage type between steps: the workspace, the states and their gradients have the call's one
// dtype (as on the CUDA loop path), and h is the next step's bf16 GEMM input anyway. A float32 c would need a second
// dtype in the workspace (saved c, c_n and dc: the saved layout, the Meta shapes and the backward loop). Measured
// against float64 (LSTM T=200 N=8 I=64 H=128, max abs error, ours vs torch.nn's CPU result in the same dtype):
// bfloat16 y 2.7e-3 vs 2.1e-3, c_n 3.5e-3 vs 2.6e-3, grad x 4.5e-3 vs 3.3e-3, grad W_hh 3.5e-2 vs 3.0e-2; float16
// y 3.1e-4 vs 5.9e-4, grad W_hh 5.5e-3 vs 2.9e-2. The tests hold every output and gradient within twice torch.nn's.
#pragma once

#ifndef CPU_CAPABILITY
#error "include pointwise_cpu_kernels.h from a variant file that defines CPU_CAPABILITY"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "pointwise_cpu_dispatch.h"
#include "slstm_step.h"
#include "step.h"

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

//: `count` consecutive elements of storage type S (count <= V::size()) as one vector of the compute type (S itself,
//: or float for bfloat16/float16); the tail of a row is a partial lane.
template <class S>
struct VecLane {
  using Compute = at::opmath_type<S>;
  using V = at::vec::Vectorized<Compute>;
  static constexpr bool kReduced = !std::is_same_v<S, Compute>;
  int64_t count;
  V load(const S* p) const {
    if constexpr (kReduced) {
      V v;
      if (count == V::size()) {
        at::vec::load_to_float(p, v);  // V::size() elements, no staging buffer
      } else {
        S tail[V::size()] = {};
        std::copy(p, p + count, tail);
        at::vec::load_to_float(tail, v);
      }
      return v;
    } else {
      return V::loadu(p, count);
    }
  }
  void store(S* p, const V& v) const {
    if constexpr (kReduced) {
      at::vec::convert_from_float<S>(v, v).store(p, static_cast<int>(count));  // the first count of 2 x V::size()
    } else {
      v.store(p, count);
    }
  }
  V zero() const { return V(Compute(0)); }
  //: v with the elements past `count` zeroed, for row sums (step.h: Lanes).
  V keep(const V& v) const { return V::set(V(Compute(0)), v, count); }
};

//: A row segment of storage type S as consecutive lanes (step.h: the row functions' `lanes`).
template <class S>
struct RowLanes {
  using Compute = typename VecLane<S>::Compute;
  using Vec = typename VecLane<S>::V;
  template <class Body>
  void operator()(int64_t width, const Body& body) const {
    for (int64_t j = 0; j < width; j += Vec::size()) body(VecLane<S>{std::min<int64_t>(Vec::size(), width - j)}, j);
  }
  static Compute total(const Vec& v) {
    return at::vec::vec_reduce_all<Compute>([](Vec a, Vec b) { return a + b; }, v);
  }
  void sync() const {}  // one thread owns the whole row
};

//: Rows per parallel task: enough elements that a task outweighs the thread hand-off (~a few microseconds).
constexpr int64_t kElementsPerTask = 16384;

//: body(n) for every batch row, in parallel tasks of about kElementsPerTask elements (a row has `row_elements`).
template <class Body>
void for_each_row(int64_t N, int64_t row_elements, Body body) {
  // max(1, ...): a hidden size of 0 (torch.nn allows it for cells) must not divide by zero.
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, row_elements));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) body(n);
  });
}

template <class Step, class Body>
void for_each_row(const Step& s, Body body) {
  for_each_row(s.N, s.H * gates_of(s.mode), body);
}

//: Whole rows (step.h: forward_row, backward_row): the layer norms need sums over a row.
void forward(const ForwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "fusedrnn_forward_cpu", [&] {
    for_each_row(s, [&](int64_t n) { forward_row<VecMath, scalar_t>(s, RowLanes<scalar_t>{}, n); });
  });
}

void backward(const BackwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "fusedrnn_backward_cpu", [&] {
    for_each_row(s, [&](int64_t n) { backward_row<VecMath, scalar_t>(s, RowLanes<scalar_t>{}, n); });
  });
}

//: sLSTM (slstm_step.h), float and double: half-precision calls are computed in float32 (fusedrnn/reference_slstm.py).
void slstm_forward(const SlstmForwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_slstm_forward_cpu", [&] {
    for_each_row(s.N, kSlstmGates * s.H,
                 [&](int64_t n) { slstm_forward_row<VecMath, scalar_t>(s, RowLanes<scalar_t>{}, n); });
  });
}

void slstm_backward(const SlstmBackwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_slstm_backward_cpu", [&] {
    for_each_row(s.N, kSlstmGates * s.H,
                 [&](int64_t n) { slstm_backward_row<VecMath, scalar_t>(s, RowLanes<scalar_t>{}, n); });
  });
}

#define FUSEDRNN_STRINGIFY_(x) #x
#define FUSEDRNN_STRINGIFY(x) FUSEDRNN_STRINGIFY_(x)

const PointwiseKernels kKernels{FUSEDRNN_STRINGIFY(CPU_CAPABILITY), forward, backward, slstm_forward, slstm_backward};

}  // namespace

const PointwiseKernels* pointwise_kernels() {
  return &kKernels;
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
