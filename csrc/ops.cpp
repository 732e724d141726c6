// The operator library `fusedrnn`: schemas, input checks, and the CPU, CUDA and Meta implementations.
//
//   layer_forward   one layer in one direction (shapes: fusedrnn/reference.py)
//   layer_backward  its gradients, from the saved activations layer_forward returns
//   cuda_plan       the persistent CUDA path's planner (persistent_plan.h) on given device numbers, for tests and
//                   tuning: whether a layer would run persistent, with which tiling, or why not
// Autograd is attached in Python (fusedrnn/_extension.py, torch.library.register_autograd), so the ops stay plain
// functional operators that torch.compile traces (shape functions: the Meta implementations below).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <Python.h>

#include <string>

#include "cpu_buffers.h"
#include "indrnn_host.h"
#include "indrnn_plan.h"
#include "op_checks.h"
#include "lstm_cpu_fused.h"
#include "lstm_cpu_fused_plan.h"
#include "persistent_plan.h"
#include "rnn_loop.h"
#ifdef FUSEDRNN_WITH_CUDA
#include "persistent_host.h"
#endif

namespace fusedrnn {
namespace {

using at::Tensor;
using c10::SymInt;
using std::optional;

Mode parse_mode(c10::string_view mode) {
  if (mode == "LSTM") return Mode::LSTM;
  if (mode == "GRU") return Mode::GRU;
  if (mode == "RNN_TANH") return Mode::RNN_TANH;
  if (mode == "RNN_RELU") return Mode::RNN_RELU;
  if (mode == "INDRNN_TANH") return Mode::INDRNN_TANH;
  if (mode == "INDRNN_RELU") return Mode::INDRNN_RELU;
  TORCH_CHECK_VALUE(false, "fusedrnn: unknown mode '", std::string(mode),
                    "'; expected LSTM, GRU, RNN_TANH, RNN_RELU, INDRNN_TANH or INDRNN_RELU");
}

//: Every device (CPU, CUDA, and Meta for the shape functions) runs the same four floating dtypes.
bool dtype_supported(c10::DeviceType /*device*/, c10::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

//: Symbolic sizes of one layer call, so the same checks serve the real and the Meta implementations.
struct Sizes {
  Mode mode;
  SymInt T, N, I, H, P;
  bool projection;
};

Sizes check_layer(const char* op, Mode mode, const Tensor& x, const Tensor& h0, const optional<Tensor>& c0,
                  const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& w_hr) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [T, N, I], got ", x.dim(), "-D");
  TORCH_CHECK_NOT_IMPLEMENTED(dtype_supported(x.device().type(), x.scalar_type()), op, ": dtype ",
                              x.scalar_type(), " is not supported on ", x.device().type(),
                              " (float16, bfloat16, float32, float64)");
  // An empty batch is fine (empty outputs, zero weight gradients, as torch.nn); an empty sequence has no h_n.
  TORCH_CHECK(x.sym_size(0) > 0, op, ": empty sequence (x has shape ", x.sym_sizes(), ")");
  const int64_t G = gates_of(mode);
  if (is_indrnn(mode)) {  // w_hh is the recurrent scale u [H]
    TORCH_CHECK(w_hh.dim() == 1, op, ": IndRNN's w_hh must be the vector u [H], got shape ", w_hh.sym_sizes());
    TORCH_CHECK(!w_hr.has_value(), op, ": w_hr (projection) is only supported for LSTM");
  } else if (w_hh.dim() == 3) {  // multi-head: the blocks [K, G*d, d] of a block-diagonal W_hh (H = K*d)
    TORCH_CHECK(w_hh.sym_size(1) == w_hh.sym_size(2) * G, op, ": multi-head w_hh must be [heads, ", G,
                "*head_dim, head_dim], got shape ", w_hh.sym_sizes());
    TORCH_CHECK(!w_hr.has_value(), op, ": w_hr (projection) is not defined with heads");
    TORCH_CHECK_NOT_IMPLEMENTED(x.device().type() != c10::kCUDA, op, ": multi-head layers have CPU kernels only");
  } else {
    TORCH_CHECK(w_hh.dim() == 2 && w_hh.sym_size(0) % G == 0, op, ": w_hh must be [", G, "*H, P], got shape ",
                w_hh.sym_sizes());
  }
  const bool heads = w_hh.dim() == 3;
  const SymInt H = heads ? w_hh.sym_size(0) * w_hh.sym_size(2) : w_hh.sym_size(0) / G;
  Sizes s{mode, x.sym_size(0), x.sym_size(1), x.sym_size(2), H, is_indrnn(mode) || heads ? H : w_hh.sym_size(1),
          w_hr.has_value()};
  check_tensor(op, "x", x, x, {s.T, s.N, s.I});
  check_tensor(op, "w_ih", w_ih, x, {s.H * G, s.I});
  if (is_indrnn(mode)) {
    check_tensor(op, "w_hh", w_hh, x, {s.H});
  } else if (heads) {
    check_tensor(op, "w_hh", w_hh, x, {w_hh.sym_size(0), w_hh.sym_size(1), w_hh.sym_size(2)});
  } else {
    check_tensor(op, "w_hh", w_hh, x, {s.H * G, s.P});
  }
  check_tensor(op, "h0", h0, x, {s.N, s.P});
  if (w_hr.has_value()) {
    TORCH_CHECK(mode == Mode::LSTM, op, ": w_hr (projection) is only supported for LSTM");
    check_tensor(op, "w_hr", *w_hr, x, {s.P, s.H});
  } else if (!is_indrnn(mode)) {
    TORCH_CHECK(s.P == s.H, op, ": w_hh must be [G*H, H] without a projection, got shape ", w_hh.sym_sizes());
  }
  TORCH_CHECK(c0.has_value() == (mode == Mode::LSTM), op, ": c0 must be given for LSTM and only for LSTM");
  if (c0.has_value()) check_tensor(op, "c0", *c0, x, {s.N, s.H});
  return s;
}

void check_biases(const char* op, const Sizes& s, const Tensor& x, const optional<Tensor>& b_ih,
                  const optional<Tensor>& b_hh) {
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), op, ": give both b_ih and b_hh or neither");
  if (b_ih.has_value()) {
    check_tensor(op, "b_ih", *b_ih, x, {s.H * gates_of(s.mode)});
    check_tensor(op, "b_hh", *b_hh, x, {s.H * gates_of(s.mode)});
  }
}

