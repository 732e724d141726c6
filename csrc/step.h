// One time step's pointwise pass, as plain pointers: what the host loop (rnn_loop.cpp) hands to a device's
// pointwise implementation (pointwise_cpu.cpp, pointwise_cuda.cu), and the per-element body both of them run.
//
// The body loads through a "lane" (load(ptr), store(ptr, v), zero()): the CPU lane is a vector of consecutive hidden
// units of one batch row, the CUDA lane a single element converted to the accumulate type; the math itself comes
// from cell_math.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "cell_math.h"

namespace fusedrnn {

//: A row-major matrix view: element (row, col) at p[row * ld + col], in the step's storage dtype.
struct Mat {
  void* p = nullptr;
  int64_t ld = 0;
};

template <class S>
FUSEDRNN_HOST_DEVICE S* at_(const Mat& m, int64_t row, int64_t col) {
  return static_cast<S*>(m.p) + row * m.ld + col;
}

//: Whether batch row n takes part in step t: always, unless per-row lengths are given (a packed sequence, padded).
FUSEDRNN_HOST_DEVICE bool row_valid(const int64_t* lengths, int64_t t, int64_t n) {
  return lengths == nullptr || t < lengths[n];
}

//: Where the variants keep what their backward needs in a row of the saved activations, in elements (-1: not
//: saved). After the cell's own columns (kLstmSaved / kGruSaved blocks, and the projection's h):
//:   h_tilde  Elman/IndRNN with zoneout: the cell's output before zoneout (its activation's derivative needs it)
//:   c_tilde  LSTM with a cell-state zoneout mask: c before zoneout (h is computed from it)
//:   nhat_c   layer-norm LSTM: the normalised cell state, before its gain
//:   nhat_ih, nhat_hh  layer norm: the normalised input / recurrent pre-activations [G*H], before their gains
//:   stats    layer norm: rstd of the input, recurrent and (LSTM) cell-state norms, one element each
struct SavedLayout {
  int64_t h_tilde = -1, c_tilde = -1, nhat_c = -1, nhat_ih = -1, nhat_hh = -1, stats = -1;
  int64_t width = 0;
};

//: The layer-norm gains and the bias added after the norms; ih.p null: no layer norm.
struct Norms {
  Mat ih, hh;         // [1, G*H] gains of the input and recurrent pre-activations
  Mat c_w, c_b;       // LSTM: [1, H] gain and bias (c_b may be null) of the cell-state norm
  Mat bias;           // [1, G*H] every bias but GRU's b_hn (null without bias), added after the norms
};

//: Indices of the layer-norm statistics in SavedLayout::stats.
constexpr int kStatIh = 0, kStatHh = 1, kStatC = 2, kStats = 3;

//: Forward step. Shapes (N batch rows, H hidden units, G gates): gi, gh [N, G*H]; others [N, H].
struct ForwardStep {
  Mode mode;
  int64_t N, H;
  int64_t t;                         // the time step, for the length mask
  const int64_t* lengths = nullptr;  // [N] or null: rows with t >= lengths[n] keep their state (see row_valid)
  Mat gi;      // x_t W_ih^T + every bias except GRU's b_hn
  Mat gh;      // h_{t-1} W_hh^T (no bias)
  Mat b_hn;    // GRU: b_hn as a [1, H] row (zeros without bias)
  Mat h_prev;  // h_{t-1} (GRU; and any cell with lengths, where finished rows carry it)
  Mat c_prev;  // LSTM: c_{t-1}
  Mat ws;      // saved for backward: LSTM [i f g o c], GRU [r z n hn]; zeros (and c_{t-1}) for finished rows
  Mat h;       // output h_t (LSTM with projection: before the projection)
  bool h_carries = true;  // finished rows write h_{t-1} to h; false (projection): they write 0, the loop carries
  // The variants (fusedrnn/reference.py); a null Mat is an absent feature.
  Mat u;                    // IndRNN: the recurrent scale as a [1, H] row (gh is unused: u * h_{t-1} is elementwise)
  Mat zoneout_h, zoneout_c;  // this step's zoneout masks [N, H] (c: LSTM only)
  Norms norm;               // layer norm: gi and gh arrive un-normalised and without bias; normalised in place
  SavedLayout layout;       // where the variants' extra saved columns are in ws
};

//: Backward step, same shapes; the gradient of this step's h is dh_a + dh_b (dh_b.p may be null).
struct BackwardStep {
  Mode mode;
  int64_t N, H;
  int64_t t;
  const int64_t* lengths = nullptr;  // as in ForwardStep; finished rows pass dh and dc through, gate gradients 0
  Mat ws;       // this step's saved activations
  Mat c_prev;   // LSTM: c_{t-1}
  Mat h_prev;   // GRU: h_{t-1}
  Mat h;        // Elman: this step's output
  Mat dh_a, dh_b;
  Mat dc;       // LSTM: in, the gradient of c_t; out (in place), the gradient of c_{t-1}
  Mat dg_h;     // [N, G*H] gradient of the recurrent-side pre-activations
  Mat dg_i;     // GRU: [N, G*H] gradient of the input-side pre-activations (the others use dg_h for both)
  Mat dh_prev;  // the direct part of dh_{t-1}: GRU z * dh, finished rows dh, others 0 (may alias dh_b: same
                //   element read, then written). Null for LSTM/Elman without lengths: the GEMM writes dh_{t-1}.
                //   Zoneout adds m * dh; IndRNN writes all of dh_{t-1} (da * u + the direct part; no GEMM).
  // The variants, as in ForwardStep.
  Mat u;
  Mat zoneout_h, zoneout_c;
  Norms norm;
  SavedLayout layout;
  Mat d_cn;        // layer-norm LSTM: out [N, H], the gradient of the normalised cell state (for its gain and bias)
  Mat dv_h, dv_i;  // layer norm: out [N, G*H], the gradients of the un-normalised recurrent / input pre-activations
                   //   (what the GEMMs take); dg_h / dg_i keep the gradients after the norms (bias and gains)
};

// Saved-activation column blocks, in units of H.
constexpr int kLstmSaved = 5;  // i f g o c
constexpr int kGruSaved = 4;   // r z n hn

//: The forward body for hidden units [j, j + lane width) of row n (the layer-norm LSTM's cell norm: forward_row).
template <class M, class S, class Lane>
FUSEDRNN_HOST_DEVICE void forward_element(const ForwardStep& s, const Lane& lane, int64_t n, int64_t j) {
  const int64_t H = s.H;
  auto pre = [&](int k) { return lane.load(at_<S>(s.gi, n, k * H + j)) + lane.load(at_<S>(s.gh, n, k * H + j)); };
  auto save = [&](int k, auto v) { lane.store(at_<S>(s.ws, n, k * H + j), v); };
  auto save_at = [&](int64_t column, auto v) { lane.store(at_<S>(s.ws, n, column + j), v); };
  if (!row_valid(s.lengths, s.t, n)) {  // a finished row: keep the state, save finite zeros
    const auto zero = lane.zero();
    const int saved = s.mode == Mode::LSTM ? kLstmSaved - 1 : s.mode == Mode::GRU ? kGruSaved : 0;
    for (int k = 0; k < saved; ++k) save(k, zero);
    if (s.mode == Mode::LSTM) save(kLstmSaved - 1, lane.load(at_<S>(s.c_prev, n, j)));
    // Finite values in every saved column (nhat_c: its gain's gradient sums over every row).
    if (s.layout.h_tilde >= 0) save_at(s.layout.h_tilde, zero);
    if (s.layout.c_tilde >= 0) save_at(s.layout.c_tilde, zero);
    if (s.layout.nhat_c >= 0) save_at(s.layout.nhat_c, zero);
    lane.store(at_<S>(s.h, n, j), s.h_carries ? lane.load(at_<S>(s.h_prev, n, j)) : zero);
    return;
  }
  auto zoneout_h = [&](auto h_prev, auto fresh) {
    return s.zoneout_h.p == nullptr ? fresh : zoneout(lane.load(at_<S>(s.zoneout_h, n, j)), h_prev, fresh);
  };
  if (s.mode == Mode::LSTM) {
    auto c_prev = lane.load(at_<S>(s.c_prev, n, j));
    decltype(c_prev) i, f, g, o, c, h;
    lstm_forward<M>(pre(0), pre(1), pre(2), pre(3), c_prev, i, f, g, o, c, h);
    if (s.zoneout_c.p != nullptr) {
      save_at(s.layout.c_tilde, c);
      c = zoneout(lane.load(at_<S>(s.zoneout_c, n, j)), c_prev, c);
    }
    save(0, i), save(1, f), save(2, g), save(3, o), save(4, c);
    lane.store(at_<S>(s.h, n, j), s.zoneout_h.p == nullptr ? h : zoneout_h(lane.load(at_<S>(s.h_prev, n, j)), h));
  } else if (s.mode == Mode::GRU) {
    auto hn = lane.load(at_<S>(s.gh, n, 2 * H + j)) + lane.load(at_<S>(s.b_hn, 0, j));
    auto a_in = lane.load(at_<S>(s.gi, n, 2 * H + j));
    auto h_prev = lane.load(at_<S>(s.h_prev, n, j));
    decltype(hn) r, z, nn, h;
    gru_forward<M>(pre(0), pre(1), a_in, hn, h_prev, r, z, nn, h);
    save(0, r), save(1, z), save(2, nn), save(3, hn);
    lane.store(at_<S>(s.h, n, j), zoneout_h(h_prev, h));
  } else {
    auto h_prev = lane.load(at_<S>(s.h_prev, n, j));
    auto a = is_indrnn(s.mode) ? lane.load(at_<S>(s.gi, n, j)) + lane.load(at_<S>(s.u, 0, j)) * h_prev : pre(0);
    auto h = rnn_forward<M>(s.mode, a);
    if (s.layout.h_tilde >= 0) save_at(s.layout.h_tilde, h);
    lane.store(at_<S>(s.h, n, j), zoneout_h(h_prev, h));
  }
}

//: The backward body for hidden units [j, j + lane width) of row n (the layer-norm LSTM's cell norm: backward_row).
template <class M, class S, class Lane>
FUSEDRNN_HOST_DEVICE void backward_element(const BackwardStep& s, const Lane& lane, int64_t n, int64_t j) {
  const int64_t H = s.H;
  auto saved = [&](int k) { return lane.load(at_<S>(s.ws, n, k * H + j)); };
  auto saved_at = [&](int64_t column) { return lane.load(at_<S>(s.ws, n, column + j)); };
  auto dh = lane.load(at_<S>(s.dh_a, n, j));
  if (s.dh_b.p != nullptr) dh = dh + lane.load(at_<S>(s.dh_b, n, j));
  auto grad = [&](const Mat& m, int k, auto v) { lane.store(at_<S>(m, n, k * H + j), v); };
  const auto zero = lane.zero();
  if (!row_valid(s.lengths, s.t, n)) {  // a finished row: h and c were carried, so are their gradients
    for (int k = 0; k < gates_of(s.mode); ++k) {
      grad(s.dg_h, k, zero);
      if (s.mode == Mode::GRU) grad(s.dg_i, k, zero);
    }
    if (s.d_cn.p != nullptr) lane.store(at_<S>(s.d_cn, n, j), zero);
    if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), dh);
    return;  // dc stays as it is: dc_{t-1} = dc_t
  }
  // Zoneout: the fresh h gets (1 - m) dh, h_{t-1} the direct part m dh.
  auto direct = zero;
  if (s.zoneout_h.p != nullptr) {
    direct = lane.load(at_<S>(s.zoneout_h, n, j)) * dh;
    dh = dh - direct;
  }
  if (s.mode == Mode::LSTM) {
    auto dc = lane.load(at_<S>(s.dc, n, j));
    auto dc_direct = zero;
    if (s.zoneout_c.p != nullptr) {
      dc_direct = lane.load(at_<S>(s.zoneout_c, n, j)) * dc;
      dc = dc - dc_direct;
    }
    decltype(dh) dai, daf, dag, dao, dc_prev;
    const auto c = s.layout.c_tilde >= 0 ? saved_at(s.layout.c_tilde) : saved(4);  // the c that h was made from
    lstm_backward<M>(saved(0), saved(1), saved(2), saved(3), c, lane.load(at_<S>(s.c_prev, n, j)), dh, dc, dai,
                     daf, dag, dao, dc_prev);
    grad(s.dg_h, 0, dai), grad(s.dg_h, 1, daf), grad(s.dg_h, 2, dag), grad(s.dg_h, 3, dao);
    lane.store(at_<S>(s.dc, n, j), dc_prev + dc_direct);
    if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), direct);
  } else if (s.mode == Mode::GRU) {
    decltype(dh) dar, daz, da_in, dhn, through_z;
    gru_backward<M>(saved(0), saved(1), saved(2), saved(3), lane.load(at_<S>(s.h_prev, n, j)), dh, dar, daz, da_in,
                    dhn, through_z);
    grad(s.dg_h, 0, dar), grad(s.dg_h, 1, daz), grad(s.dg_h, 2, dhn);
    grad(s.dg_i, 0, dar), grad(s.dg_i, 1, daz), grad(s.dg_i, 2, da_in);
    lane.store(at_<S>(s.dh_prev, n, j), through_z + direct);
  } else {
    const auto h = s.layout.h_tilde >= 0 ? saved_at(s.layout.h_tilde) : lane.load(at_<S>(s.h, n, j));
    const auto da = rnn_backward<M>(s.mode, h, dh);
    grad(s.dg_h, 0, da);
    if (is_indrnn(s.mode)) {  // no GEMM: the whole of dh_{t-1}
      lane.store(at_<S>(s.dh_prev, n, j), da * lane.load(at_<S>(s.u, 0, j)) + direct);
    } else if (s.dh_prev.p != nullptr) {
      lane.store(at_<S>(s.dh_prev, n, j), direct);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Whole rows, for the layer-norm variants, whose norms need sums over a row: the CPU pass owns whole rows on one
// thread (pointwise_cpu_kernels.h: RowLanes), the CUDA row kernel on one block (pointwise_cuda.cu: BlockLanes).
// `lanes` walks a row segment: lanes(width, body(lane, j)) calls body for the lanes of the row this thread owns
// (CPU: all of them, consecutive from j = 0; CUDA: every blockDim.x-th element from threadIdx.x);
// Lanes::Vec is the lane's vector type, Lanes::Compute its scalar (the accumulate type; S is the storage type) and
// Lanes::total(v) the sum over the whole row of every thread's v (CUDA: a block reduction, so every thread of the
// block must reach it); lane.keep(v) zeroes the elements past the row's end (a partial lane), so that they do not
// enter a sum. lanes.sync() orders the row's writes before its reads where a loop over the G*H gate columns hands
// over to one over the H hidden units or back (CUDA: another thread owns the element; CPU: nothing to do). Within
// one width a thread only reads back elements it wrote itself, so no other barrier is needed.

//: *p = value from one thread only: the one owning the row's first element (on CUDA every thread of the block holds
//: the same value, but a write from each would be a race).
template <class Lanes, class S, class C>
FUSEDRNN_HOST_DEVICE void store_once(const Lanes& lanes, S* p, C value) {
  lanes(1, [&](const auto&, int64_t) { *p = S(value); });
}

//: The mean of v [W] (v(lane, j) loads it).
template <class Lanes, class Load>
FUSEDRNN_HOST_DEVICE typename Lanes::Compute row_mean(const Lanes& lanes, int64_t W, const Load& v) {
  using C = typename Lanes::Compute;
  typename Lanes::Vec sum(C(0));
  lanes(W, [&](const auto& lane, int64_t j) { sum = sum + lane.keep(v(lane, j)); });
  return Lanes::total(sum) / C(W);
}

//: Normalises v [W] in place (v = nhat * gain + bias, bias may be null), saves nhat [W]; returns rstd.
template <class S, class Lanes>
FUSEDRNN_HOST_DEVICE typename Lanes::Compute layer_norm_row(const Lanes& lanes, int64_t W, S* v, const S* gain,
                                                             const S* bias, S* nhat) {
  using V = typename Lanes::Vec;
  using C = typename Lanes::Compute;
  const V mean(row_mean(lanes, W, [&](const auto& lane, int64_t j) { return lane.load(v + j); }));
  const C var = row_mean(lanes, W, [&](const auto& lane, int64_t j) {
    const V centred = lane.load(v + j) - mean;
    return centred * centred;
  });
  const C rstd = layer_norm_rstd(var);
  lanes(W, [&](const auto& lane, int64_t j) {
    const V normalised = (lane.load(v + j) - mean) * V(rstd);
    lane.store(nhat + j, normalised);
    const V out = normalised * lane.load(gain + j);
    lane.store(v + j, bias == nullptr ? out : out + lane.load(bias + j));
  });
  return rstd;
}

//: The gradient dv [W] of the un-normalised row, from d out [W] (out = nhat * gain + bias).
template <class S, class Lanes>
FUSEDRNN_HOST_DEVICE void layer_norm_backward_row(const Lanes& lanes, int64_t W, const S* d_out, const S* gain,
                                                  const S* nhat, typename Lanes::Compute rstd, S* dv) {
  using V = typename Lanes::Vec;
  auto dn = [&](const auto& lane, int64_t j) { return lane.load(d_out + j) * lane.load(gain + j); };
  const V mean_dn(row_mean(lanes, W, dn));
  const V mean_dn_nhat(row_mean(lanes, W, [&](const auto& lane, int64_t j) {
    return dn(lane, j) * lane.load(nhat + j);
  }));
  lanes(W, [&](const auto& lane, int64_t j) {
    lane.store(dv + j, layer_norm_backward(dn(lane, j), lane.load(nhat + j), V(rstd), mean_dn, mean_dn_nhat));
  });
}

//: One row of a forward step: the gate norms, then the cell; the layer-norm LSTM's cell norm in two passes (c~ and
//: its moments, then h).
template <class M, class S, class Lanes>
FUSEDRNN_HOST_DEVICE void forward_row(const ForwardStep& s, const Lanes& lanes, int64_t n) {
  using V = typename Lanes::Vec;
  using C = typename Lanes::Compute;
  const int64_t H = s.H, GH = H * gates_of(s.mode);
  S* ws = at_<S>(s.ws, n, 0);
  if (s.norm.ih.p != nullptr) {  // every row (finished ones too: their saved values stay finite)
    S* stats = ws + s.layout.stats;
    store_once(lanes, stats + kStatC, C(0));  // set below where there is a cell norm (an LSTM's valid row)
    const S* bias = static_cast<const S*>(s.norm.bias.p);
    store_once(lanes, stats + kStatIh, layer_norm_row<S>(lanes, GH, at_<S>(s.gi, n, 0), at_<S>(s.norm.ih, 0, 0), bias,
                                                         ws + s.layout.nhat_ih));  // fmt: skip
    store_once(lanes, stats + kStatHh, layer_norm_row<S>(lanes, GH, at_<S>(s.gh, n, 0), at_<S>(s.norm.hh, 0, 0),
                                                         nullptr, ws + s.layout.nhat_hh));  // fmt: skip
    lanes.sync();  // gi, gh were normalised over G*H columns; the cell reads them by hidden unit
  }
  if (s.norm.c_w.p == nullptr || !row_valid(s.lengths, s.t, n)) {
    lanes(H, [&](const auto& lane, int64_t j) { forward_element<M, S>(s, lane, n, j); });
    return;
  }
  // Layer-norm LSTM. Pass 1: the gates and c~ (kept in the nhat_c columns until pass 2 normalises it).
  S* c_tilde = ws + s.layout.nhat_c;
  lanes(H, [&](const auto& lane, int64_t j) {
    auto pre = [&](int k) { return lane.load(at_<S>(s.gi, n, k * H + j)) + lane.load(at_<S>(s.gh, n, k * H + j)); };
    const V i = M::sigmoid(pre(0)), f = M::sigmoid(pre(1)), g = M::tanh(pre(2)), o = M::sigmoid(pre(3));
    lane.store(ws + j, i), lane.store(ws + H + j, f), lane.store(ws + 2 * H + j, g), lane.store(ws + 3 * H + j, o);
    lane.store(c_tilde + j, f * lane.load(at_<S>(s.c_prev, n, j)) + i * g);
  });
  const V mean(row_mean(lanes, H, [&](const auto& lane, int64_t j) { return lane.load(c_tilde + j); }));
  const C var = row_mean(lanes, H, [&](const auto& lane, int64_t j) {
    const V centred = lane.load(c_tilde + j) - mean;
    return centred * centred;
  });
  const C rstd = layer_norm_rstd(var);
  store_once(lanes, ws + s.layout.stats + kStatC, rstd);
  // Pass 2: h~ = o tanh(LN(c~)), then zoneout.
  lanes(H, [&](const auto& lane, int64_t j) {
    const V c = lane.load(c_tilde + j), c_prev = lane.load(at_<S>(s.c_prev, n, j));  // c_prev may be column 4
    const V nhat = (c - mean) * V(rstd);
    lane.store(c_tilde + j, nhat);
    V cn = nhat * lane.load(at_<S>(s.norm.c_w, 0, j));
    if (s.norm.c_b.p != nullptr) cn = cn + lane.load(at_<S>(s.norm.c_b, 0, j));
    const V h = lane.load(ws + 3 * H + j) * M::tanh(cn);
    lane.store(ws + 4 * H + j, s.zoneout_c.p == nullptr ? c : zoneout(lane.load(at_<S>(s.zoneout_c, n, j)), c_prev, c));
    lane.store(at_<S>(s.h, n, j),
               s.zoneout_h.p == nullptr ? h
                                        : zoneout(lane.load(at_<S>(s.zoneout_h, n, j)), lane.load(at_<S>(s.h_prev, n, j)), h));
  });
}

//: One row of a backward step: the cell (the layer-norm LSTM's cell norm in two passes: the gradient of the
//: normalised c and its row sums, then the gates), then the gate norms' backward into dv_h / dv_i.
template <class M, class S, class Lanes>
FUSEDRNN_HOST_DEVICE void backward_row(const BackwardStep& s, const Lanes& lanes, int64_t n) {
  using V = typename Lanes::Vec;
  using C = typename Lanes::Compute;
  const int64_t H = s.H, GH = H * gates_of(s.mode);
  const S* ws = at_<S>(s.ws, n, 0);
  if (s.norm.c_w.p == nullptr || !row_valid(s.lengths, s.t, n)) {
    lanes(H, [&](const auto& lane, int64_t j) { backward_element<M, S>(s, lane, n, j); });
  } else {
    const S* nhat = ws + s.layout.nhat_c;
    S* d_cn = at_<S>(s.d_cn, n, 0);
    // Pass 1: d of the normalised cell state (saved for its gain), the output gate, the direct part of dh_{t-1}.
    lanes(H, [&](const auto& lane, int64_t j) {
      V dh = lane.load(at_<S>(s.dh_a, n, j));
      if (s.dh_b.p != nullptr) dh = dh + lane.load(at_<S>(s.dh_b, n, j));
      V direct = lane.zero();
      if (s.zoneout_h.p != nullptr) {
        direct = lane.load(at_<S>(s.zoneout_h, n, j)) * dh;
        dh = dh - direct;
      }
      V cn = lane.load(nhat + j) * lane.load(at_<S>(s.norm.c_w, 0, j));
      if (s.norm.c_b.p != nullptr) cn = cn + lane.load(at_<S>(s.norm.c_b, 0, j));
      const V tc = M::tanh(cn), o = lane.load(ws + 3 * H + j);
      lane.store(at_<S>(s.dg_h, n, 3 * H + j), dh * tc * o * (V(1) - o));
      lane.store(d_cn + j, dh * o * (V(1) - tc * tc));
      if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), direct);
    });
    auto dn = [&](const auto& lane, int64_t j) { return lane.load(d_cn + j) * lane.load(at_<S>(s.norm.c_w, 0, j)); };
    const V mean_dn(row_mean(lanes, H, dn));
    const V mean_dn_nhat(row_mean(lanes, H, [&](const auto& lane, int64_t j) {
      return dn(lane, j) * lane.load(nhat + j);
    }));
    const V rstd = V(C(ws[s.layout.stats + kStatC]));  // not V rstd(C(...)): a declaration when V is a scalar
    // Pass 2: dc~ (from c_t, after zoneout, and from h through the norm), then the gates i, f, g and dc_{t-1}.
    lanes(H, [&](const auto& lane, int64_t j) {
      V dc = lane.load(at_<S>(s.dc, n, j));
      V dc_direct = lane.zero();
      if (s.zoneout_c.p != nullptr) {
        dc_direct = lane.load(at_<S>(s.zoneout_c, n, j)) * dc;
        dc = dc - dc_direct;
      }
      dc = dc + layer_norm_backward(dn(lane, j), lane.load(nhat + j), rstd, mean_dn, mean_dn_nhat);
      V dai, daf, dag, dc_prev;
      lstm_cell_backward(lane.load(ws + j), lane.load(ws + H + j), lane.load(ws + 2 * H + j),
                         lane.load(at_<S>(s.c_prev, n, j)), dc, dai, daf, dag, dc_prev);
      lane.store(at_<S>(s.dg_h, n, j), dai);
      lane.store(at_<S>(s.dg_h, n, H + j), daf);
      lane.store(at_<S>(s.dg_h, n, 2 * H + j), dag);
      lane.store(at_<S>(s.dc, n, j), dc_prev + dc_direct);
    });
  }
  if (s.norm.ih.p != nullptr) {  // finished rows: zero gate gradients give zero dv
    lanes.sync();  // the cell wrote dg_h / dg_i by hidden unit; the norms read them over G*H columns
    const S* stats = ws + s.layout.stats;
    layer_norm_backward_row<S>(lanes, GH, at_<S>(s.dg_h, n, 0), at_<S>(s.norm.hh, 0, 0), ws + s.layout.nhat_hh,
                               C(stats[kStatHh]), at_<S>(s.dv_h, n, 0));
    layer_norm_backward_row<S>(lanes, GH, at_<S>(s.dg_i, n, 0), at_<S>(s.norm.ih, 0, 0), ws + s.layout.nhat_ih,
                               C(stats[kStatIh]), at_<S>(s.dv_i, n, 0));
  }
}

}  // namespace fusedrnn
