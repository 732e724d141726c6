#include "indrnn_host.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "indrnn_plan.h"
#include "loop_views.h"
#include "persistent_plan.h"

namespace fusedrnn::indrnn {
namespace {

using at::Tensor;

//: The CPU test hook (indrnn_host.h): "sequence" runs the kernels' loops on the host, "loop" (or unset) leaves
//: IndRNN to rnn_loop.cpp.
constexpr const char* kCpuEnv = "FUSEDRNN_CPU_INDRNN";
//: (row, unit) pairs per host task: each runs T steps, so a few hundred pairs amortise a task's start.
constexpr int64_t kHostGrain = 256;

//: Read per call (cheap next to a layer), so a test can switch paths within one process.
bool host_sequence_forced() {
  const char* value = std::getenv(kCpuEnv);
  const std::string v = value == nullptr ? "" : value;
  TORCH_CHECK_VALUE(v.empty() || v == "loop" || v == "sequence", "fusedrnn: ", kCpuEnv,
                    " must be loop or sequence, got '", v, "'");
  return v == "sequence";
}

//: Whether FUSEDRNN_CUDA_TUNE asks for the loop path (read on every call, as the persistent path does; malformed: a
//: ValueError, as there).
bool loop_forced() {
  const char* spec = std::getenv(persistent::kTuneEnv);
  if (spec == nullptr) return false;
  try {
    return persistent::parse_tune(spec).path == "loop";
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
  return false;
}

//: The CUDA planner's decision; on CPU tensors the loop unless the test hook asks for this path.
Plan plan_for(const LayerInputs& in) {
  if (in.x.is_cpu() && !host_sequence_forced()) return Plan{Path::Loop, std::string(kCpuEnv) + " is not 'sequence'"};
  PlanInput p;
  p.mode = in.mode;
  p.batch = in.x.size(1);
  p.hidden = is_indrnn(in.mode) ? in.w_hh.size(0) : 0;
  p.force_loop = is_indrnn(in.mode) && loop_forced();
  return plan_layer(p);
}

//: Where the saved activations keep h~ (zoneout), as the per-step loop lays them out; {null, 0} without zoneout.
std::pair<void*, int64_t> h_tilde_of(const LayerInputs& in, const Tensor& saved, int64_t H) {
  const SavedLayout layout = saved_layout(in.mode, H, /*projection=*/false, variants_of(in));
  if (layout.h_tilde < 0 || saved.dim() != 3) return {nullptr, 0};
  return {static_cast<char*>(saved.data_ptr()) + layout.h_tilde * saved.element_size(), layout.width};
}

//: The kernels' work on the host: every (row, unit) through the same loop, in the kernels' accumulate type.
template <bool kForward, class Params>
void run_on_host(const Params& p, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fusedrnn_indrnn_sequence_host", [&] {
    using A = indrnn_accumulate_t<scalar_t>;
    at::parallel_for(0, p.N * p.H, kHostGrain, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        if constexpr (kForward) {
          indrnn_forward_unit<ScalarMath, scalar_t, A>(p, index / p.H, index % p.H);
        } else {
          indrnn_backward_unit<ScalarMath, scalar_t, A>(p, index / p.H, index % p.H);
        }
      }
    });
  });
}

void run(const IndrnnForward& p, const Tensor& like) {
#ifdef FUSEDRNN_WITH_CUDA
  if (like.is_cuda()) return launch_forward(p, like.scalar_type());
#endif
  run_on_host<true>(p, like.scalar_type());
}

void run(const IndrnnBackward& p, const Tensor& like) {
#ifdef FUSEDRNN_WITH_CUDA
  if (like.is_cuda()) return launch_backward(p, like.scalar_type());
#endif
  run_on_host<false>(p, like.scalar_type());
}

}  // namespace