//: The variants' optional inputs (fusedrnn/reference.py): layer-norm gains and zoneout masks.
struct VariantArgs {
  optional<Tensor> ln_ih, ln_hh, ln_c_weight, ln_c_bias, zoneout_h, zoneout_c;
  Variants flags() const { return {ln_ih.has_value(), zoneout_h.has_value(), zoneout_c.has_value()}; }
  bool any() const { return ln_ih || ln_hh || ln_c_weight || ln_c_bias || zoneout_h || zoneout_c; }
};

void check_variants(const char* op, const Sizes& s, const Tensor& x, const VariantArgs& v) {
  const bool lstm = s.mode == Mode::LSTM;
  TORCH_CHECK(v.ln_ih.has_value() == v.ln_hh.has_value(), op, ": give both ln_ih and ln_hh or neither");
  if (v.ln_ih.has_value()) {
    TORCH_CHECK(lstm || s.mode == Mode::GRU, op, ": layer norm is defined for LSTM and GRU only");
    TORCH_CHECK(!s.projection, op, ": layer norm with a projection (w_hr) is not defined");
    check_tensor(op, "ln_ih", *v.ln_ih, x, {s.H * gates_of(s.mode)});
    check_tensor(op, "ln_hh", *v.ln_hh, x, {s.H * gates_of(s.mode)});
    TORCH_CHECK(v.ln_c_weight.has_value() == lstm, op, ": ln_c_weight must be given for LSTM and only for LSTM");
  }
  TORCH_CHECK(v.ln_ih.has_value() || !(v.ln_c_weight || v.ln_c_bias), op, ": ln_c_weight/ln_c_bias need ln_ih");
  TORCH_CHECK(!v.ln_c_bias.has_value() || v.ln_c_weight.has_value(), op, ": ln_c_bias needs ln_c_weight");
  if (v.ln_c_weight.has_value()) check_tensor(op, "ln_c_weight", *v.ln_c_weight, x, {s.H});
  if (v.ln_c_bias.has_value()) check_tensor(op, "ln_c_bias", *v.ln_c_bias, x, {s.H});
  TORCH_CHECK(!v.zoneout_c.has_value() || (lstm && v.zoneout_h.has_value()), op,
              ": zoneout_c needs an LSTM and zoneout_h");
  TORCH_CHECK(!(v.zoneout_h.has_value() && s.projection), op, ": zoneout with a projection (w_hr) is not defined");
  if (v.zoneout_h.has_value()) check_tensor(op, "zoneout_h", *v.zoneout_h, x, {s.T, s.N, s.H});
  if (v.zoneout_c.has_value()) check_tensor(op, "zoneout_c", *v.zoneout_c, x, {s.T, s.N, s.H});
  // CUDA: every variant runs, so no device check here: IndRNN (with or without zoneout) on its whole-sequence kernel
  // (indrnn_plan.h), the others on the C++ loop with the per-step kernel (pointwise_cuda.cu; persistent_host.cpp
  // sends them there).
}

