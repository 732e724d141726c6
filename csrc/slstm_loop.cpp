#include "slstm_loop.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>

#include "cpu_buffers.h"
#include "loop_views.h"

namespace fusedrnn {
namespace {

using at::Tensor;

//: The sizes of a call: T steps, N rows, I input features, K heads of d units, H = K * d.
struct SlstmSizes {
  int64_t T, N, I, K, d, H;
  explicit SlstmSizes(const SlstmInputs& in)
      : T(in.x.size(0)), N(in.x.size(1)), I(in.x.size(2)), K(in.w_hh.size(0)), d(in.w_hh.size(2)), H(K * d) {}
};

//: xlstm's first-step rule reads the whole n state (every row and unit): whether it is all zero, as torch's
//: all(n == 0) (-0.0 counts as zero, NaN does not). Usually the first element answers.
bool all_zero(const Mat& n, int64_t N, int64_t H, c10::ScalarType dtype) {
  bool zero = true;
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_slstm_all_zero", [&] {
    for (int64_t row = 0; row < N && zero; ++row) {
      const scalar_t* p = at_<scalar_t>(n, row, 0);
      zero = std::all_of(p, p + H, [](scalar_t v) { return v == scalar_t(0); });
    }
  });
  return zero;
}

//: The recurrent weight as the per-step GEMM reads it: R_k^T [d, 4*d] per head (the weight of h_k R_k^T), copied
//: contiguous once for a sequence long enough to pay for the copy (as the LSTM's loop does: small GEMMs were
//: measured faster against a contiguous W^T than against the transposed view), else the transposed view.
HeadOperand recurrent_weight_t(const Tensor& w_hh_t, int64_t d) {
  if (w_hh_t.is_contiguous()) return {w_hh_t.data_ptr(), w_hh_t.size(2), w_hh_t.stride(0)};
  return {w_hh_t.data_ptr(), d, w_hh_t.stride(0), /*transposed=*/true};
}

//: The biases added to the input projection (both act on the same pre-activations): their sum, or undefined.
Tensor folded_bias(const SlstmInputs& in) {
  if (in.b_ih.defined() && in.b_hh.defined()) return in.b_ih + in.b_hh;
  return in.b_ih.defined() ? in.b_ih : in.b_hh;
}

}  // namespace

