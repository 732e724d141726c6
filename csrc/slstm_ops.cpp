// The sLSTM operators of the `fusedrnn` library (issue #21): schemas, input checks, CPU and Meta implementations.
//
//   slstm_forward   one xLSTM sLSTM layer in one direction (shapes: fusedrnn/reference_slstm.py, slstm_loop.h)
//   slstm_backward  its gradients, from the saved rows slstm_forward returns
// Autograd is attached in Python (fusedrnn/_extension.py), as for layer_forward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"
#include "slstm_loop.h"

namespace fusedrnn {
namespace {

using at::Tensor;
using c10::SymInt;
using std::optional;

//: Symbolic sizes of one sLSTM call (T steps, N rows, I input features, K heads of d units, H = K * d).
struct SlstmShape {
  SymInt T, N, I, K, d, H;
};

SlstmShape check_slstm(const char* op, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& n0,
                       const Tensor& m0, const optional<Tensor>& w_ih, const Tensor& w_hh) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [T, N, I], got ", x.dim(), "-D");
  TORCH_CHECK_NOT_IMPLEMENTED(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": dtype ",
                              x.scalar_type(), " is not supported (float32, float64; float16 and bfloat16 calls "
                              "are computed in float32 by the caller, as fusedrnn.reference_slstm does)");
  TORCH_CHECK(x.sym_size(0) > 0, op, ": empty sequence (x has shape ", x.sym_sizes(), ")");
  TORCH_CHECK(w_hh.dim() == 3 && w_hh.sym_size(1) == w_hh.sym_size(2) * kSlstmGates, op,
              ": w_hh must be [heads, 4 * head_dim, head_dim], got shape ", w_hh.sym_sizes());
  SlstmShape s{x.sym_size(0), x.sym_size(1), x.sym_size(2), w_hh.sym_size(0), w_hh.sym_size(2),
               w_hh.sym_size(0) * w_hh.sym_size(2)};
  check_tensor(op, "x", x, x, {s.T, s.N, s.I});
  if (w_ih.has_value()) {
    check_tensor(op, "w_ih", *w_ih, x, {s.H * kSlstmGates, s.I});
  } else {
    TORCH_CHECK(s.I == s.H * kSlstmGates, op, ": without w_ih, x must be the gate pre-activations [T, N, 4 * H = ",
                s.H * kSlstmGates, "], got shape ", x.sym_sizes());
  }
  check_tensor(op, "w_hh", w_hh, x, {s.K, s.d * kSlstmGates, s.d});
  check_tensor(op, "h0", h0, x, {s.N, s.H});
  check_tensor(op, "c0", c0, x, {s.N, s.H});
  check_tensor(op, "n0", n0, x, {s.N, s.H});
  check_tensor(op, "m0", m0, x, {s.N, s.H});
  return s;
}

void check_slstm_biases(const char* op, const SlstmShape& s, const Tensor& x, const optional<Tensor>& b_ih,
                        const optional<Tensor>& b_hh) {
  if (b_ih.has_value()) check_tensor(op, "b_ih", *b_ih, x, {s.H * kSlstmGates});
  if (b_hh.has_value()) check_tensor(op, "b_hh", *b_hh, x, {s.H * kSlstmGates});
}

void check_slstm_grads(const char* op, const SlstmShape& s, const Tensor& x, const Tensor& y, const Tensor& saved,
                       const Tensor& grad_y, std::initializer_list<const Tensor*> grad_final) {
  check_tensor(op, "y", y, x, {s.T, s.N, s.H});
  TORCH_CHECK(saved.dim() != 1, op, ": the workspace is empty; differentiating needs slstm_forward(..., "
              "save_workspace=True)");
  check_tensor(op, "workspace", saved, x, {s.T, s.N, s.H * kSlstmSaved});
  check_tensor(op, "grad_y", grad_y, x, {s.T, s.N, s.H});
  for (const Tensor* g : grad_final) check_tensor(op, "a final state's gradient", *g, x, {s.N, s.H});
}

SlstmInputs slstm_inputs(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& n0, const Tensor& m0,
                         const optional<Tensor>& w_ih, const Tensor& w_hh, bool reverse, bool tirex,
                         const optional<Tensor>& lengths) {
  SlstmInputs in;
  in.x = x, in.h0 = h0, in.c0 = c0, in.n0 = n0, in.m0 = m0;
  in.w_ih = w_ih.value_or(Tensor()), in.w_hh = w_hh;
  in.reverse = reverse, in.tirex = tirex;
  in.lengths = lengths.value_or(Tensor());
  return in;
}

using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

constexpr const char* kForward = "fusedrnn.slstm_forward";
constexpr const char* kBackward = "fusedrnn.slstm_backward";

ForwardResult slstm_forward_cpu(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& n0,
                                const Tensor& m0, const optional<Tensor>& w_ih, const Tensor& w_hh,
                                const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, bool reverse, bool tirex,
                                bool save_workspace, const optional<Tensor>& lengths) {
  const SlstmShape s = check_slstm(kForward, x, h0, c0, n0, m0, w_ih, w_hh);
  check_slstm_biases(kForward, s, x, b_ih, b_hh);
  check_lengths(kForward, s.N, x, lengths);
  SlstmInputs in = slstm_inputs(x, h0, c0, n0, m0, w_ih, w_hh, reverse, tirex, lengths);
  in.b_ih = b_ih.value_or(Tensor()), in.b_hh = b_hh.value_or(Tensor());
  in.save = save_workspace;
  const auto r = slstm_forward_loop(in, cpu_pointwise());
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

BackwardResult slstm_backward_cpu(const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                  const Tensor& grad_n_n, const Tensor& grad_m_n, const Tensor& x, const Tensor& h0,
                                  const Tensor& c0, const Tensor& n0, const Tensor& m0, const optional<Tensor>& w_ih,
                                  const Tensor& w_hh, const Tensor& y, const Tensor& saved, bool reverse, bool tirex,
                                  bool has_bias, const optional<Tensor>& lengths) {
  const SlstmShape s = check_slstm(kBackward, x, h0, c0, n0, m0, w_ih, w_hh);
  check_slstm_grads(kBackward, s, x, y, saved, grad_y, {&grad_h_n, &grad_c_n, &grad_n_n, &grad_m_n});
  check_lengths(kBackward, s.N, x, lengths);
  const SlstmInputs in = slstm_inputs(x, h0, c0, n0, m0, w_ih, w_hh, reverse, tirex, lengths);
  const auto g = slstm_backward_loop(in, y, saved, grad_y, {grad_h_n, grad_c_n, grad_n_n, grad_m_n}, has_bias,
                                     cpu_pointwise());
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

// Meta: the same checks, then outputs of the right (possibly symbolic) shapes.

Tensor empty_of(const Tensor& x, std::initializer_list<SymInt> shape) {
  return at::empty_symint(c10::SymIntArrayRef(shape), x.options());
}

ForwardResult slstm_forward_meta(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& n0,
                                 const Tensor& m0, const optional<Tensor>& w_ih, const Tensor& w_hh,
                                 const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, bool /*reverse*/,
                                 bool /*tirex*/, bool save_workspace, const optional<Tensor>& lengths) {
  const SlstmShape s = check_slstm(kForward, x, h0, c0, n0, m0, w_ih, w_hh);
  check_slstm_biases(kForward, s, x, b_ih, b_hh);
  check_lengths(kForward, s.N, x, lengths);
  auto state = [&] { return empty_of(x, {s.N, s.H}); };
  return {empty_of(x, {s.T, s.N, s.H}), state(), state(), state(), state(),
          save_workspace ? empty_of(x, {s.T, s.N, s.H * kSlstmSaved}) : empty_of(x, {0})};
}

BackwardResult slstm_backward_meta(const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                   const Tensor& grad_n_n, const Tensor& grad_m_n, const Tensor& x, const Tensor& h0,
                                   const Tensor& c0, const Tensor& n0, const Tensor& m0, const optional<Tensor>& w_ih,
                                   const Tensor& w_hh, const Tensor& y, const Tensor& saved, bool /*reverse*/,
                                   bool /*tirex*/, bool has_bias, const optional<Tensor>& lengths) {
  const SlstmShape s = check_slstm(kBackward, x, h0, c0, n0, m0, w_ih, w_hh);
  check_slstm_grads(kBackward, s, x, y, saved, grad_y, {&grad_h_n, &grad_c_n, &grad_n_n, &grad_m_n});
  check_lengths(kBackward, s.N, x, lengths);
  auto state = [&] { return empty_of(x, {s.N, s.H}); };
  return {empty_of(x, {s.T, s.N, s.I}),
          state(),
          state(),
          state(),
          state(),
          w_ih.has_value() ? empty_of(x, {s.H * kSlstmGates, s.I}) : empty_of(x, {0}),
          empty_of(x, {s.K, s.d * kSlstmGates, s.d}),
          has_bias ? empty_of(x, {s.H * kSlstmGates}) : empty_of(x, {0})};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fusedrnn, m) {
  m.def(
      "slstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor n0, Tensor m0, Tensor? w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool reverse, bool tirex, bool save_workspace=True, Tensor? lengths=None) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor n_n, Tensor m_n, Tensor workspace)");
  m.def(
      "slstm_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor grad_n_n, Tensor grad_m_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor n0, Tensor m0, Tensor? w_ih, Tensor w_hh, Tensor y, Tensor workspace, "
      "bool reverse, bool tirex, bool has_bias, Tensor? lengths=None) -> "
      "(Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_n0, Tensor grad_m0, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  m.impl("slstm_forward", &slstm_forward_cpu);
  m.impl("slstm_backward", &slstm_backward_cpu);
}

TORCH_LIBRARY_IMPL(fusedrnn, Meta, m) {
  m.impl("slstm_forward", &slstm_forward_meta);
  m.impl("slstm_backward", &slstm_backward_meta);
}

}  // namespace fusedrnn
