// One time step's pointwise pass, as plain pointers: what the host loop (rnn_loop.cpp) hands to a device's
// pointwise implementation (pointwise_cpu.cpp, pointwise_cuda.cu), and the per-element body both of them run.
//
// The body loads through a "lane" (load(ptr), store(ptr, v), zero()): the CPU lane is a vector of consecutive hidden
// units of one batch row, the CUDA lane a single element converted to the accumulate type; the math itself comes
// from cell_math.h.
#pragma once

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
};

// Saved-activation column blocks, in units of H.
constexpr int kLstmSaved = 5;  // i f g o c
constexpr int kGruSaved = 4;   // r z n hn

//: The forward body for hidden units [j, j + lane width) of row n.
template <class M, class S, class Lane>
FUSEDRNN_HOST_DEVICE void forward_element(const ForwardStep& s, const Lane& lane, int64_t n, int64_t j) {
  const int64_t H = s.H;
  auto pre = [&](int k) { return lane.load(at_<S>(s.gi, n, k * H + j)) + lane.load(at_<S>(s.gh, n, k * H + j)); };
  auto save = [&](int k, auto v) { lane.store(at_<S>(s.ws, n, k * H + j), v); };
  if (!row_valid(s.lengths, s.t, n)) {  // a finished row: keep the state, save finite zeros
    const auto zero = lane.zero();
    const int saved = s.mode == Mode::LSTM ? kLstmSaved - 1 : s.mode == Mode::GRU ? kGruSaved : 0;
    for (int k = 0; k < saved; ++k) save(k, zero);
    if (s.mode == Mode::LSTM) save(kLstmSaved - 1, lane.load(at_<S>(s.c_prev, n, j)));
    lane.store(at_<S>(s.h, n, j), s.h_carries ? lane.load(at_<S>(s.h_prev, n, j)) : zero);
    return;
  }
  if (s.mode == Mode::LSTM) {
    auto c_prev = lane.load(at_<S>(s.c_prev, n, j));
    decltype(c_prev) i, f, g, o, c, h;
    lstm_forward<M>(pre(0), pre(1), pre(2), pre(3), c_prev, i, f, g, o, c, h);
    save(0, i), save(1, f), save(2, g), save(3, o), save(4, c);
    lane.store(at_<S>(s.h, n, j), h);
  } else if (s.mode == Mode::GRU) {
    auto hn = lane.load(at_<S>(s.gh, n, 2 * H + j)) + lane.load(at_<S>(s.b_hn, 0, j));
    auto a_in = lane.load(at_<S>(s.gi, n, 2 * H + j));
    decltype(hn) r, z, nn, h;
    gru_forward<M>(pre(0), pre(1), a_in, hn, lane.load(at_<S>(s.h_prev, n, j)), r, z, nn, h);
    save(0, r), save(1, z), save(2, nn), save(3, hn);
    lane.store(at_<S>(s.h, n, j), h);
  } else {
    lane.store(at_<S>(s.h, n, j), rnn_forward<M>(s.mode, pre(0)));
  }
}

//: The backward body for hidden units [j, j + lane width) of row n.
template <class M, class S, class Lane>
FUSEDRNN_HOST_DEVICE void backward_element(const BackwardStep& s, const Lane& lane, int64_t n, int64_t j) {
  const int64_t H = s.H;
  auto saved = [&](int k) { return lane.load(at_<S>(s.ws, n, k * H + j)); };
  auto dh = lane.load(at_<S>(s.dh_a, n, j));
  if (s.dh_b.p != nullptr) dh = dh + lane.load(at_<S>(s.dh_b, n, j));
  auto grad = [&](const Mat& m, int k, auto v) { lane.store(at_<S>(m, n, k * H + j), v); };
  const auto zero = lane.zero();
  if (!row_valid(s.lengths, s.t, n)) {  // a finished row: h and c were carried, so are their gradients
    for (int k = 0; k < gates_of(s.mode); ++k) {
      grad(s.dg_h, k, zero);
      if (s.mode == Mode::GRU) grad(s.dg_i, k, zero);
    }
    if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), dh);
    return;  // dc stays as it is: dc_{t-1} = dc_t
  }
  if (s.mode == Mode::LSTM) {
    decltype(dh) dai, daf, dag, dao, dc_prev;
    lstm_backward<M>(saved(0), saved(1), saved(2), saved(3), saved(4), lane.load(at_<S>(s.c_prev, n, j)), dh,
                     lane.load(at_<S>(s.dc, n, j)), dai, daf, dag, dao, dc_prev);
    grad(s.dg_h, 0, dai), grad(s.dg_h, 1, daf), grad(s.dg_h, 2, dag), grad(s.dg_h, 3, dao);
    lane.store(at_<S>(s.dc, n, j), dc_prev);
    if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), zero);
  } else if (s.mode == Mode::GRU) {
    decltype(dh) dar, daz, da_in, dhn, direct;
    gru_backward<M>(saved(0), saved(1), saved(2), saved(3), lane.load(at_<S>(s.h_prev, n, j)), dh, dar, daz, da_in,
                    dhn, direct);
    grad(s.dg_h, 0, dar), grad(s.dg_h, 1, daz), grad(s.dg_h, 2, dhn);
    grad(s.dg_i, 0, dar), grad(s.dg_i, 1, daz), grad(s.dg_i, 2, da_in);
    lane.store(at_<S>(s.dh_prev, n, j), direct);
  } else {
    grad(s.dg_h, 0, rnn_backward<M>(s.mode, lane.load(at_<S>(s.h, n, j)), dh));
    if (s.dh_prev.p != nullptr) lane.store(at_<S>(s.dh_prev, n, j), zero);
  }
}

}  // namespace fusedrnn
