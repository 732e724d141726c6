// One time step of xLSTM's sLSTM as plain pointers: what the sLSTM host loop (slstm_loop.cpp) hands to the CPU
// pointwise pass, and the per-row body it runs (the math: cell_math.h's slstm_forward / slstm_backward).
//
// Layouts (N batch rows, K heads of d units, H = K * d; gates i, f, z, o):
//   gate-major  [N, 4*H]   gate g, head k, unit j at g*H + k*d + j: the input projection, as torch.nn's
//   head-major  [N, K*4*d] head k, gate g, unit j at (k*4 + g)*d + j: the block-diagonal recurrent product (each
//               head's [N, 4*d] block is one GEMM's output, and the backward's GEMM input)
//   saved       [N, kSlstmSaved * H] per step: the pre-activations a (gate-major, every bias and the recurrent
//               product added), then c, n, m after the step; the backward recomputes the gates from them
#pragma once

#include <cstdint>

#include "cell_math.h"
#include "step.h"

namespace fusedrnn {

constexpr int kSlstmGates = 4;
//: Saved columns per step, in units of H: a (4 gates), then the state c, n, m.
constexpr int kSlstmSaved = 7;
constexpr int kSlstmSavedC = 4, kSlstmSavedN = 5, kSlstmSavedM = 6;

struct SlstmForwardStep {
  int64_t N, H, d;                   // batch rows, hidden units, head size
  int64_t t;                         // the time step, for the length mask
  const int64_t* lengths = nullptr;  // [N] or null: rows with t >= lengths[n] keep their state (row_valid)
  bool first = false;                // xlstm's first-step rule: the whole n state (every row) is zero
  bool tirex = false;                // formulation "tirex": f~ clamped
  Mat gi;                            // gate-major x_t W_ih^T + b_ih + b_hh
  Mat gh;                            // head-major h_{t-1} R^T (no bias)
  Mat h_prev, c_prev, n_prev, m_prev;  // [N, H]; c/n/m_prev may be ws's own state columns (read, then written)
  Mat ws;                            // saved (layout above); finished rows save zero pre-activations, the kept state
  Mat h;                             // h_t; finished rows carry h_{t-1}
};

struct SlstmBackwardStep {
  int64_t N, H, d;
  int64_t t;
  const int64_t* lengths = nullptr;
  bool first = false, tirex = false;  // as in the forward step
  Mat ws;                             // this step's saved row
  Mat c_prev, n_prev, m_prev;         // the state before the step
  Mat dh_a, dh_b;                     // the gradient of h_t is dh_a + dh_b (dh_b: from step t+1, may be null)
  Mat dc, dn, dm;                     // in, the gradients of c_t, n_t, m_t; out (in place), of c/n/m_{t-1}
  Mat dg;                             // out: gate-major gradients of the pre-activations (the input side)
  Mat dg_heads;                       // out: the same, head-major (the recurrent GEMM's input)
  Mat dh_prev;  // out: the direct part of dh_{t-1} (finished rows pass dh through, others 0; the GEMM adds the
                //   rest); may alias dh_b (same element read, then written)
};

//: One row of a forward step, head by head (a lane never straddles two heads: their recurrent columns are apart).
template <class M, class S, class Lanes>
void slstm_forward_row(const SlstmForwardStep& s, const Lanes& lanes, int64_t n) {
  const int64_t H = s.H, d = s.d;
  S* ws = at_<S>(s.ws, n, 0);
  const bool valid = row_valid(s.lengths, s.t, n);
  for (int64_t k = 0; k * d < H; ++k) {
    lanes(d, [&](const auto& lane, int64_t j) {
      const int64_t u = k * d + j;
      const auto c_prev = lane.load(at_<S>(s.c_prev, n, u)), n_prev = lane.load(at_<S>(s.n_prev, n, u));
      const auto m_prev = lane.load(at_<S>(s.m_prev, n, u));
      if (!valid) {  // a finished row: keep the state, save finite zeros
        for (int g = 0; g < kSlstmGates; ++g) lane.store(ws + g * H + u, lane.zero());
        lane.store(ws + kSlstmSavedC * H + u, c_prev);
        lane.store(ws + kSlstmSavedN * H + u, n_prev);
        lane.store(ws + kSlstmSavedM * H + u, m_prev);
        lane.store(at_<S>(s.h, n, u), lane.load(at_<S>(s.h_prev, n, u)));
        return;
      }
      auto pre = [&](int g) {
        const auto a =
            lane.load(at_<S>(s.gi, n, g * H + u)) + lane.load(at_<S>(s.gh, n, (k * kSlstmGates + g) * d + j));
        lane.store(ws + g * H + u, a);
        return a;
      };
      const auto i_raw = pre(0), f_raw = pre(1), z_raw = pre(2), o_raw = pre(3);
      auto c = c_prev, n_new = n_prev, m = m_prev, h = c_prev;
      slstm_forward<M>(i_raw, f_raw, z_raw, o_raw, c_prev, n_prev, m_prev, s.first, s.tirex, c, n_new, m, h);
      lane.store(ws + kSlstmSavedC * H + u, c);
      lane.store(ws + kSlstmSavedN * H + u, n_new);
      lane.store(ws + kSlstmSavedM * H + u, m);
      lane.store(at_<S>(s.h, n, u), h);
    });
  }
}

template <class M, class S, class Lanes>
void slstm_backward_row(const SlstmBackwardStep& s, const Lanes& lanes, int64_t n) {
  const int64_t H = s.H, d = s.d;
  const S* ws = at_<S>(s.ws, n, 0);
  const bool valid = row_valid(s.lengths, s.t, n);
  for (int64_t k = 0; k * d < H; ++k) {
    lanes(d, [&](const auto& lane, int64_t j) {
      const int64_t u = k * d + j;
      auto dh = lane.load(at_<S>(s.dh_a, n, u));
      if (s.dh_b.p != nullptr) dh = dh + lane.load(at_<S>(s.dh_b, n, u));
      auto grad = [&](int g, const auto& v) {
        lane.store(at_<S>(s.dg, n, g * H + u), v);
        lane.store(at_<S>(s.dg_heads, n, (k * kSlstmGates + g) * d + j), v);
      };
      if (!valid) {  // a finished row: its state was carried, so are the state's gradients (dc, dn, dm unchanged)
        for (int g = 0; g < kSlstmGates; ++g) grad(g, lane.zero());
        lane.store(at_<S>(s.dh_prev, n, u), dh);
        return;
      }
      auto dc = lane.load(at_<S>(s.dc, n, u)), dn = lane.load(at_<S>(s.dn, n, u)), dm = lane.load(at_<S>(s.dm, n, u));
      auto dai = dh, daf = dh, daz = dh, dao = dh;
      slstm_backward<M>(lane.load(ws + u), lane.load(ws + H + u), lane.load(ws + 2 * H + u), lane.load(ws + 3 * H + u),
                        lane.load(at_<S>(s.c_prev, n, u)), lane.load(at_<S>(s.n_prev, n, u)),
                        lane.load(at_<S>(s.m_prev, n, u)), s.first, s.tirex, dh, dc, dn, dm, dai, daf, daz, dao);
      grad(0, dai), grad(1, daf), grad(2, daz), grad(3, dao);
      lane.store(at_<S>(s.dc, n, u), dc);
      lane.store(at_<S>(s.dn, n, u), dn);
      lane.store(at_<S>(s.dm, n, u), dm);
      lane.store(at_<S>(s.dh_prev, n, u), lane.zero());
    });
  }
}

}  // namespace fusedrnn
