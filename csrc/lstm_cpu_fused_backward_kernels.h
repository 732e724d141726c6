// The fused LSTM and GRU backwards' per-thread step loop (lstm_cpu_fused.h: FusedLstmBackwardArgs), float32, compiled
// per CPU capability with the forward (lstm_cpu_fused_kernels.h), whose micro-kernel loop (accumulate) it shares. A
// thread owns groups of 4 x 16 hidden units: per step it computes dh_t for its units (dg_{t+1} W_hh, K = G*H, against
// W_hh's columns packed per group), then the cell's backward for those units, which needs nothing from the other
// threads; the barrier after each step makes that step's dg rows whole for the next.
#pragma once

#include "lstm_cpu_fused_kernels.h"

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

//: Hidden units per backward work group: the micro-kernel's 4 vectors side by side.
constexpr int64_t kGroupUnits = 4 * kPanelUnits;
constexpr int kGroupBlocks = 4;

//: Floats per group of a G-gate cell: the G*H rows of W_hh, kGroupUnits columns each.
template <int G>
int64_t backward_group_size(int64_t H) {
  return G * H * kGroupUnits;
}

template <int G>
int64_t fused_backward_packed_size(int64_t H) {
  return blocks_of(H, kGroupUnits) * backward_group_size<G>(H);
}

template <int G>
void fused_pack_backward(const float* w_hh, int64_t H, int64_t first, int64_t last, float* packed) {
  for (int64_t q = first; q < last; ++q) {
    float* group = packed + q * backward_group_size<G>(H);
    const int64_t j0 = q * kGroupUnits, units = std::min(kGroupUnits, H - j0);
    for (int64_t k = 0; k < G * H; ++k) {
      float* out = group + k * kGroupUnits;
      std::memcpy(out, w_hh + k * H + j0, units * sizeof(float));
      std::fill(out + units, out + kGroupUnits, 0.f);
    }
  }
}

//: One step of the backward, as the micro-kernel needs it.
struct BackwardStepPointers {
  int64_t t;
  const float* dg_next;  // [N, dg width] of the step processed before (t + 1 in forward order), or null at the first
  const float* saved;    // [N, saved width] this step's activations (LSTM i f g o c, GRU r z n hn)
  const float* prev;     // LSTM: c_{t-1}, c0 [N, H] or the saved c column of step t-1; GRU: h_{t-1}, h0 or y[t-1]
  int64_t prev_ld;
  const float* grad_y;  // [N, H]
  float* dg;            // [N, dg width] this step's gate gradients
};

//: The LSTM's backward for row n, units [j, j + count), given dh: dg = the 4 gates' pre-activation gradients, dc
//: carried to the step before (a finished row, which backward_tile handles, leaves dc as it is).
struct LstmBackwardCell {
  static constexpr int kGates = kLstmGates;
  static constexpr int kSaved = kLstmSaved;
  static constexpr int kDgWidth = kLstmGates;  // dg's columns, in units of H: i f g o
  static const float* prev(const FusedLstmBackwardArgs& a, bool first_step, int64_t t_prev) {
    return first_step ? a.c0 : a.saved + t_prev * a.N * kSaved * a.H + kLstmGates * a.H;
  }
  static int64_t prev_ld(const FusedLstmBackwardArgs& a, bool first_step) { return first_step ? a.H : kSaved * a.H; }
  __attribute__((always_inline)) static void row(const FusedLstmBackwardArgs& a, const BackwardStepPointers& st,
                                                 const FusedVec& dh, int64_t n, int64_t j, int count) {
    using V = FusedVec;
    const int64_t H = a.H;
    float* dg = st.dg + n * kDgWidth * H + j;
    V(0.f).store(a.dh_carry + n * H + j, count);
    const float* ws = st.saved + n * kSaved * H + j;
    float* dc = a.dc + n * H + j;
    V dai, daf, dag, dao, dc_prev;
    lstm_backward<VecMath>(V::loadu(ws, count), V::loadu(ws + H, count), V::loadu(ws + 2 * H, count),
                           V::loadu(ws + 3 * H, count), V::loadu(ws + 4 * H, count),
                           V::loadu(st.prev + n * st.prev_ld + j, count), dh, V::loadu(dc, count), dai, daf, dag,
                           dao, dc_prev);
    dai.store(dg, count), daf.store(dg + H, count), dag.store(dg + 2 * H, count), dao.store(dg + 3 * H, count);
    dc_prev.store(dc, count);
  }
};

