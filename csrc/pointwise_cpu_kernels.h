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

#include "cpu_vec_math.h"
#include "lstm_cpu_fused_backward_kernels.h"
#include "pointwise_cpu_dispatch.h"
#include "slstm_step.h"
#include "step.h"

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

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

const FusedLstmKernel kFusedLstm{
    {kPanelUnits, fused_packed_size<LstmCell::kGates>, fused_pack<LstmCell::kGates>, fused_run_thread<LstmCell>},
    {kPanelUnits, fused_packed_size<GruCell::kGates>, fused_pack<GruCell::kGates>, fused_run_thread<GruCell>},
    {kGroupUnits, fused_backward_packed_size<LstmCell::kGates>, fused_pack_backward<LstmCell::kGates>,
     fused_run_backward_thread<LstmBackwardCell>},
    {kGroupUnits, fused_backward_packed_size<GruCell::kGates>, fused_pack_backward<GruCell::kGates>,
     fused_run_backward_thread<GruBackwardCell>}};
const PointwiseKernels kKernels{FUSEDRNN_STRINGIFY(CPU_CAPABILITY), forward, backward, slstm_forward,
                                slstm_backward, &kFusedLstm};

}  // namespace

const PointwiseKernels* pointwise_kernels() {
  return &kKernels;
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
