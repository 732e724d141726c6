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
};

//: Columns of the saved activations per (t, n), in units of H: LSTM [i f g o c (h before projection)],
//: GRU [r z n hn], Elman none (the output is all its backward needs).
template <class Int>
Int saved_width(Mode mode, Int H, bool projection) {
  if (mode == Mode::LSTM) return H * (kLstmSaved + (projection ? 1 : 0));
  if (mode == Mode::GRU) return H * kGruSaved;
  return H * 0;
}

//: The biases as the loops apply them: (bias [G*H] added to the input projection, undefined without bias; GRU's
//: b_hn [1, H], which the reset gate scales inside the step, zeros without bias, undefined for the other cells).
std::pair<at::Tensor, at::Tensor> fold_biases(const LayerInputs& in);

//: Returns y [T, N, P], h_n [N, P], c_n [N, H] (LSTM; else empty) and the saved activations [T, N, saved_width]
//: (empty unless in.save). With lengths, y[t] is the state after step t, carried for finished rows (not zeroed:
//: the caller masks the output; the state sequence is what the backward pass needs).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_loop(const LayerInputs& in, const Pointwise& pw);

//: Gradients of a forward_loop call; returns dx, dh0, dc0 (LSTM; else empty), dw_ih, dw_hh, db_ih, db_hh (empty
//: without bias), dw_hr (empty without projection). grad_c_n may be undefined (zero).
std::vector<at::Tensor> backward_loop(const LayerInputs& in, const at::Tensor& y, const at::Tensor& saved,
                                      const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                      const at::Tensor& grad_c_n, bool has_bias, const Pointwise& pw);

}  // namespace fusedrnn
