#include "rnn_loop.h"

#include <ATen/ATen.h>

namespace fusedrnn {
namespace {

using at::Tensor;

//: See forward_loop: below this many steps, copying W_hh^T once costs more than it saves.
constexpr int64_t kMinStepsToTransposeWeights = 16;

//: A 2-D tensor as a Mat (row stride from the tensor).
Mat mat(const Tensor& t) {
  return {t.data_ptr(), t.stride(0)};
}

//: Time step t of a [T, N, C] tensor, starting at column `col`.
Mat step_mat(const Tensor& t3, int64_t t, int64_t col = 0) {
  auto* base = static_cast<char*>(t3.data_ptr());
  return {base + (t * t3.stride(0) + col) * t3.element_size(), t3.stride(1)};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_loop(const LayerInputs& in, const Pointwise& pw) {
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const int64_t G = gates_of(in.mode), GH = in.w_hh.size(0), H = GH / G, P = in.w_hh.size(1);
  const bool projection = in.w_hr.has_value();
  const bool gru = in.mode == Mode::GRU;

  // Every bias goes into the input projection, except GRU's b_hn, which the reset gate scales inside the step.
  Tensor gi;
  Tensor b_hn = gru ? at::zeros({1, H}, in.x.options()) : Tensor();
  if (in.b_ih.has_value()) {
    Tensor bias = in.b_ih->clone();
    if (gru) {
      bias.narrow(0, 0, 2 * H).add_(in.b_hh->narrow(0, 0, 2 * H));
      b_hn.view({H}).copy_(in.b_hh->narrow(0, 2 * H, H));
    } else {
      bias.add_(*in.b_hh);
    }
    gi = at::addmm(bias, in.x.view({T * N, I}), in.w_ih.t());
  } else {
    gi = at::mm(in.x.view({T * N, I}), in.w_ih.t());
  }
  gi = gi.view({T, N, GH});

  Tensor y = at::empty({T, N, P}, in.x.options());
  // Saved activations: all steps when a backward will follow, else one step's worth, overwritten in place.
  const int64_t width = saved_width(in.mode, H, projection);
  Tensor saved = in.save ? at::empty({T, N, width}, in.x.options()) : at::empty({0}, in.x.options());
  Tensor scratch = in.save ? Tensor() : at::empty({N, width}, in.x.options());
  Tensor gh = at::empty({N, GH}, in.x.options());
  // Per-step GEMMs are faster against W^T stored contiguously ([K, G*H]) than against the transposed view: measured
  // on CPU 1.3-2x at N <= 64 (and a 4 ms stall of the 2-thread GEMV at H=256). The copy costs about as much as ten
  // small-batch steps, so short sequences (a decoder stepping one token at a time) keep the view.
  const bool transpose_once = T >= kMinStepsToTransposeWeights;
  const Tensor w_hh_t = transpose_once ? in.w_hh.t().contiguous() : in.w_hh.t();
  const Tensor w_hr_t = projection ? (transpose_once ? in.w_hr->t().contiguous() : in.w_hr->t()) : Tensor();
  const int64_t h_column = kLstmSaved * H;  // LSTM with projection: h before the projection is saved here

  Tensor h_prev = in.h0;
  Tensor c_prev = in.c0;
  Tensor ws_t;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = in.reverse ? T - 1 - s : s;
    at::mm_out(gh, h_prev, w_hh_t);
    Tensor y_t = y.select(0, t);
    ws_t = in.save ? saved.select(0, t) : scratch;
    ForwardStep step{in.mode, N, H};
    step.gi = step_mat(gi, t);
    step.gh = mat(gh);
    step.b_hn = gru ? mat(b_hn) : Mat{};
    step.h_prev = mat(h_prev);
    step.c_prev = in.mode == Mode::LSTM ? mat(c_prev) : Mat{};  // may be ws_t's own c column: read, then written
    step.ws = mat(ws_t);
    step.h = projection ? mat(ws_t.narrow(1, h_column, H)) : mat(y_t);
    pw.forward(step, in.x.scalar_type());
    if (projection) at::mm_out(y_t, ws_t.narrow(1, h_column, H), w_hr_t);
    h_prev = y_t;
    if (in.mode == Mode::LSTM) c_prev = ws_t.narrow(1, 4 * H, H);
  }
  const int64_t last = in.reverse ? 0 : T - 1;
  Tensor h_n = y.select(0, last).clone();
  Tensor c_n = in.mode == Mode::LSTM ? c_prev.clone() : at::empty({0}, y.options());
  return {y, h_n, c_n, saved};
}

std::vector<Tensor> backward_loop(const LayerInputs& in, const Tensor& y, const Tensor& saved, const Tensor& grad_y,
                                  const Tensor& grad_h_n, const Tensor& grad_c_n, bool has_bias,
                                  const Pointwise& pw) {
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const int64_t G = gates_of(in.mode), GH = in.w_hh.size(0), H = GH / G, P = in.w_hh.size(1);
  const bool projection = in.w_hr.has_value();
  const bool lstm = in.mode == Mode::LSTM, gru = in.mode == Mode::GRU;
  const int64_t h_column = kLstmSaved * H;

  Tensor dg_h = at::empty({T, N, GH}, y.options());  // gradients of the gate pre-activations, recurrent side
  Tensor dg_i = gru ? at::empty({T, N, GH}, y.options()) : dg_h;  // input side (differs only for GRU's n gate)
  Tensor dh_next = grad_h_n.clone();  // gradient of h_t from step t+1, [N, P]
  Tensor dc = lstm ? (grad_c_n.defined() ? grad_c_n.clone() : at::zeros({N, H}, y.options())) : Tensor();
  Tensor dh_total = projection ? at::empty({T, N, P}, y.options()) : Tensor();  // full gradient of each output
  Tensor dh_raw = projection ? at::empty({N, H}, y.options()) : Tensor();

  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = in.reverse ? s : T - 1 - s;  // forward steps in reverse order
    const bool first = in.reverse ? t == T - 1 : t == 0;
    const int64_t t_prev = in.reverse ? t + 1 : t - 1;
    BackwardStep step{in.mode, N, H};
    if (projection) {
      Tensor dh = dh_total.select(0, t);
      at::add_out(dh, grad_y.select(0, t), dh_next);
      at::mm_out(dh_raw, dh, *in.w_hr);
      step.dh_a = mat(dh_raw);
    } else {
      step.dh_a = step_mat(grad_y, t);
      step.dh_b = mat(dh_next);
    }
    step.ws = step_mat(saved, t);
    if (lstm) step.c_prev = first ? mat(in.c0) : step_mat(saved, t_prev, 4 * H);
    if (gru) step.h_prev = first ? mat(in.h0) : step_mat(y, t_prev);
    step.h = step_mat(y, t);
    step.dc = lstm ? mat(dc) : Mat{};
    step.dg_h = step_mat(dg_h, t);
    step.dg_i = step_mat(dg_i, t);
    step.dh_prev = gru ? mat(dh_next) : Mat{};
    pw.backward(step, y.scalar_type());
    if (gru) {
      dh_next.addmm_(dg_h.select(0, t), in.w_hh);  // z * dh (written by the step) + the recurrent GEMM
    } else {
      at::mm_out(dh_next, dg_h.select(0, t), in.w_hh);
    }
  }

  // Weight gradients: a few big GEMMs over all T*N rows, bias gradients a reduction.
  Tensor h0 = in.h0.unsqueeze(0);
  Tensor h_prev_all = in.reverse ? at::cat({y.narrow(0, 1, T - 1), h0}) : at::cat({h0, y.narrow(0, 0, T - 1)});
  Tensor dg_h2 = dg_h.view({T * N, GH}), dg_i2 = dg_i.view({T * N, GH});
  Tensor dw_hh = at::mm(dg_h2.t(), h_prev_all.view({T * N, P}));
  Tensor dw_ih = at::mm(dg_i2.t(), in.x.view({T * N, I}));
  Tensor dx = at::mm(dg_i2, in.w_ih).view({T, N, I});
  auto none = [&] { return at::empty({0}, y.options()); };  // absent gradients: fresh, so no two outputs alias
  Tensor db_ih = has_bias ? dg_i2.sum(0) : none();
  Tensor db_hh = has_bias ? dg_h2.sum(0) : none();
  Tensor dw_hr = projection
                     ? at::mm(dh_total.view({T * N, P}).t(), saved.view({T * N, -1}).narrow(1, h_column, H))
                     : none();
  return {dx, dh_next, lstm ? dc : none(), dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace fusedrnn