std::vector<Tensor> slstm_forward_loop(const SlstmInputs& in, const Pointwise& pw) {
  TORCH_CHECK(pw.slstm_forward != nullptr && pw.headwise_gemm != nullptr, "fusedrnn: no sLSTM kernels on ",
              in.x.device().type());
  const SlstmSizes z(in);
  const int64_t T = z.T, N = z.N, H = z.H, GH = kSlstmGates * H;
  const auto options = in.x.options();
  const auto dtype = in.x.scalar_type();
  const Tensor bias = folded_bias(in);

  // The input projection x W_ih^T + bias, one GEMM per chunk of steps (chunk_steps); without W_ih the input is the
  // pre-activations already (plus the bias, if any).
  const int64_t chunk = chunk_steps(pw, T, N);
  const bool projected = in.w_ih.defined();
  Tensor gi_buffer = projected || bias.defined() ? recycled_empty({chunk, N, GH}, options) : Tensor();
  Tensor gi;                  // the current chunk's pre-activations [steps, N, 4*H]
  int64_t chunk_first_t = 0;  // the time step of gi[0]
  auto project = [&](int64_t s) {
    const int64_t steps = std::min(chunk, T - s);
    chunk_first_t = in.reverse ? T - s - steps : s;
    const Tensor x_chunk = in.x.narrow(0, chunk_first_t, steps);
    if (!gi_buffer.defined()) {
      gi = x_chunk;
      return;
    }
    gi = gi_buffer.narrow(0, 0, steps);
    Tensor out = gi.view({steps * N, GH});
    if (!projected) {
      at::add_out(out, x_chunk.view({steps * N, GH}), bias);
    } else if (bias.defined()) {
      at::addmm_out(out, bias, x_chunk.view({steps * N, z.I}), in.w_ih.t());
    } else {
      at::mm_out(out, x_chunk.view({steps * N, z.I}), in.w_ih.t());
    }
  };

  const Tensor w_hh_t = T >= kMinStepsToTransposeWeights ? in.w_hh.transpose(1, 2).contiguous()
                                                          : in.w_hh.transpose(1, 2);
  const HeadOperand r_t = recurrent_weight_t(w_hh_t, z.d);
  Tensor y = at::empty({T, N, H}, options);
  const int64_t width = kSlstmSaved * H;
  Tensor saved = in.save ? recycled_empty({T, N, width}, options) : at::empty({0}, options);  // cpu_buffers.h
  Tensor scratch = in.save ? Tensor() : at::empty({N, width}, options);  // one step's row, overwritten in place
  Tensor gh = at::empty({N, GH}, options);  // head-major h_{t-1} R^T

  Mat h_prev = mat(in.h0), c_prev = mat(in.c0), n_prev = mat(in.n0), m_prev = mat(in.m0);
  Mat ws;
  const int64_t bytes = in.x.element_size();
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = in.reverse ? T - 1 - s : s;
    if (s % chunk == 0) project(s);
    pw.headwise_gemm(dtype, z.K, 1, N, z.d, kSlstmGates * z.d, {h_prev.p, h_prev.ld, z.d}, r_t,
                      {gh.data_ptr(), GH, kSlstmGates * z.d}, false);
    ws = in.save ? step_mat(saved, t) : mat(scratch);
    SlstmForwardStep step{N, H, z.d, t, lengths_ptr(in.lengths)};
    step.first = all_zero(n_prev, N, H, dtype);
    step.tirex = in.tirex;
    step.gi = step_mat(gi, t - chunk_first_t);
    step.gh = mat(gh);
    step.h_prev = h_prev, step.c_prev = c_prev, step.n_prev = n_prev, step.m_prev = m_prev;
    step.ws = ws;
    step.h = step_mat(y, t);
    if (N * H > 0) pw.slstm_forward(step, dtype);
    h_prev = step.h;
    c_prev = columns(ws, kSlstmSavedC * H, bytes);
    n_prev = columns(ws, kSlstmSavedN * H, bytes);
    m_prev = columns(ws, kSlstmSavedM * H, bytes);
  }
  const Tensor last = in.save ? saved.select(0, in.reverse ? 0 : T - 1) : scratch;
  // Copies, never views: at N = 1 a column block is contiguous already, and a view would hand the user the saved
  // (recycled, cpu_buffers.h) buffer that the backward reads.
  auto final_state = [&](int column) { return last.narrow(1, column * H, H).clone(at::MemoryFormat::Contiguous); };
  return {y, y.select(0, in.reverse ? 0 : T - 1).clone(), final_state(kSlstmSavedC), final_state(kSlstmSavedN),
          final_state(kSlstmSavedM), saved};
}

