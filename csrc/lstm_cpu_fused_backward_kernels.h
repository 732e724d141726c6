// The fused LSTM backward's per-thread step loop (lstm_cpu_fused.h: FusedLstmBackwardArgs), float32, compiled per
// CPU capability with the forward (lstm_cpu_fused_kernels.h), whose micro-kernel loop (accumulate) it shares. A
// thread owns groups of 4 x 16 hidden units: per step it computes dh_t for its units (dg_{t+1} W_hh, K = 4H, against
// W_hh's columns packed per group), then the cell's backward for those units, which needs nothing from the other
// threads; the barrier after each step makes that step's dg rows whole for the next.
#pragma once

#include "lstm_cpu_fused_kernels.h"

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

//: Hidden units per backward work group: the micro-kernel's 4 vectors side by side.
constexpr int64_t kGroupUnits = kLstmGates * kPanelUnits;

//: Floats per group: the 4H rows of W_hh, kGroupUnits columns each.
int64_t backward_group_size(int64_t H) {
  return kLstmGates * H * kGroupUnits;
}

int64_t fused_backward_packed_size(int64_t H) {
  return blocks_of(H, kGroupUnits) * backward_group_size(H);
}

void fused_pack_backward(const float* w_hh, int64_t H, int64_t first, int64_t last, float* packed) {
  for (int64_t q = first; q < last; ++q) {
    float* group = packed + q * backward_group_size(H);
    const int64_t j0 = q * kGroupUnits, units = std::min(kGroupUnits, H - j0);
    for (int64_t k = 0; k < kLstmGates * H; ++k) {
      float* out = group + k * kGroupUnits;
      std::memcpy(out, w_hh + k * H + j0, units * sizeof(float));
      std::fill(out + units, out + kGroupUnits, 0.f);
    }
  }
}

//: One step of the backward, as the micro-kernel needs it.
struct BackwardStepPointers {
  int64_t t;
  const float* dg_next;  // [N, 4H] of the step processed before (t + 1 in forward order), or null at the first
  const float* saved;    // [N, 5H] this step's i f g o c
  const float* c_prev;   // c_{t-1}: c0 [N, H] or the saved c column of step t-1 (row stride 5H)
  int64_t c_prev_ld;
  const float* grad_y;  // [N, H]
  float* dg;            // [N, 4H] this step's gate gradients
};

//: Rows [n0, n0 + R) of group q: dh for the group's units in registers, then the cell's backward per 16-unit block.
template <int R>
void backward_tile(const FusedLstmBackwardArgs& a, const BackwardStepPointers& st, int64_t q, int64_t n0) {
  using V = FusedVec;
  const int64_t H = a.H, GH = kLstmGates * H;
  RawVec acc[R][kLstmGates] = {};
  if (st.dg_next != nullptr) {
    accumulate<kLstmGates, R>(a.packed + q * backward_group_size(H), GH, st.dg_next + n0 * GH, GH, acc);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t n = n0 + r;
#pragma GCC unroll 4
    for (int p = 0; p < kLstmGates; ++p) {
      const int64_t j = q * kGroupUnits + p * kPanelUnits;
      if (j >= H) break;
      const int count = static_cast<int>(std::min(kPanelUnits, H - j));
      float* carry = a.dh_carry + n * H + j;
      const V dh = to_vec(acc[r][p]) + V::loadu(st.grad_y + n * H + j, count) + V::loadu(carry, count);
      float* dg = st.dg + n * GH + j;
      if (!row_valid(a.lengths, st.t, n)) {  // a finished row: no gate gradients, dh and dc pass through (step.h)
        for (int g = 0; g < kLstmGates; ++g) V(0.f).store(dg + g * H, count);
        dh.store(carry, count);
        continue;
      }
      V(0.f).store(carry, count);
      const float* ws = st.saved + n * kLstmSaved * H + j;
      float* dc = a.dc + n * H + j;
      V dai, daf, dag, dao, dc_prev;
      lstm_backward<VecMath>(V::loadu(ws, count), V::loadu(ws + H, count), V::loadu(ws + 2 * H, count),
                             V::loadu(ws + 3 * H, count), V::loadu(ws + 4 * H, count),
                             V::loadu(st.c_prev + n * st.c_prev_ld + j, count), dh, V::loadu(dc, count), dai, daf,
                             dag, dao, dc_prev);
      dai.store(dg, count), daf.store(dg + H, count), dag.store(dg + 2 * H, count), dao.store(dg + 3 * H, count);
      dc_prev.store(dc, count);
    }
  }
}

void fused_run_backward_thread(const FusedLstmBackwardArgs& a, int thread, int threads, SpinBarrier& barrier) {
  const ThreadSlice slice = thread_slice(a.split, blocks_of(a.H, kGroupUnits), a.N, thread, threads);
  const int64_t N = a.N, H = a.H, GH = kLstmGates * H, WS = kLstmSaved * H;
  for (int64_t s = 0; s < a.T; ++s) {  // the forward's steps, last first
    const int64_t t = a.reverse ? s : a.T - 1 - s;
    const int64_t t_next = a.reverse ? t - 1 : t + 1, t_prev = a.reverse ? t + 1 : t - 1;
    const bool first_forward_step = a.reverse ? t == a.T - 1 : t == 0;
    BackwardStepPointers st{t,
                            s == 0 ? nullptr : a.dg + t_next * N * GH,
                            a.saved + t * N * WS,
                            first_forward_step ? a.c0 : a.saved + t_prev * N * WS + kLstmGates * H,
                            first_forward_step ? H : WS,
                            a.grad_y + t * N * H,
                            a.dg + t * N * GH};
    for (int64_t q = slice.first_block; q < slice.last_block; ++q) {
      for_row_tiles(slice.first_row, slice.last_row, [&]<int R>(int64_t n0) { backward_tile<R>(a, st, q, n0); });
    }
    if (a.split == Split::Units && s + 1 < a.T) barrier.wait(threads);
  }
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