std::optional<std::tuple<Tensor, Tensor, Tensor, Tensor>> forward(const LayerInputs& in) {
  // Every other cell leaves here first, before the planner builds a reason: ops.cpp asks on every layer call.
  if (!is_indrnn(in.mode) || !plan_for(in).sequence()) return std::nullopt;
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2), H = in.w_hh.size(0);
  const auto options = in.x.options();
  // The input projection of every step in one GEMM, with both biases (fold_biases adds b_hh to b_ih).
  const Tensor bias = fold_biases(in).first;
  const Tensor x_rows = in.x.view({T * N, I});
  const Tensor gi = bias.defined() ? at::addmm(bias, x_rows, in.w_ih.t()) : at::mm(x_rows, in.w_ih.t());
  Tensor y = at::empty({T, N, H}, options), h_n = at::empty({N, H}, options);
  const int64_t width = saved_width(in.mode, H, /*projection=*/false, variants_of(in));
  Tensor saved = in.save ? at::empty({T, N, width}, options) : at::empty({0}, options);

  IndrnnForward p{in.mode, T, N, H, in.reverse, lengths_ptr(in.lengths)};
  p.gi = gi.const_data_ptr();
  p.u = in.w_hh.const_data_ptr();
  p.h0 = in.h0.const_data_ptr();
  p.zoneout = in.zoneout_h.defined() ? in.zoneout_h.const_data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.h_n = h_n.data_ptr();
  std::tie(p.h_tilde, p.h_tilde_ld) = h_tilde_of(in, saved, H);
  run(p, in.x);
  return std::make_tuple(y, h_n, at::empty({0}, options), saved);
}

std::optional<std::vector<Tensor>> backward(const LayerInputs& in, const Tensor& y, const Tensor& saved,
                                            const Tensor& grad_y, const Tensor& grad_h_n, bool has_bias) {
  if (!is_indrnn(in.mode) || !plan_for(in).sequence()) return std::nullopt;  // as forward
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2), H = in.w_hh.size(0);
  const auto options = y.options();
  auto none = [&] { return at::empty({0}, options); };  // absent gradients: fresh, so no two outputs alias
  Tensor da = at::empty({T, N, H}, options), dh0 = at::empty({N, H}, options);
  // du per row in the accumulate type, summed over rows below: a fixed-order reduction (no atomics), so du is
  // deterministic run to run, and 16-bit storage sums in fp32 as cuBLAS does for dW_ih.
  const bool double_rows = y.scalar_type() == at::kDouble;  // IndrnnAccumulate: double for double, else float
  Tensor du_rows = at::empty({N, H}, options.dtype(double_rows ? at::kDouble : at::kFloat));

  IndrnnBackward p{in.mode, T, N, H, in.reverse, lengths_ptr(in.lengths)};
  p.u = in.w_hh.const_data_ptr();
  p.h0 = in.h0.const_data_ptr();
  p.y = y.const_data_ptr();
  p.zoneout = in.zoneout_h.defined() ? in.zoneout_h.const_data_ptr() : nullptr;
  void* h_tilde = nullptr;
  std::tie(h_tilde, p.h_tilde_ld) = h_tilde_of(in, saved, H);
  p.h_tilde = h_tilde;
  p.grad_y = grad_y.const_data_ptr();
  p.grad_h_n = grad_h_n.const_data_ptr();
  p.da = da.data_ptr();
  p.dh0 = dh0.data_ptr();
  p.du_rows = du_rows.data_ptr();
  run(p, y);

  // da is the gradient of the input projection and of both biases: the GEMMs over all T*N rows.
  const Tensor rows = da.view({T * N, H});
  Tensor du = du_rows.sum(0).to(y.scalar_type());
  Tensor dw_ih = at::mm(rows.t(), in.x.view({T * N, I}));
  Tensor dx = at::mm(rows, in.w_ih).view({T, N, I});
  Tensor db_ih = has_bias ? rows.sum(0) : none(), db_hh = has_bias ? db_ih.clone() : none();
  return std::vector<Tensor>{dx, dh0, none(), dw_ih, du, db_ih, db_hh, none(), none(), none(), none(), none()};
}

}  // namespace fusedrnn::indrnn
