#include "rnn_loop.h"

#include <ATen/ATen.h>

#include "cpu_buffers.h"
#include "loop_views.h"

namespace fusedrnn {
namespace {

using at::Tensor;

//: A vector (a per-unit parameter) as a [1, C] row; null when undefined.
Mat row_mat(const Tensor& t) {
  return t.defined() ? Mat{t.data_ptr(), 0} : Mat{};
}

//: Time step t of a [T, N, H] tensor, or null when undefined (an absent zoneout mask).
Mat optional_step_mat(const Tensor& t3, int64_t t) {
  return t3.defined() ? step_mat(t3, t) : Mat{};
}

//: [T, N, 1] in `options`' dtype: 1 where row n takes part in step t (t < lengths[n]), else 0.
Tensor valid_mask(const Tensor& lengths, int64_t T, const at::TensorOptions& options) {
  return (at::arange(T, lengths.options()).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).to(options.dtype());
}

//: c = a b, or c += a b: the device's own per-step GEMM where it has one (Pointwise::step_gemm), else ATen's.
void step_gemm(const Pointwise& pw, const Tensor& a, const Tensor& b, Tensor c, bool accumulate) {
  if (pw.step_gemm != nullptr && pw.step_gemm(a, b, c, accumulate)) return;
  if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

std::optional<Tensor> optional(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

//: Hidden units H of a layer: W_hh [G*H, P], IndRNN's u [H], or multi-head blocks [K, G*d, d] (H = K*d).
int64_t hidden_of(const LayerInputs& in) {
  if (in.w_hh.dim() == 3) return in.w_hh.size(0) * in.w_hh.size(2);
  return is_indrnn(in.mode) ? in.w_hh.size(0) : in.w_hh.size(0) / gates_of(in.mode);
}

// Multi-head layers (W_hh block-diagonal, stored as its blocks [K, G*d, d]; fusedrnn.reference.headwise_linear):
// the recurrent products run one small GEMM per head and gate (Pointwise::headwise_gemm), between the
// gate-major pre-activations (gate g, head k, unit j at g*H + k*d + j) the pointwise passes read and write and the
// head-major state.

//: The blocks' transposes W_kg^T [d, d] (the weights of h_k W_kg^T) as the forward's products read them: copied
//: contiguous for a sequence long enough to pay for it (as the dense W_hh^T is), else a view of W_hh.
Tensor head_blocks_t(const Tensor& w_hh, int64_t G, bool copy) {
  const int64_t K = w_hh.size(0), d = w_hh.size(2);
  const Tensor view = w_hh.view({K, G, d, d}).transpose(2, 3);
  return copy ? view.contiguous() : view;
}

//: gh [N, G*H] = h [N, H] times the block-diagonal W_hh^T, w_t from head_blocks_t.
void headwise_recurrent(const Pointwise& pw, const Tensor& h, const Tensor& w_t, Tensor& gh) {
  const int64_t K = w_t.size(0), G = w_t.size(1), d = w_t.size(2), H = K * d;
  pw.headwise_gemm(gh.scalar_type(), K, G, h.size(0), d, d, {h.data_ptr(), h.stride(0), d},
                    {w_t.data_ptr(), d, G * d * d, /*transposed=*/!w_t.is_contiguous(), d * d},
                    {gh.data_ptr(), G * H, d, false, H}, false);
}

//: dh [N, H] (+)= dg [N, G*H] times the block-diagonal W_hh: gate by gate, each adding its part (accumulate: the
//: first one too).
void headwise_recurrent_backward(const Pointwise& pw, const Tensor& dg, const Tensor& w_hh, Tensor& dh,
                                 bool accumulate) {
  const int64_t K = w_hh.size(0), d = w_hh.size(2), G = w_hh.size(1) / d, H = K * d;
  const auto bytes = dg.element_size();
  for (int64_t g = 0; g < G; ++g) {
    const auto* dg_g = static_cast<const char*>(dg.data_ptr()) + g * H * bytes;
    const auto* w_g = static_cast<const char*>(w_hh.data_ptr()) + g * d * d * bytes;
    pw.headwise_gemm(dg.scalar_type(), K, 1, dg.size(0), d, d, {dg_g, dg.stride(0), d}, {w_g, d, G * d * d},
                      {dh.data_ptr(), dh.stride(0), d}, accumulate || g > 0);
  }
}

//: dW_hh [K, G*d, d] (+)= dg^T h over rows: dg [rows, G*H] contiguous, h [rows, H] contiguous.
void headwise_weight_gradient(const Pointwise& pw, const Tensor& dg, const Tensor& h, Tensor& dw_hh, bool accumulate) {
  const int64_t K = dw_hh.size(0), d = dw_hh.size(2), G = dw_hh.size(1) / d, H = K * d;
  pw.headwise_gemm(dg.scalar_type(), K, G, d, dg.size(0), d, {dg.data_ptr(), G * H, d, /*transposed=*/true, H},
                    {h.data_ptr(), H, d}, {dw_hh.data_ptr(), d, G * d * d, false, d * d}, accumulate);
}

}  // namespace

const PreparedGemm* prepared_gemm(const Pointwise& pw, int64_t T) {
  return T >= kMinStepsToTransposeWeights ? pw.prepared_gemm : nullptr;
}

Tensor prepare(const PreparedGemm* gemm, const Tensor& w, int64_t rows, int64_t uses) {
  return gemm != nullptr ? gemm->prepare_weight(w, rows, uses) : Tensor();
}

std::pair<Tensor, Tensor> fold_biases(const LayerInputs& in) {
  const int64_t H = hidden_of(in);
  const bool gru = in.mode == Mode::GRU;
  // Every bias goes into the input projection, except GRU's b_hn, which the reset gate scales inside the step.
  Tensor bias;
  Tensor b_hn = gru ? at::zeros({1, H}, in.x.options()) : Tensor();
  if (in.b_ih.has_value()) {
    bias = in.b_ih->clone();
    if (gru) {
      bias.narrow(0, 0, 2 * H).add_(in.b_hh->narrow(0, 0, 2 * H));
      b_hn.view({H}).copy_(in.b_hh->narrow(0, 2 * H, H));
    } else {
      bias.add_(*in.b_hh);
    }
  }
  return {bias, b_hn};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_loop(const LayerInputs& in, const Pointwise& pw) {
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const bool indrnn = is_indrnn(in.mode);  // no recurrent GEMM: u * h_{t-1} is part of the pointwise pass
  const bool heads = in.w_hh.dim() == 3;  // multi-head: block-diagonal W_hh [K, G*d, d]
  TORCH_CHECK(!heads || pw.headwise_gemm != nullptr, "fusedrnn: no multi-head kernels on ", in.x.device().type());
  const int64_t G = gates_of(in.mode), H = hidden_of(in), GH = G * H, P = indrnn || heads ? H : in.w_hh.size(1);
  const bool projection = in.w_hr.has_value();
  const bool gru = in.mode == Mode::GRU;
  const Variants variants = variants_of(in);
  const SavedLayout layout = saved_layout(in.mode, H, projection, variants);
  // With layer norm the projection is left un-normalised and without bias: the pointwise pass normalises each row.
  Norms norms;

  Tensor bias, b_hn;
  std::tie(bias, b_hn) = fold_biases(in);
  if (variants.norm) {
    norms = {row_mat(in.ln_ih), row_mat(in.ln_hh), row_mat(in.ln_c_w), row_mat(in.ln_c_b), row_mat(bias)};
  }
  // The input projection x W_ih^T + bias: one GEMM per chunk of steps (see chunk_steps).
  const int64_t chunk = chunk_steps(pw, T, N);
  // Weights prepared once for this call (see Pointwise::prepared_gemm), W^T being the weight of x W^T and h W_hh^T.
  const PreparedGemm* gemm = prepared_gemm(pw, T);
  const Tensor w_ih_prepared = prepare(gemm, in.w_ih, chunk * N, chunks_of(T, chunk));
  // IndRNN: u is a vector; multi-head: per-head products (headwise_recurrent)
  const Tensor w_hh_prepared = indrnn || heads ? Tensor() : prepare(gemm, in.w_hh, N, T);
  Tensor gi = w_ih_prepared.defined() ? Tensor() : recycled_empty({chunk, N, GH}, in.x.options());
  int64_t chunk_first_t = 0;  // the time step of gi[0]
  auto project = [&](int64_t s) {
    const int64_t steps = std::min(chunk, T - s);
    chunk_first_t = in.reverse ? T - s - steps : s;
    Tensor x_chunk = in.x.narrow(0, chunk_first_t, steps).view({steps * N, I});
    if (w_ih_prepared.defined()) {  // with layer norm the bias follows the norm (the pointwise pass adds it)
      gi = Tensor();  // the last chunk's buffer released first, so that malloc can hand it out again
      gi = gemm->linear(x_chunk, w_ih_prepared, variants.norm ? std::nullopt : optional(bias)).view({steps, N, GH});
      return;
    }
    Tensor out = gi.narrow(0, 0, steps).view({steps * N, GH});
    if (bias.defined() && !variants.norm) {
      at::addmm_out(out, bias, x_chunk, in.w_ih.t());
    } else {
      at::mm_out(out, x_chunk, in.w_ih.t());
    }
  };

  Tensor y = recycled_empty({T, N, P}, in.x.options());
  // Saved activations: all steps when a backward will follow, else one step's worth, overwritten in place. Large
  // buffers are recycled (cpu_buffers.h) here and below: fresh memory's page faults cost a large share of a call.
  const int64_t width = layout.width;
  Tensor saved = in.save ? recycled_empty({T, N, width}, in.x.options()) : at::empty({0}, in.x.options());
  Tensor scratch = in.save ? Tensor() : at::empty({N, width}, in.x.options());
  Tensor gh = w_hh_prepared.defined() ? Tensor() : at::empty({indrnn ? 0 : N, GH}, in.x.options());
  // Per-step GEMMs are faster against W^T stored contiguously ([K, G*H]) than against the transposed view: measured
  // on CPU (MKL, 1 thread) 1.3-2x at N <= 64. The copy costs about as much as ten small-batch steps, so short
  // sequences (a decoder stepping one token at a time) keep the view. (With 2 threads MKL's small GEMMs stalled for
  // milliseconds now and then in either layout on the busy dev machine; no layout avoided that.)
  const bool transpose_once = T >= kMinStepsToTransposeWeights && !w_hh_prepared.defined() && !indrnn;
  const Tensor w_hh_t = heads ? head_blocks_t(in.w_hh, G, transpose_once)
                              : transpose_once ? in.w_hh.t().contiguous() : in.w_hh.t();
  const Tensor w_hr_t =
      projection ? (T >= kMinStepsToTransposeWeights ? in.w_hr->t().contiguous() : in.w_hr->t()) : Tensor();
  const int64_t h_column = kLstmSaved * H;  // LSTM with projection: h before the projection is saved here

  // With a projection, finished rows are carried after the projection GEMM (the pointwise pass works before it).
  const bool masked = in.lengths.defined();
  Tensor valid = masked && projection ? valid_mask(in.lengths, T, in.x.options()).to(at::kBool) : Tensor();

  Tensor h_prev = in.h0;
  Tensor c_prev = in.c0;
  Tensor ws_t;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = in.reverse ? T - 1 - s : s;
    if (s % chunk == 0) project(s);
    if (indrnn) {
      // No recurrent GEMM: u * h_{t-1} is part of the pointwise pass.
    } else if (w_hh_prepared.defined()) {
      gh = gemm->linear(h_prev, w_hh_prepared, std::nullopt);
    } else if (heads) {
      headwise_recurrent(pw, h_prev, w_hh_t, gh);
    } else {
      step_gemm(pw, h_prev, w_hh_t, gh, false);
    }
    Tensor y_t = y.select(0, t);
    ws_t = in.save ? saved.select(0, t) : scratch;
    ForwardStep step{in.mode, N, H, t, lengths_ptr(in.lengths)};
    step.gi = step_mat(gi, t - chunk_first_t);
    step.gh = mat(gh);
    step.b_hn = gru ? mat(b_hn) : Mat{};
    step.h_prev = mat(h_prev);
    step.c_prev = in.mode == Mode::LSTM ? mat(c_prev) : Mat{};  // may be ws_t's own c column: read, then written
    step.ws = mat(ws_t);
    step.h = projection ? mat(ws_t.narrow(1, h_column, H)) : mat(y_t);
    step.h_carries = !projection;
    step.u = indrnn ? row_mat(in.w_hh) : Mat{};
    step.zoneout_h = optional_step_mat(in.zoneout_h, t);
    step.zoneout_c = optional_step_mat(in.zoneout_c, t);
    step.norm = norms;
    step.layout = layout;
    if (N * H > 0) pw.forward(step, in.x.scalar_type());  // empty batch or H=0 cell: no elements, no launch
    if (projection) {
      step_gemm(pw, ws_t.narrow(1, h_column, H), w_hr_t, y_t, false);
      if (masked) y_t.copy_(at::where(valid.select(0, t), y_t, h_prev));
    }
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
  const bool indrnn = is_indrnn(in.mode);
  const bool heads = in.w_hh.dim() == 3;  // multi-head: see forward_loop
  TORCH_CHECK(!heads || pw.headwise_gemm != nullptr, "fusedrnn: no multi-head kernels on ", in.x.device().type());
  const int64_t G = gates_of(in.mode), H = hidden_of(in), GH = G * H, P = indrnn || heads ? H : in.w_hh.size(1);
  const bool projection = in.w_hr.has_value();
  const bool lstm = in.mode == Mode::LSTM, gru = in.mode == Mode::GRU;
  const Variants variants = variants_of(in);
  const SavedLayout layout = saved_layout(in.mode, H, projection, variants);
  const bool norm = variants.norm, norm_lstm = norm && lstm;
  const Norms norms = norm ? Norms{row_mat(in.ln_ih), row_mat(in.ln_hh), row_mat(in.ln_c_w), row_mat(in.ln_c_b), {}}
                           : Norms{};
  const int64_t h_column = kLstmSaved * H;
  const auto options = y.options();
  auto none = [&] { return at::empty({0}, options); };  // absent gradients: fresh, so no two outputs alias

  // Per chunk of steps (see chunk_steps): the gate pre-activation gradients of the recurrent side, of the input side
  // (differs only in GRU's n gate) and, with a projection, the full gradient of each output.
  const int64_t chunk = chunk_steps(pw, T, N);
  // Prepared weights (see forward_loop): dh_{t-1} = dg_t W_hh and dx = dg W_ih, so W_hh^T and W_ih^T are the weights.
  const PreparedGemm* gemm = prepared_gemm(pw, T);
  const Tensor w_hh_t_prepared = indrnn || heads ? Tensor() : prepare(gemm, in.w_hh.t(), N, T);
  const Tensor w_ih_t_prepared = prepare(gemm, in.w_ih.t(), chunk * N, chunks_of(T, chunk));
  // The weight gradients (two activations: nothing to prepare) go the same way as the chunk's other big GEMM.
  const bool gemm_weight_gradients = w_ih_t_prepared.defined();
  Tensor dg_h = recycled_empty({chunk, N, GH}, options);
  Tensor dg_i = gru ? recycled_empty({chunk, N, GH}, options) : dg_h;
  // Layer norm: the gradients of the un-normalised pre-activations (the GEMMs' inputs), and of the LSTM's
  // normalised cell state (for its gain and bias).
  Tensor dv_h = norm ? recycled_empty({chunk, N, GH}, options) : dg_h;
  Tensor dv_i = norm ? recycled_empty({chunk, N, GH}, options) : dg_i;
  Tensor d_cn = norm_lstm ? recycled_empty({chunk, N, H}, options) : Tensor();
  Tensor dh_total = projection ? recycled_empty({chunk, N, P}, options) : Tensor();
  Tensor dh_raw = projection ? at::empty({N, H}, options) : Tensor();
  Tensor dh_next = grad_h_n.clone();  // gradient of h_t from step t+1, [N, P]
  // With lengths, finished rows pass dh through: the pointwise pass writes the direct part of dh_{t-1} for every
  // cell and the recurrent GEMM adds to it (with a projection, dh lives in P-space and is carried by a mask below).
  const bool masked = in.lengths.defined();
  // Zoneout adds m * dh to dh_{t-1}; IndRNN's pointwise pass writes all of dh_{t-1}.
  const bool direct = gru || (masked && !projection) || variants.zoneout_h || indrnn;
  Tensor finished = masked && projection ? 1 - valid_mask(in.lengths, T, options) : Tensor();
  Tensor dc = lstm ? (grad_c_n.defined() ? grad_c_n.clone() : at::zeros({N, H}, options)) : Tensor();

  Tensor dx = at::empty({T, N, I}, options);
  // Written by the first chunk's GEMMs and sums, added to by the later ones (see accumulate_weight_gradients).
  Tensor dw_ih = at::empty_like(in.w_ih), dw_hh = at::empty_like(in.w_hh);
  Tensor db_ih = has_bias ? at::empty({GH}, options) : none(), db_hh = has_bias ? at::empty({GH}, options) : none();
  Tensor dw_hr = projection ? at::empty_like(*in.w_hr) : none();
  Tensor dln_ih = norm ? at::empty({GH}, options) : none(), dln_hh = norm ? at::empty({GH}, options) : none();
  Tensor dln_c_w = norm_lstm ? at::empty({H}, options) : none();
  Tensor dln_c_b = norm_lstm && in.ln_c_b.defined() ? at::empty({H}, options) : none();

  // The chunk holds steps t in [lo, lo + steps); its weight gradients are GEMMs over all its steps * N rows.
  int64_t lo = 0, steps = 0;
  auto h_prev_rows = [&]() { return previous_outputs(y, in.h0, lo, steps, in.reverse); };  // [steps * N, P]
  // The first chunk writes the weight and bias gradients, later chunks add to them: no zero fill and no extra read
  // of the output, which a one-step call (a cell: one chunk) notices.
  bool first_chunk = true;
  auto gemm_into = [&](Tensor& out, const Tensor& a, const Tensor& b) {
    if (gemm_weight_gradients) {  // a b = a (b^T)^T: b^T is the (unprepared, strided) weight of the product
      Tensor product = gemm->linear(a, b.t(), std::nullopt);
      out = first_chunk ? product : out.add_(product);
      return;
    }
    if (first_chunk) {
      at::mm_out(out, a, b);
    } else {
      out.addmm_(a, b);
    }
  };
  auto sum_into = [&](Tensor& out, const Tensor& rows) {
    if (first_chunk) {
      at::sum_out(out, rows, 0);
    } else {
      out.add_(rows.sum(0));
    }
  };
  auto accumulate_weight_gradients = [&]() {
    auto rows = [&](const Tensor& chunk3) { return chunk3.narrow(0, 0, steps).view({steps * N, chunk3.size(2)}); };
    Tensor dgh = rows(dg_h), dgi = rows(dg_i), dvh = rows(dv_h), dvi = rows(dv_i);
    if (indrnn) {
      sum_into(dw_hh, dgh * h_prev_rows());  // du = sum over t, n of da * h_{t-1}
    } else {
      if (heads) {
        headwise_weight_gradient(pw, dvh, h_prev_rows(), dw_hh, !first_chunk);
      } else {
        gemm_into(dw_hh, dvh.t(), h_prev_rows());
      }
    }
    gemm_into(dw_ih, dvi.t(), in.x.narrow(0, lo, steps).view({steps * N, I}));
    Tensor dx_rows = dx.narrow(0, lo, steps).view({steps * N, I});
    if (w_ih_t_prepared.defined()) {
      dx_rows.copy_(gemm->linear(dvi, w_ih_t_prepared, std::nullopt));
    } else {
      at::mm_out(dx_rows, dvi, in.w_ih);
    }
    if (norm) {  // the gains' gradients: the gradient after each norm times the saved normalised values
      Tensor ws = saved.narrow(0, lo, steps).view({steps * N, layout.width});
      sum_into(dln_ih, dgi * ws.narrow(1, layout.nhat_ih, GH));
      sum_into(dln_hh, dgh * ws.narrow(1, layout.nhat_hh, GH));
      if (norm_lstm) {
        Tensor dcn = rows(d_cn);
        sum_into(dln_c_w, dcn * ws.narrow(1, layout.nhat_c, H));
        if (in.ln_c_b.defined()) sum_into(dln_c_b, dcn);
      }
    }
    if (has_bias) {
      sum_into(db_ih, dgi);
      sum_into(db_hh, dgh);
    }
    if (projection) {
      Tensor h_raw = saved.narrow(0, lo, steps).view({steps * N, saved.size(2)}).narrow(1, h_column, H);
      gemm_into(dw_hr, dh_total.narrow(0, 0, steps).view({steps * N, P}).t(), h_raw);
    }
    first_chunk = false;
  };

  auto backward_step = [&](int64_t t, int64_t k) {  // k: t's index in the chunk buffers
    const bool first = in.reverse ? t == T - 1 : t == 0;
    const int64_t t_prev = in.reverse ? t + 1 : t - 1;
    BackwardStep step{in.mode, N, H, t, lengths_ptr(in.lengths)};
    if (projection) {
      Tensor dh = dh_total.select(0, k);
      at::add_out(dh, grad_y.select(0, t), dh_next);
      step_gemm(pw, dh, *in.w_hr, dh_raw, false);
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
    step.dg_h = step_mat(dg_h, k);
    step.dg_i = step_mat(dg_i, k);
    step.dh_prev = direct ? mat(dh_next) : Mat{};
    step.u = indrnn ? row_mat(in.w_hh) : Mat{};
    step.zoneout_h = optional_step_mat(in.zoneout_h, t);
    step.zoneout_c = optional_step_mat(in.zoneout_c, t);
    step.norm = norms;
    step.layout = layout;
    step.d_cn = norm_lstm ? step_mat(d_cn, k) : Mat{};
    step.dv_h = norm ? step_mat(dv_h, k) : Mat{};
    step.dv_i = norm ? step_mat(dv_i, k) : Mat{};
    if (N * H > 0) pw.backward(step, y.scalar_type());  // as in forward_loop: nothing to do, nothing to launch
    if (indrnn) {
      // The step wrote all of dh_{t-1}.
    } else if (heads) {  // no projection with heads, so no carried rows to add
      headwise_recurrent_backward(pw, dv_h.select(0, k), in.w_hh, dh_next, direct);
    } else if (w_hh_t_prepared.defined()) {
      Tensor recurrent = gemm->linear(dv_h.select(0, k), w_hh_t_prepared, std::nullopt);
      dh_next = direct ? dh_next.add_(recurrent) : recurrent;  // direct: the part the step wrote + the GEMM
      if (masked && !direct) dh_next.addcmul_(dh_total.select(0, k), finished.select(0, t));  // finished: carried
    } else if (direct) {
      // The direct part (written by the step) + the recurrent GEMM.
      step_gemm(pw, dv_h.select(0, k), in.w_hh, dh_next, true);
    } else {
      step_gemm(pw, dv_h.select(0, k), in.w_hh, dh_next, false);
      if (masked) dh_next.addcmul_(dh_total.select(0, k), finished.select(0, t));  // finished rows: carried
    }
  };
  walk_back_in_chunks(T, chunk, in.reverse, lo, steps, backward_step, accumulate_weight_gradients);
  return {dx, dh_next, lstm ? dc : none(), dw_ih, dw_hh, db_ih, db_hh, dw_hr, dln_ih, dln_hh, dln_c_w, dln_c_b};
}

}  // namespace fusedrnn
