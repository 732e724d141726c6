// The fused LSTM and GRU forwards' per-thread step loop, micro-kernel and cell epilogues (lstm_cpu_fused.h), float32,
// on at::vec::Vectorized<float>: compiled once per CPU capability with the pointwise pass (included by
// pointwise_cpu_kernels.h, in its capability's namespace), so AVX-512 runs 16-unit panels on zmm registers, AVX2
// 8-unit ones on ymm.
#pragma once

#ifndef CPU_CAPABILITY
#error "include lstm_cpu_fused_kernels.h from a variant file that defines CPU_CAPABILITY"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstring>

#include "cpu_vec_math.h"
#include "lstm_cpu_fused.h"
#include "step.h"

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

using FusedVec = at::vec::Vectorized<float>;
constexpr int64_t kPanelUnits = FusedVec::size();

//: Batch rows per micro-kernel tile: its 4 x rows accumulators, the 4 gates' weight vectors and a broadcast must
//: fit the vector registers (AVX-512: 32, so 6 rows = 24 + 4 + 1; AVX2 and the baseline: 16, so 3 rows = 12 + 3 + 1,
//: GCC taking the fourth weight as the FMAs' memory operand: objdump shows no spill in the k loop).
#ifdef CPU_CAPABILITY_AVX512
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 3;
#endif

//: Floats per panel of a G-gate cell's weight [G*H, K]: for each of the K columns k, G gates x kPanelUnits units.
template <int G>
int64_t panel_size(int64_t K) {
  return K * G * kPanelUnits;
}

template <int G>
int64_t fused_packed_size(int64_t K, int64_t H) {
  return blocks_of(H, kPanelUnits) * panel_size<G>(K);
}

//: Panels [first, last) of a G-gate cell's w [G*H, K] (FusedForwardOf::pack).
template <int G>
void fused_pack(const float* w, int64_t K, int64_t H, int64_t first, int64_t last, float* packed) {
  for (int64_t b = first; b < last; ++b) {
    float* panel = packed + b * panel_size<G>(K);
    const int64_t units = std::min(kPanelUnits, H - b * kPanelUnits);
    for (int64_t k = 0; k < K; ++k) {
      for (int g = 0; g < G; ++g) {
        float* out = panel + (k * G + g) * kPanelUnits;
        const float* row = w + (g * H + b * kPanelUnits) * K + k;  // w[g*H + unit, k] for the panel's units
        for (int64_t u = 0; u < units; ++u) out[u] = row[u * K];
        std::fill(out + units, out + kPanelUnits, 0.f);
      }
    }
  }
}

//: One time step of the chunk, as the micro-kernel needs it (T: the storage dtype).
template <class T>
struct StepPointers {
  int64_t t;
  const T* h_prev;  // [N, H]
  const T* gi;      // [N, G*H], rows gi_ld apart (0: the folded biases, every row's, where the step computes
                    // x_t W_ih^T itself)
  int64_t gi_ld;
  const T* x;       // [N, I] where the step computes x_t W_ih^T itself, else null
  T* h;             // [N, H] (y[t])
  T* saved;         // [N, the cell's saved columns x H] or null
};

//: The accumulators' type: a GCC vector of FusedVec's width. An array of Vectorized (a class) stayed in memory, and
//: GCC stored all 24 accumulators on every k (objdump: 24 stores per 24 FMAs); native vectors stay in registers.
typedef float RawVec __attribute__((vector_size(sizeof(FusedVec))));

FusedVec to_vec(const RawVec& x) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  return FusedVec(x);  // Vectorized<float> wraps __m512 / __m256, the same vector type
#else
  return FusedVec::loadu(&x);  // the baseline's Vectorized is an array
#endif
}

RawVec load_raw(const float* p) {
  RawVec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

//: acc[r][v] += sum over k < K of rows[r * ld + k] * panel[(k * V + v) * kPanelUnits ...]: R rows of a row-major
//: operand times a panel of V vectors per k, in registers (inlined, so acc never leaves them). The forward's panel
//: holds the V = G gates' columns of 16 units, the backward's 4 consecutive 16-unit blocks of W_hh's columns.
template <int V, int R>
__attribute__((always_inline)) inline void accumulate(const float* panel, int64_t K, const float* rows, int64_t ld,
                                                      RawVec (&acc)[R][V]) {
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * V * kPanelUnits;
    RawVec weights[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) weights[v] = load_raw(w + v * kPanelUnits);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float x = rows[r * ld + k];  // broadcast; GCC contracts each multiply-add into one FMA
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += x * weights[v];
    }
  }
}

