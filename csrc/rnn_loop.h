// The host time loop of one layer in one direction, written once for every device: per step one GEMM through
// ATen (BLAS on CPU, cuBLAS on the current CUDA stream) and one call into the device's pointwise pass; no host
// synchronisation inside the loop. A device may replace the whole loop later (e.g. a persistent CUDA kernel that
// keeps W_hh on chip): that is a different `forward_loop`, chosen in ops.cpp, with the same inputs and outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "pointwise.h"

namespace fusedrnn {

//: One layer direction's inputs (shapes in fusedrnn/reference.py; every tensor contiguous, one dtype and device).
struct LayerInputs {
  Mode mode;
  at::Tensor x, h0, c0;  // c0 undefined unless LSTM
  at::Tensor w_ih, w_hh;
  std::optional<at::Tensor> b_ih, b_hh, w_hr;
  bool reverse;
  at::Tensor lengths;  // [N] int64 or undefined: rows with t >= lengths[n] keep their state (a padded packed batch)
  bool save = true;  // keep every step's activations for layer_backward (false: inference, nothing saved)
  // The variants (fusedrnn/reference.py), undefined when absent. IndRNN: w_hh is u [H].
  at::Tensor ln_ih, ln_hh;        // [G*H] gains of the input / recurrent pre-activation norms (layer norm)
  at::Tensor ln_c_w, ln_c_b;      // LSTM with layer norm: [H] gain and bias (may be undefined) of the cell norm
  at::Tensor zoneout_h, zoneout_c;  // [T, N, H] weights of the previous state (c: LSTM only)
};

//: Which variant features a call has: they decide the saved columns (SavedLayout).
struct Variants {
  bool norm = false, zoneout_h = false, zoneout_c = false;
};

inline Variants variants_of(const LayerInputs& in) {
  return {in.ln_ih.defined(), in.zoneout_h.defined(), in.zoneout_c.defined()};
}

//: Columns of the saved activations per (t, n): LSTM [i f g o c (h before projection)], GRU [r z n hn], Elman and
//: IndRNN none (the output is all their backward needs); then the variants' columns (SavedLayout, step.h).
//: Returns the layout for hidden size 1 (offsets and width are units of H plus `scalars` elements at the end).
struct SavedUnits {
  SavedLayout per_h;  // offsets and width in units of H
  int64_t scalars;    // elements after the H-blocks (the layer-norm statistics)
};

inline SavedUnits saved_units(Mode mode, bool projection, Variants v) {
  SavedLayout l;
  const int64_t G = gates_of(mode);
  int64_t next = mode == Mode::LSTM ? kLstmSaved + (projection ? 1 : 0) : mode == Mode::GRU ? kGruSaved : 0;
  auto take = [&](int64_t& field, bool used, int64_t units) {
    if (used) field = next, next += units;
  };
  take(l.h_tilde, v.zoneout_h && mode != Mode::LSTM && mode != Mode::GRU, 1);
  take(l.c_tilde, v.zoneout_c && !v.norm, 1);
  take(l.nhat_c, v.norm && mode == Mode::LSTM, 1);
  take(l.nhat_ih, v.norm, G);
  take(l.nhat_hh, v.norm, G);
  take(l.stats, v.norm, 0);
  l.width = next;
  return {l, v.norm ? kStats : 0};
}

template <class Int>
Int saved_width(Mode mode, Int H, bool projection, Variants v = {}) {
  const SavedUnits u = saved_units(mode, projection, v);
  return H * u.per_h.width + u.scalars;
}

//: The layout in elements for hidden size H.
inline SavedLayout saved_layout(Mode mode, int64_t H, bool projection, Variants v) {
  SavedLayout l = saved_units(mode, projection, v).per_h;
  for (int64_t* field : {&l.h_tilde, &l.c_tilde, &l.nhat_c, &l.nhat_ih, &l.nhat_hh, &l.stats}) {
    if (*field >= 0) *field *= H;
  }
  l.width = saved_width(mode, H, projection, v);
  return l;
}

//: The biases as the loops apply them: (bias [G*H] added to the input projection, undefined without bias; GRU's
//: b_hn [1, H], which the reset gate scales inside the step, zeros without bias, undefined for the other cells).
std::pair<at::Tensor, at::Tensor> fold_biases(const LayerInputs& in);

//: The device's prepared-weight GEMMs (Pointwise::prepared_gemm) if it has them and a call of T steps pays for
//: preparing the weights, else null.
const PreparedGemm* prepared_gemm(const Pointwise& pw, int64_t T);

//: `w` prepared for `uses` products of about `rows` rows, or undefined (no prepared path here: the caller uses
//: BLAS/ATen).
at::Tensor prepare(const PreparedGemm* gemm, const at::Tensor& w, int64_t rows, int64_t uses);

//: Returns y [T, N, P], h_n [N, P], c_n [N, H] (LSTM; else empty) and the saved activations [T, N, saved_width]
//: (empty unless in.save). With lengths, y[t] is the state after step t, carried for finished rows (not zeroed:
//: the caller masks the output; the state sequence is what the backward pass needs).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_loop(const LayerInputs& in, const Pointwise& pw);

//: Gradients of a forward_loop call; returns dx, dh0, dc0 (LSTM; else empty), dw_ih, dw_hh, db_ih, db_hh (empty
//: without bias), dw_hr (empty without projection), then the layer-norm gains' gradients d ln_ih, d ln_hh,
//: d ln_c_w, d ln_c_b (empty where absent). grad_c_n may be undefined (zero).
std::vector<at::Tensor> backward_loop(const LayerInputs& in, const at::Tensor& y, const at::Tensor& saved,
                                      const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                      const at::Tensor& grad_c_n, bool has_bias, const Pointwise& pw);

}  // namespace fusedrnn
