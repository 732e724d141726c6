// The host time loop of one xLSTM sLSTM layer in one direction (fusedrnn/reference_slstm.py's slstm_layer): the
// input projection of a chunk of steps as one GEMM, then per step the block-diagonal recurrent GEMM (one per head)
// and one call into the device's sLSTM pointwise pass (slstm_step.h). CPU only for now (Pointwise::slstm_forward).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "pointwise.h"

namespace fusedrnn {

//: One sLSTM layer direction's inputs (every tensor contiguous, one dtype: float or double; K heads of d units,
//: H = K * d).
struct SlstmInputs {
  at::Tensor x;               // [T, N, I], or [T, N, 4*H] gate pre-activations when w_ih is undefined (xlstm's cell)
  at::Tensor h0, c0, n0, m0;  // [N, H]
  at::Tensor w_ih;            // [4*H, I] or undefined
  at::Tensor w_hh;            // [K, 4*d, d]
  at::Tensor b_ih, b_hh;      // [4*H] each, or undefined (xlstm's cell has b_hh alone)
  bool reverse = false;
  bool tirex = false;         // formulation "tirex": f~ clamped at kTirexForgetClamp
  bool save = true;           // keep every step's row for slstm_backward_loop (false: inference)
  at::Tensor lengths;         // [N] int64 or undefined: rows with t >= lengths[n] keep their state
};

//: Returns y [T, N, H], h_n, c_n, n_n, m_n [N, H] and the saved rows [T, N, kSlstmSaved * H] (empty unless
//: in.save). With lengths, y[t] is the state after step t, carried for finished rows (the caller zeroes it).
std::vector<at::Tensor> slstm_forward_loop(const SlstmInputs& in, const Pointwise& pw);

//: Gradients of a slstm_forward_loop call: dx, dh0, dc0, dn0, dm0, dw_ih (empty without w_ih), dw_hh, and the
//: gradient of either bias (they are added to the same pre-activations; empty without bias).
std::vector<at::Tensor> slstm_backward_loop(const SlstmInputs& in, const at::Tensor& y, const at::Tensor& saved,
                                            const at::Tensor& grad_y, const std::vector<at::Tensor>& grad_final,
                                            bool has_bias, const Pointwise& pw);

}  // namespace fusedrnn