//: Shapes of the gradients given to layer_backward (the Python autograd wrapper makes them contiguous).
void check_grads(const char* op, const Sizes& s, const Tensor& x, const Tensor& y, const Tensor& saved,
                 const Tensor& grad_y, const Tensor& grad_h_n, const optional<Tensor>& grad_c_n, Variants v) {
  check_tensor(op, "y", y, x, {s.T, s.N, s.P});
  TORCH_CHECK(saved.dim() != 1, op, ": the workspace is empty; differentiating needs layer_forward(..., "
              "save_workspace=True)");
  check_tensor(op, "workspace", saved, x, {s.T, s.N, saved_width(s.mode, s.H, s.projection, v)});
  check_tensor(op, "grad_y", grad_y, x, {s.T, s.N, s.P});
  check_tensor(op, "grad_h_n", grad_h_n, x, {s.N, s.P});
  if (grad_c_n.has_value()) {
    TORCH_CHECK(s.mode == Mode::LSTM, op, ": grad_c_n is only meaningful for LSTM");
    check_tensor(op, "grad_c_n", *grad_c_n, x, {s.N, s.H});
  }
}

LayerInputs inputs_of(Mode mode, const Tensor& x, const Tensor& h0, const optional<Tensor>& c0, const Tensor& w_ih,
                      const Tensor& w_hh, const optional<Tensor>& b_ih, const optional<Tensor>& b_hh,
                      const optional<Tensor>& w_hr, bool reverse, const VariantArgs& v) {
  LayerInputs in{mode, x, h0, c0.value_or(Tensor()), w_ih, w_hh, b_ih, b_hh, w_hr, reverse};
  in.ln_ih = v.ln_ih.value_or(Tensor()), in.ln_hh = v.ln_hh.value_or(Tensor());
  in.ln_c_w = v.ln_c_weight.value_or(Tensor()), in.ln_c_b = v.ln_c_bias.value_or(Tensor());
  in.zoneout_h = v.zoneout_h.value_or(Tensor()), in.zoneout_c = v.zoneout_c.value_or(Tensor());
  return in;
}

using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using BackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                  Tensor, Tensor>;

#define FUSEDRNN_VARIANT_PARAMS                                                                                  \
  const optional<Tensor>&ln_ih, const optional<Tensor>&ln_hh, const optional<Tensor>&ln_c_weight,               \
      const optional<Tensor>&ln_c_bias, const optional<Tensor>&zoneout_h, const optional<Tensor>&zoneout_c
#define FUSEDRNN_VARIANT_ARGS \
  VariantArgs { ln_ih, ln_hh, ln_c_weight, ln_c_bias, zoneout_h, zoneout_c }

