// CPU pointwise pass: at::parallel_for over batch rows, at::vec::Vectorized lanes (SLEEF exp/tanh) over hidden units.
//
// On x86-64 the extension is compiled with -mavx2 -mfma (setup.py, fusedrnn/_extension.py); ATen's vector types
// then live in their at::vec::AVX2 namespace, so nothing here collides with default-capability copies in libtorch.
// The loader refuses to import the extension on a CPU without AVX2. Elsewhere the portable vector fallback is used.
#if defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "pointwise.h"

namespace fusedrnn {
namespace {

//: |x| beyond which tanh(x) rounds to +-1 even in double (1 - tanh(20) ~ 8e-18); keeps expm1(2x) finite.
constexpr double kTanhSaturation = 20;

//: Vectorized primitives with the same names as ScalarMath (cell_math.h).
struct VecMath {
  template <class V>
  static V sigmoid(V x) {
    return V(1) / (V(1) + x.neg().exp());
  }
  //: tanh(x) = e / (e + 2) with e = expm1(2x): SLEEF's expm1 costs a fraction of its tanh (the tanh was ~25% of the
  //: LSTM step at N=4, H=256) and stays accurate near 0. |x| is clamped where tanh is already +-1 in double.
  template <class V>
  static V tanh(V x) {
    const V e = (at::vec::clamp(x, V(-kTanhSaturation), V(kTanhSaturation)) * V(2)).expm1();
    return e / (e + V(2));
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
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / (s.H * gates_of(s.mode)));
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
  static const Pointwise pointwise{forward_cpu, backward_cpu, kGemmRows};
  return pointwise;
}

}  // namespace fusedrnn