std::vector<Tensor> slstm_backward_loop(const SlstmInputs& in, const Tensor& y, const Tensor& saved,
                                        const Tensor& grad_y, const std::vector<Tensor>& grad_final, bool has_bias,
                                        const Pointwise& pw) {
  TORCH_CHECK(pw.slstm_backward != nullptr && pw.headwise_gemm != nullptr, "fusedrnn: no sLSTM kernels on ",
              in.x.device().type());
  const SlstmSizes z(in);
  const int64_t T = z.T, N = z.N, H = z.H, GH = kSlstmGates * H, Gd = kSlstmGates * z.d;
  const auto options = y.options();
  const auto dtype = y.scalar_type();
  const bool projected = in.w_ih.defined();
  auto none = [&] { return at::empty({0}, options); };  // absent gradients: fresh, so no two outputs alias

  // Per chunk of steps: the pre-activations' gradients gate-major (the input side: dx, dW_ih, the bias; without W_ih
  // they are dx itself) and head-major (the recurrent side: dh_{t-1}, dR).
  const int64_t chunk = chunk_steps(pw, T, N);
  Tensor dx = at::empty(in.x.sizes(), options);
  Tensor dg = projected ? recycled_empty({chunk, N, GH}, options) : Tensor();
  Tensor dg_heads = recycled_empty({chunk, N, GH}, options);
  // The gradients of the state after the current step (h_t from step t+1; c, n, m in place).
  Tensor dh_next = grad_final[0].clone(), dc = grad_final[1].clone(), dn = grad_final[2].clone();
  Tensor dm = grad_final[3].clone();

  Tensor dw_ih = projected ? at::empty_like(in.w_ih) : none();
  Tensor dw_hh = at::empty_like(in.w_hh);
  Tensor db = has_bias ? at::empty({GH}, options) : none();
  int64_t lo = 0, steps = 0;  // the chunk holds steps t in [lo, lo + steps)
  bool first_chunk = true;    // the first chunk writes the weight gradients, later ones add to them
  auto accumulate_weight_gradients = [&]() {
    const int64_t rows = steps * N;
    const Tensor dg_rows = (projected ? dg.narrow(0, 0, steps) : dx.narrow(0, lo, steps)).view({rows, GH});
    const Tensor h_prev = previous_outputs(y, in.h0, lo, steps, in.reverse);
    // dR_k [4d, d] = sum over rows of dg_k^T h_{t-1, k}: the head-major gradients, read transposed.
    pw.headwise_gemm(dtype, z.K, 1, Gd, rows, z.d, {dg_heads.data_ptr(), GH, Gd, /*transposed=*/true},
                      {h_prev.data_ptr(), H, z.d}, {dw_hh.data_ptr(), z.d, Gd * z.d}, !first_chunk);
    if (projected) {
      const Tensor x_rows = in.x.narrow(0, lo, steps).view({rows, z.I});
      if (first_chunk) {
        at::mm_out(dw_ih, dg_rows.t(), x_rows);
      } else {
        dw_ih.addmm_(dg_rows.t(), x_rows);
      }
      Tensor dx_rows = dx.narrow(0, lo, steps).view({rows, z.I});
      at::mm_out(dx_rows, dg_rows, in.w_ih);
    }
    if (has_bias) {
      if (first_chunk) {
        at::sum_out(db, dg_rows, 0);
      } else {
        db.add_(dg_rows.sum(0));
      }
    }
    first_chunk = false;
  };

  const HeadOperand r{in.w_hh.data_ptr(), z.d, Gd * z.d};  // R_k [4d, d], the weight of dh_{t-1,k} = dg_k R_k
  const int64_t bytes = y.element_size();
  auto backward_step = [&](int64_t t, int64_t k) {
    const bool first = in.reverse ? t == T - 1 : t == 0;
    const Mat ws_prev = first ? Mat{} : step_mat(saved, in.reverse ? t + 1 : t - 1);
    SlstmBackwardStep step{N, H, z.d, t, lengths_ptr(in.lengths)};
    step.c_prev = first ? mat(in.c0) : columns(ws_prev, kSlstmSavedC * H, bytes);
    step.n_prev = first ? mat(in.n0) : columns(ws_prev, kSlstmSavedN * H, bytes);
    step.m_prev = first ? mat(in.m0) : columns(ws_prev, kSlstmSavedM * H, bytes);
    step.first = all_zero(step.n_prev, N, H, dtype);
    step.tirex = in.tirex;
    step.ws = step_mat(saved, t);
    step.dh_a = step_mat(grad_y, t);
    step.dh_b = mat(dh_next);
    step.dc = mat(dc), step.dn = mat(dn), step.dm = mat(dm);
    step.dg = projected ? step_mat(dg, k) : step_mat(dx, t);
    step.dg_heads = step_mat(dg_heads, k);
    step.dh_prev = mat(dh_next);
    if (N * H > 0) pw.slstm_backward(step, dtype);
    // dh_{t-1} = the direct part the step wrote + dg_k R_k per head.
    pw.headwise_gemm(dtype, z.K, 1, N, Gd, z.d, {step.dg_heads.p, GH, Gd}, r, {dh_next.data_ptr(), H, z.d}, true);
  };
  walk_back_in_chunks(T, chunk, in.reverse, lo, steps, backward_step, accumulate_weight_gradients);
  return {dx, dh_next, dc, dn, dm, dw_ih, dw_hh, db};
}

}  // namespace fusedrnn