//: The real implementation on a device whose pointwise pass `get_pointwise` returns.
template <const Pointwise& (*get_pointwise)()>
ForwardResult layer_forward(c10::string_view mode_name, const Tensor& x, const Tensor& h0, const optional<Tensor>& c0,
                            const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
                            const optional<Tensor>& b_hh, const optional<Tensor>& w_hr, bool reverse,
                            bool save_workspace, const optional<Tensor>& lengths, FUSEDRNN_VARIANT_PARAMS) {
  const Mode mode = parse_mode(mode_name);
  const Sizes s = check_layer("fusedrnn.layer_forward", mode, x, h0, c0, w_ih, w_hh, w_hr);
  check_biases("fusedrnn.layer_forward", s, x, b_ih, b_hh);
  check_lengths("fusedrnn.layer_forward", s.N, x, lengths);
  const VariantArgs variants = FUSEDRNN_VARIANT_ARGS;
  check_variants("fusedrnn.layer_forward", s, x, variants);
  c10::OptionalDeviceGuard guard(x.device());
  LayerInputs in = inputs_of(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, variants);
  in.save = save_workspace;
  in.lengths = lengths.value_or(Tensor());
#ifdef FUSEDRNN_WITH_CUDA
  if (x.is_cuda()) {
    if (auto result = persistent::forward(in)) return *result;  // empty where the planner refuses
    if (auto result = indrnn::forward(in)) return *result;      // IndRNN: one launch for the whole sequence
  }
#endif
  if (x.is_cpu()) {
    if (auto result = fused_lstm_forward(in)) return *result;  // empty where the planner refuses
    if (auto result = indrnn::forward(in)) return *result;     // only under FUSEDRNN_CPU_INDRNN=sequence (tests)
  }
  return forward_loop(in, get_pointwise());
}

template <const Pointwise& (*get_pointwise)()>
BackwardResult layer_backward(c10::string_view mode_name, const Tensor& grad_y, const Tensor& grad_h_n,
                              const optional<Tensor>& grad_c_n, const Tensor& x, const Tensor& h0,
                              const optional<Tensor>& c0, const Tensor& w_ih, const Tensor& w_hh,
                              const optional<Tensor>& w_hr, const Tensor& y, const Tensor& saved, bool reverse,
                              bool has_bias, const optional<Tensor>& lengths, FUSEDRNN_VARIANT_PARAMS) {
  const Mode mode = parse_mode(mode_name);
  const Sizes s = check_layer("fusedrnn.layer_backward", mode, x, h0, c0, w_ih, w_hh, w_hr);
  const VariantArgs variants = FUSEDRNN_VARIANT_ARGS;
  check_variants("fusedrnn.layer_backward", s, x, variants);
  check_grads("fusedrnn.layer_backward", s, x, y, saved, grad_y, grad_h_n, grad_c_n, variants.flags());
  check_lengths("fusedrnn.layer_backward", s.N, x, lengths);
  c10::OptionalDeviceGuard guard(x.device());
  auto in = inputs_of(mode, x, h0, c0, w_ih, w_hh, std::nullopt, std::nullopt, w_hr, reverse, variants);
  in.lengths = lengths.value_or(Tensor());
  std::optional<std::vector<Tensor>> kernel_grads;
#ifdef FUSEDRNN_WITH_CUDA
  if (x.is_cuda()) {  // empty where the planners refuse
    kernel_grads = persistent::backward(in, y, saved, grad_y, grad_h_n, grad_c_n, has_bias);
    if (!kernel_grads) kernel_grads = indrnn::backward(in, y, saved, grad_y, grad_h_n, has_bias);
  }
#endif
  if (x.is_cpu()) {  // empty where the planner refuses
    kernel_grads = fused_lstm_backward(in, y, saved, grad_y, grad_h_n, grad_c_n.value_or(Tensor()), has_bias);
    if (!kernel_grads) kernel_grads = indrnn::backward(in, y, saved, grad_y, grad_h_n, has_bias);  // as forward
  }
  auto g = kernel_grads ? *kernel_grads
                        : backward_loop(in, y, saved, grad_y, grad_h_n, grad_c_n.value_or(Tensor()), has_bias,
                                        get_pointwise());
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11]};
}