//: The GRU's backward for row n (cell_math.h's gru_backward): dg holds the recurrent side's r z n gradients (dh_{t-1}
//: = dg[:, :3H] W_hh, dW_hh, db_hh) and then the input side's n gradient (the input side's r and z are the same);
//: the direct part of dh_{t-1} (z dh) is carried.
struct GruBackwardCell {
  static constexpr int kGates = 3;
  static constexpr int kSaved = kGruSaved;
  static constexpr int kDgWidth = 4;  // dg's columns, in units of H: r z n (recurrent side), n (input side)
  static const float* prev(const FusedLstmBackwardArgs& a, bool first_step, int64_t t_prev) {
    return first_step ? a.h0 : a.y + t_prev * a.N * a.H;
  }
  static int64_t prev_ld(const FusedLstmBackwardArgs& a, bool) { return a.H; }
  __attribute__((always_inline)) static void row(const FusedLstmBackwardArgs& a, const BackwardStepPointers& st,
                                                 const FusedVec& dh, int64_t n, int64_t j, int count) {
    using V = FusedVec;
    const int64_t H = a.H;
    float* dg = st.dg + n * kDgWidth * H + j;
    const float* ws = st.saved + n * kSaved * H + j;
    V dar, daz, da_in, dhn, direct;
    gru_backward<VecMath>(V::loadu(ws, count), V::loadu(ws + H, count), V::loadu(ws + 2 * H, count),
                          V::loadu(ws + 3 * H, count), V::loadu(st.prev + n * st.prev_ld + j, count), dh, dar, daz,
                          da_in, dhn, direct);
    dar.store(dg, count), daz.store(dg + H, count), dhn.store(dg + 2 * H, count), da_in.store(dg + 3 * H, count);
    direct.store(a.dh_carry + n * H + j, count);
  }
};

//: Rows [n0, n0 + R) of group q: dh for the group's units in registers, then the cell's backward per 16-unit block;
//: a finished row has no gate gradients and passes dh (and the LSTM's dc) through to the step before (step.h).
template <class Cell, int R>
void backward_tile(const FusedLstmBackwardArgs& a, const BackwardStepPointers& st, int64_t q, int64_t n0) {
  using V = FusedVec;
  const int64_t H = a.H, K = Cell::kGates * H, ld = Cell::kDgWidth * H;
  RawVec acc[R][kGroupBlocks] = {};
  if (st.dg_next != nullptr) {
    accumulate<kGroupBlocks, R>(a.packed + q * backward_group_size<Cell::kGates>(H), K, st.dg_next + n0 * ld, ld,
                                acc);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t n = n0 + r;
#pragma GCC unroll 4
    for (int p = 0; p < kGroupBlocks; ++p) {
      const int64_t j = q * kGroupUnits + p * kPanelUnits;
      if (j >= H) break;
      const int count = static_cast<int>(std::min(kPanelUnits, H - j));
      const V dh = to_vec(acc[r][p]) + V::loadu(st.grad_y + n * H + j, count) +
                   V::loadu(a.dh_carry + n * H + j, count);
      if (!row_valid(a.lengths, st.t, n)) {
        for (int g = 0; g < Cell::kDgWidth; ++g) V(0.f).store(st.dg + (n * Cell::kDgWidth + g) * H + j, count);
        dh.store(a.dh_carry + n * H + j, count);
        continue;
      }
      Cell::row(a, st, dh, n, j, count);
    }
  }
}

template <class Cell>
void fused_run_backward_thread(const FusedLstmBackwardArgs& a, int thread, int threads, SpinBarrier& barrier) {
  const ThreadSlice slice = thread_slice(a.split, blocks_of(a.H, kGroupUnits), a.N, thread, threads);
  const int64_t N = a.N, H = a.H, DG = Cell::kDgWidth * H, WS = Cell::kSaved * H;
  for (int64_t s = 0; s < a.T; ++s) {  // the forward's steps, last first
    const int64_t t = a.reverse ? s : a.T - 1 - s;
    const int64_t t_next = a.reverse ? t - 1 : t + 1, t_prev = a.reverse ? t + 1 : t - 1;
    const bool first_forward_step = a.reverse ? t == a.T - 1 : t == 0;
    BackwardStepPointers st{t,
                            s == 0 ? nullptr : a.dg + t_next * N * DG,
                            a.saved + t * N * WS,
                            Cell::prev(a, first_forward_step, t_prev),
                            Cell::prev_ld(a, first_forward_step),
                            a.grad_y + t * N * H,
                            a.dg + t * N * DG};
    auto group = [&](int64_t q) {
      for_row_tiles(slice.first_row, slice.last_row,
                    [&]<int R>(int64_t n0) { backward_tile<Cell, R>(a, st, q, n0); });
    };
    if (a.split == Split::Dynamic) {
      a.claims->for_claimed_blocks(s, blocks_of(a.H, kGroupUnits), thread, threads, group);
    } else {
      for (int64_t q = slice.first_block; q < slice.last_block; ++q) group(q);
    }
    if (a.split != Split::Rows && s + 1 < a.T) barrier.wait(threads);
  }
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