//: The float32 forward's storage: one k per FMA, the panels of fused_pack, activations loaded and stored as they are.
struct Float32Storage {
  using T = float;
  template <int G>
  static int64_t panel_size(int64_t K) {
    return ::fusedrnn::CPU_CAPABILITY::panel_size<G>(K);
  }
  template <int G, int R>
  static void accumulate_panel(const float* panel, int64_t K, const float* rows, int64_t ld, RawVec (&acc)[R][G]) {
    accumulate<G, R>(panel, K, rows, ld, acc);
  }
  static FusedVec load(const float* p, int count) { return FusedVec::loadu(p, count); }
  static void store(const FusedVec& v, float* p, int count) { v.store(p, count); }
};

//: The LSTM's epilogue for row n, units [j, j + count): the gates' sums from the micro-kernel plus the input
//: projection, cell_math.h's LSTM on c (float32), h stored, and the loop's saved columns i f g o c (step.h). A
//: finished row (tile) saves its unchanged c.
struct LstmCell {
  static constexpr int kGates = kLstmGates;
  static constexpr int kSaved = kLstmSaved;
  template <class S>
  __attribute__((always_inline)) static void row(const FusedLstmArgsOf<typename S::T>& a,
                                                 const StepPointers<typename S::T>& st, const RawVec (&acc)[kGates],
                                                 int64_t n, int64_t j, int count) {
    using V = FusedVec;
    using T = typename S::T;
    const int64_t H = a.H;
    float* c = a.c + n * H + j;
    T* saved = st.saved == nullptr ? nullptr : st.saved + n * kSaved * H + j;
    const T* gi = st.gi + n * st.gi_ld + j;
    V i, f, g, o, c_new, h;
    lstm_forward<VecMath>(to_vec(acc[0]) + S::load(gi, count), to_vec(acc[1]) + S::load(gi + H, count),
                          to_vec(acc[2]) + S::load(gi + 2 * H, count), to_vec(acc[3]) + S::load(gi + 3 * H, count),
                          V::loadu(c, count), i, f, g, o, c_new, h);
    c_new.store(c, count);
    S::store(h, st.h + n * H + j, count);
    if (saved != nullptr) {
      S::store(i, saved, count), S::store(f, saved + H, count), S::store(g, saved + 2 * H, count);
      S::store(o, saved + 3 * H, count), S::store(c_new, saved + 4 * H, count);
    }
  }
  template <class S>
  static void save_finished(const FusedLstmArgsOf<typename S::T>& a, typename S::T* saved, int64_t n, int64_t j,
                            int count) {
    S::store(FusedVec::loadu(a.c + n * a.H + j, count), saved + kGates * a.H, count);
  }
};

//: The GRU's epilogue (torch.nn's: the reset gate scales W_hn h + b_hn): cell_math.h's GRU on h_{t-1}, h stored,
//: and the loop's saved columns r z n hn (step.h), which the fused backward (or the loop's) reads.
struct GruCell {
  static constexpr int kGates = 3;
  static constexpr int kSaved = kGruSaved;
  template <class S>
  __attribute__((always_inline)) static void row(const FusedLstmArgsOf<typename S::T>& a,
                                                 const StepPointers<typename S::T>& st, const RawVec (&acc)[kGates],
                                                 int64_t n, int64_t j, int count) {
    using V = FusedVec;
    using T = typename S::T;
    const int64_t H = a.H;
    const T* h_prev = st.h_prev + n * H + j;
    T* saved = st.saved == nullptr ? nullptr : st.saved + n * kSaved * H + j;
    const T* gi = st.gi + n * st.gi_ld + j;
    const V hn = to_vec(acc[2]) + S::load(a.b_hn + j, count);
    V r, z, n_gate, h;
    gru_forward<VecMath>(to_vec(acc[0]) + S::load(gi, count), to_vec(acc[1]) + S::load(gi + H, count),
                         S::load(gi + 2 * H, count), hn, S::load(h_prev, count), r, z, n_gate, h);
    S::store(h, st.h + n * H + j, count);
    if (saved != nullptr) {
      S::store(r, saved, count), S::store(z, saved + H, count), S::store(n_gate, saved + 2 * H, count);
      S::store(hn, saved + 3 * H, count);
    }
  }
  template <class S>
  static void save_finished(const FusedLstmArgsOf<typename S::T>&, typename S::T*, int64_t, int64_t, int) {}
};