//: The planner on explicit device numbers (no GPU needed): (path, tiling, reason): path "persistent", "step" or
//: "loop" (persistent_plan.h: plan_layer), the tiling as "key=value,..." (empty on the loop path), and why the faster
//: paths were refused (empty when persistent). tune: a FUSEDRNN_CUDA_TUNE string.
std::tuple<std::string, std::string, std::string> cuda_plan(c10::string_view mode_name, int64_t batch,
                                                            int64_t hidden, bool projection, int64_t element_size,
                                                            bool backward, int64_t sm_count, int64_t smem_per_block,
                                                            int64_t blocks_per_sm, int64_t max_cluster,
                                                            c10::string_view tune) {
  TORCH_CHECK_VALUE(element_size == 2 || element_size == 4 || element_size == 8,
                    "fusedrnn.cuda_plan: element_size must be 2, 4 or 8, got ", element_size);
  persistent::PlanInput in;
  in.gates = gates_of(parse_mode(mode_name));
  in.batch = batch, in.hidden = hidden, in.projection = projection;
  in.element_size = static_cast<int>(element_size);
  in.direction = backward ? persistent::Direction::Backward : persistent::Direction::Forward;
  in.sm_count = static_cast<int>(sm_count), in.smem_per_block = smem_per_block;
  in.blocks_per_sm = static_cast<int>(blocks_per_sm);
  in.max_cluster = static_cast<int>(max_cluster);
  persistent::Tune parsed;
  try {
    parsed = persistent::parse_tune(std::string(tune));
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
  const persistent::Plan p = persistent::plan_layer(in, parsed);
  return {persistent::path_name(p.path), p.path == persistent::Path::Loop ? "" : persistent::describe(p), p.reason};
}

//: The whole-sequence IndRNN planner (indrnn_plan.h) for a call of these sizes: (path, reason): path "sequence" or
//: "loop", why the sequence kernel was refused (empty when it runs). tune: a FUSEDRNN_CUDA_TUNE string (path=loop).
std::tuple<std::string, std::string> cuda_indrnn_plan(c10::string_view mode_name, int64_t batch, int64_t hidden,
                                                      c10::string_view tune) {
  indrnn::PlanInput in;
  in.mode = parse_mode(mode_name);
  in.batch = batch, in.hidden = hidden;
  try {
    in.force_loop = persistent::parse_tune(std::string(tune)).path == "loop";
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
  const indrnn::Plan p = indrnn::plan_layer(in);
  return {indrnn::path_name(p.path), p.reason};
}

//: The CPU fused LSTM's planner (lstm_cpu_fused_plan.h) for a call of these sizes on this CPU: (path, reason,
//: threads, split, input): path "fused" or "loop", why the fused kernel was refused (empty when fused), its threads,
//: how a step is split among them ("units", "dynamic" or "rows"), where the LSTM forward's input projection runs
//: ("gemm" or "step"). threads < 0: what a call here would get (torch's thread count, 1 inside a parallel region);
//: force, split and input: as FUSEDRNN_CPU_LSTM, FUSEDRNN_CPU_LSTM_SPLIT and FUSEDRNN_CPU_LSTM_INPUT ("" or "auto":
//: the planner's rule); backward: the backward's plan; input_size < 0: the hidden size.
std::tuple<std::string, std::string, int64_t, std::string, std::string> cpu_fused_plan(
    c10::string_view mode_name, int64_t batch, int64_t hidden, c10::ScalarType dtype, bool projection, bool variants,
    int64_t threads, c10::string_view force, bool backward, c10::string_view split, c10::string_view input,
    int64_t input_size) {
  namespace cf = cpu_fused;
  const cf::Plan p = cf::plan_layer(cf::plan_input(parse_mode(mode_name), dtype, projection, variants, batch, hidden,
                                                   input_size < 0 ? hidden : input_size,
                                                   threads < 0 ? cf::available_threads() : static_cast<int>(threads),
                                                   cf::parse_force(std::string(force)), backward,
                                                   cf::parse_force_split(std::string(split)),
                                                   cf::parse_force_input(std::string(input))));
  return {cf::path_name(p.path), p.reason, p.threads, cf::split_name(p.split), cf::input_name(p.input)};
}

// Meta: the same checks, then outputs of the right (possibly symbolic) shapes.

Tensor empty_like_shape(const Tensor& x, std::initializer_list<SymInt> shape) {
  return at::empty_symint(c10::SymIntArrayRef(shape), x.options());
}

ForwardResult layer_forward_meta(c10::string_view mode_name, const Tensor& x, const Tensor& h0,
                                 const optional<Tensor>& c0, const Tensor& w_ih, const Tensor& w_hh,
                                 const optional<Tensor>& b_ih, const optional<Tensor>& b_hh,
                                 const optional<Tensor>& w_hr, bool reverse, bool save_workspace,
                                 const optional<Tensor>& lengths, FUSEDRNN_VARIANT_PARAMS) {
  const Mode mode = parse_mode(mode_name);
  const Sizes s = check_layer("fusedrnn.layer_forward", mode, x, h0, c0, w_ih, w_hh, w_hr);
  check_biases("fusedrnn.layer_forward", s, x, b_ih, b_hh);
  check_lengths("fusedrnn.layer_forward", s.N, x, lengths);
  const VariantArgs variants = FUSEDRNN_VARIANT_ARGS;
  check_variants("fusedrnn.layer_forward", s, x, variants);
  return {empty_like_shape(x, {s.T, s.N, s.P}), empty_like_shape(x, {s.N, s.P}),
          mode == Mode::LSTM ? empty_like_shape(x, {s.N, s.H}) : empty_like_shape(x, {0}),
          save_workspace ? empty_like_shape(x, {s.T, s.N, saved_width(mode, s.H, s.projection, variants.flags())})
                         : empty_like_shape(x, {0})};
}

BackwardResult layer_backward_meta(c10::string_view mode_name, const Tensor& grad_y, const Tensor& grad_h_n,
                                   const optional<Tensor>& grad_c_n, const Tensor& x, const Tensor& h0,
                                   const optional<Tensor>& c0, const Tensor& w_ih, const Tensor& w_hh,
                                   const optional<Tensor>& w_hr, const Tensor& y, const Tensor& saved, bool reverse,
                                   bool has_bias, const optional<Tensor>& lengths, FUSEDRNN_VARIANT_PARAMS) {
  const Mode mode = parse_mode(mode_name);
  const Sizes s = check_layer("fusedrnn.layer_backward", mode, x, h0, c0, w_ih, w_hh, w_hr);
  const VariantArgs variants = FUSEDRNN_VARIANT_ARGS;
  check_variants("fusedrnn.layer_backward", s, x, variants);
  check_grads("fusedrnn.layer_backward", s, x, y, saved, grad_y, grad_h_n, grad_c_n, variants.flags());
  check_lengths("fusedrnn.layer_backward", s.N, x, lengths);
  const int64_t G = gates_of(mode);
  auto none = [&] { return empty_like_shape(x, {0}); };
  const bool norm = variants.ln_ih.has_value(), norm_lstm = norm && mode == Mode::LSTM;
  return {empty_like_shape(x, {s.T, s.N, s.I}),
          empty_like_shape(x, {s.N, s.P}),
          mode == Mode::LSTM ? empty_like_shape(x, {s.N, s.H}) : none(),
          empty_like_shape(x, {s.H * G, s.I}),
          at::empty_like(w_hh),  // u [H], [G*H, P], or the heads' blocks
          has_bias ? empty_like_shape(x, {s.H * G}) : none(),
          has_bias ? empty_like_shape(x, {s.H * G}) : none(),
          s.projection ? empty_like_shape(x, {s.P, s.H}) : none(),
          norm ? empty_like_shape(x, {s.H * G}) : none(),
          norm ? empty_like_shape(x, {s.H * G}) : none(),
          norm_lstm ? empty_like_shape(x, {s.H}) : none(),
          norm_lstm && variants.ln_c_bias.has_value() ? empty_like_shape(x, {s.H}) : none()};
}

}  // namespace

TORCH_LIBRARY(fusedrnn, m) {
  m.def(
      "layer_forward(str mode, Tensor x, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, bool reverse, bool save_workspace=True, Tensor? lengths=None, "
      "Tensor? ln_ih=None, Tensor? ln_hh=None, Tensor? ln_c_weight=None, Tensor? ln_c_bias=None, "
      "Tensor? zoneout_h=None, Tensor? zoneout_c=None) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor workspace)");
  m.def(
      "layer_backward(str mode, Tensor grad_y, Tensor grad_h_n, Tensor? grad_c_n, Tensor x, Tensor h0, Tensor? c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor y, Tensor workspace, bool reverse, bool has_bias, "
      "Tensor? lengths=None, Tensor? ln_ih=None, Tensor? ln_hh=None, Tensor? ln_c_weight=None, "
      "Tensor? ln_c_bias=None, Tensor? zoneout_h=None, Tensor? zoneout_c=None) -> "
      "(Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, "
      "Tensor grad_b_hh, Tensor grad_w_hr, Tensor grad_ln_ih, Tensor grad_ln_hh, Tensor grad_ln_c_weight, "
      "Tensor grad_ln_c_bias)");
  m.def(
      "cuda_plan(str mode, int batch, int hidden, bool projection, int element_size, bool backward, int sm_count, "
      "int smem_per_block, int blocks_per_sm=-1, int max_cluster=0, str tune='') -> (str path, str tiling, str reason)",
      &cuda_plan);
  m.def("cuda_indrnn_plan(str mode, int batch, int hidden, str tune='') -> (str path, str reason)",
        &cuda_indrnn_plan);
  m.def(
      "cpu_fused_plan(str mode, int batch, int hidden, ScalarType dtype, bool projection=False, bool variants=False, "
      "int threads=-1, str force='', bool backward=False, str split='', str input='', int input_size=-1) -> "
      "(str path, str reason, int threads, str split, str input)",
      &cpu_fused_plan);
  m.def("cpu_capability() -> str", [] { return std::string(cpu_pointwise_capability()); });
  m.def("cpu_kept_buffer_bytes() -> int", &kept_buffer_bytes);
  m.def("cpu_release_kept_buffers() -> int", &release_kept_buffers);
  // Deferred barrier checks of the persistent CUDA kernels (persistent_host.h); no-ops in a build without CUDA.
  m.def("cuda_defer_barrier_checks() -> ()", [] {
#ifdef FUSEDRNN_WITH_CUDA
    persistent::defer_barrier_checks();
#endif
  });
  m.def("cuda_flush_barrier_checks(bool check) -> ()", [](bool check) {
#ifdef FUSEDRNN_WITH_CUDA
    persistent::flush_barrier_checks(check);
#else
    (void)check;
#endif
  });
}

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  m.impl("layer_forward", &layer_forward<&cpu_pointwise>);
  m.impl("layer_backward", &layer_backward<&cpu_pointwise>);
}

#ifdef FUSEDRNN_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
  m.impl("layer_forward", &layer_forward<&cuda_pointwise>);
  m.impl("layer_backward", &layer_backward<&cuda_pointwise>);
}
#endif

TORCH_LIBRARY_IMPL(fusedrnn, Meta, m) {
  m.impl("layer_forward", &layer_forward_meta);
  m.impl("layer_backward", &layer_backward_meta);
}

}  // namespace fusedrnn

// `import fusedrnn._C` only needs to load this library (the TORCH_LIBRARY blocks above register the ops); the
// Python module itself is empty. (Python asks the dispatcher whether CUDA kernels were compiled in.)
static PyModuleDef fusedrnn_module = {PyModuleDef_HEAD_INIT, "_C", "fusedrnn's compiled operators: torch.ops.fusedrnn",
                                      -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&fusedrnn_module);
}