//: Rows [n0, n0 + R) of panel b for one step: the panel's G x kPanelUnits gate columns (h_{t-1} times the packed
//: W_hh) accumulated in registers, then the cell's epilogue per row (gates never reach memory); a finished row
//: (lengths) is the same for every cell but the LSTM's saved c (Cell::save_finished). Cell: LstmCell or
//: GruCell; S: the storage policy (Float32Storage, or lstm_cpu_fused_bf16_kernels.h's); the cell math runs in float32.
template <class Cell, class S, int R>
void tile(const FusedLstmArgsOf<typename S::T>& a, const StepPointers<typename S::T>& st, int64_t b, int64_t n0) {
  constexpr int G = Cell::kGates;
  const int64_t H = a.H, j = b * kPanelUnits;
  const int count = static_cast<int>(std::min(kPanelUnits, H - j));
  RawVec acc[R][G] = {};
  if (a.input_in_step) {
    S::template accumulate_panel<G, R>(a.packed_x + b * S::template panel_size<G>(a.I), a.I, st.x + n0 * a.I, a.I,
                                       acc);
  }
  S::template accumulate_panel<G, R>(a.packed + b * S::template panel_size<G>(H), H, st.h_prev + n0 * H, H, acc);
  // Unrolled, so every acc index is a constant and the accumulators stay in registers through the k loop (rolled,
  // GCC kept acc in memory and stored all of it on every k: objdump showed 24 stores per 24 FMAs).
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t n = n0 + r;
    if (row_valid(a.lengths, st.t, n)) {
      Cell::template row<S>(a, st, acc[r], n, j, count);
      continue;
    }
    // A finished row keeps its state and saves finite zeros (step.h), and the LSTM its c.
    using T = typename S::T;
    std::memcpy(st.h + n * a.H + j, st.h_prev + n * a.H + j, count * sizeof(T));
    if (st.saved == nullptr) continue;
    T* saved = st.saved + n * Cell::kSaved * a.H + j;
    for (int k = 0; k < Cell::kSaved; ++k) S::store(FusedVec(0.f), saved + k * a.H, count);
    Cell::template save_finished<S>(a, saved, n, j, count);
  }
}

//: Calls tile.template operator()<R>(n0) for rows [0, N): tiles of kTileRows rows, then one of the rows left.
template <int R = kTileRows - 1, class Tile>
void tail_tile(const Tile& tile, int64_t n0, int64_t rows) {
  if constexpr (R > 0) {
    if (rows == R) return tile.template operator()<R>(n0);
    tail_tile<R - 1>(tile, n0, rows);
  }
}

//: Rows [first, last): tiles of kTileRows rows, then one of the rows left.
template <class Tile>
void for_row_tiles(int64_t first, int64_t last, const Tile& tile) {
  int64_t n0 = first;
  for (; n0 + kTileRows <= last; n0 += kTileRows) tile.template operator()<kTileRows>(n0);
  if (n0 < last) tail_tile(tile, n0, last - n0);
}

//: The chunk's steps for one thread (FusedForwardOf::run_thread) of a Cell, in storage policy S.
template <class Cell, class S>
void run_forward_thread(const FusedLstmArgsOf<typename S::T>& a, int thread, int threads, SpinBarrier& barrier) {
  const ThreadSlice slice = thread_slice(a.split, blocks_of(a.H, kPanelUnits), a.N, thread, threads);
  const int64_t NH = a.N * a.H;
  for (int64_t s = a.first; s < a.first + a.steps; ++s) {
    const int64_t t = a.reverse ? a.T - 1 - s : s;
    const int64_t t_prev = a.reverse ? t + 1 : t - 1;
    const int64_t GH = Cell::kGates * a.H;
    StepPointers<typename S::T> st{t,
                                   s == 0 ? a.h0 : a.y + t_prev * NH,
                                   a.input_in_step ? a.gi : a.gi + (t - a.gi_first_t) * a.N * GH,
                                   a.input_in_step ? 0 : GH,
                                   a.input_in_step ? a.x + t * a.N * a.I : nullptr,
                                   a.y + t * NH,
                                   a.saved == nullptr ? nullptr : a.saved + t * a.N * Cell::kSaved * a.H};
    // Panel by panel: a panel (G x 16 x H floats, 128 KB for the LSTM at H=512; as much again of W_ih where the
    // step computes x_t W_ih^T) stays in L2 while every row tile reads it.
    auto panel = [&](int64_t b) {
      for_row_tiles(slice.first_row, slice.last_row, [&]<int R>(int64_t n0) { tile<Cell, S, R>(a, st, b, n0); });
    };
    if (a.split == Split::Dynamic) {
      a.claims->for_claimed_blocks(s, blocks_of(a.H, kPanelUnits), thread, threads, panel);
    } else {
      for (int64_t b = slice.first_block; b < slice.last_block; ++b) panel(b);
    }
    if (a.split != Split::Rows && s + 1 < a.first + a.steps) barrier.wait(threads);
  }
}

template <class Cell>
void fused_run_thread(const FusedLstmArgs& a, int thread, int threads, SpinBarrier& barrier) {
  run_forward_thread<Cell, Float32Storage>(a, thread, threads, barrier);
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
