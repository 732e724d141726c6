// The fused LSTM's and GRU's host side (lstm_cpu_fused.h): the planner's inputs; forward: the input projection (one
// GEMM per chunk of steps, as rnn_loop.cpp does) and one OpenMP region per chunk, in which each thread packs its W_hh
// panels (first chunk) and runs its slice of every step; backward: one region for the recurrence, then the weight
// and input gradients as whole-sequence GEMMs.
#include "lstm_cpu_fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>

#include "cpu_buffers.h"
#include "loop_views.h"
#include "lstm_cpu_fused_plan.h"
#include "pointwise.h"
#include "rnn_loop.h"

namespace fusedrnn {
namespace {

using at::Tensor;

//: The environment variable that forces a path: "fused", "loop", or unset / "auto" (the planner's rule).
constexpr const char* kForceEnv = "FUSEDRNN_CPU_LSTM";
//: The one that forces where the fused LSTM forward's input projection runs: "gemm", "step", or unset / "auto".
constexpr const char* kForceInputEnv = "FUSEDRNN_CPU_LSTM_INPUT";
//: The one that forces the fused kernel's split: "units", "dynamic", "rows", or unset / "auto" (the planner's rule).
constexpr const char* kForceSplitEnv = "FUSEDRNN_CPU_LSTM_SPLIT";

//: An environment variable's value, "" where it is unset.
std::string env_value(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

//: The choice `value` names for the variable `env`: "" or "auto" is `automatic`, otherwise one of `choices`' names;
//: anything else is an error listing them ("must be auto, a, b or c").
template <class Choice>
Choice parse_choice(const char* env, const std::string& value, Choice automatic,
                    std::initializer_list<std::pair<const char*, Choice>> choices) {
  if (value.empty() || value == "auto") return automatic;
  std::string names = "auto";
  size_t index = 0;
  for (const auto& [name, choice] : choices) {
    if (value == name) return choice;
    names += (++index == choices.size() ? " or " : ", ") + std::string(name);
  }
  TORCH_CHECK_VALUE(false, "fusedrnn: ", env, " must be ", names, ", got '", value, "'");
}

}  // namespace

namespace cpu_fused {

Force parse_force(const std::string& value) {
  return parse_choice(kForceEnv, value, Force::Auto, {{"fused", Force::Fused}, {"loop", Force::Loop}});
}

//: Read per call (cheap next to a layer), so a test or benchmark can switch paths within one process.
Force forced_path() {
  return parse_force(env_value(kForceEnv));
}

ForceSplit parse_force_split(const std::string& value) {
  return parse_choice(kForceSplitEnv, value, ForceSplit::Auto,
                      {{"units", ForceSplit::Units}, {"dynamic", ForceSplit::Dynamic}, {"rows", ForceSplit::Rows}});
}

ForceSplit forced_split() {
  return parse_force_split(env_value(kForceSplitEnv));
}

ForceInput parse_force_input(const std::string& value) {
  return parse_choice(kForceInputEnv, value, ForceInput::Auto,
                      {{"gemm", ForceInput::Gemm}, {"step", ForceInput::Step}});
}

ForceInput forced_input() {
  return parse_force_input(env_value(kForceInputEnv));
}

int available_threads() {
  return at::in_parallel_region() ? 1 : at::get_num_threads();
}

PlanInput plan_input(Mode mode, c10::ScalarType dtype, bool projection, bool variants, int64_t batch, int64_t hidden,
                     int64_t input_size, int threads, Force force, bool backward, ForceSplit force_split,
                     ForceInput force_input) {
  PlanInput p;
  p.input_size = input_size;
  p.mode = mode, p.projection = projection, p.variants = variants, p.force_input = force_input;
  p.float32 = dtype == at::kFloat, p.bfloat16 = dtype == at::kBFloat16;
  p.batch = batch, p.hidden = hidden, p.threads = threads, p.force = force;
  p.backward = backward, p.force_split = force_split;
  p.capability = cpu_pointwise_capability();
  // The bfloat16 kernel is AVX-512 code: it runs where the AVX-512 variant is selected (not under a forced
  // ATEN_CPU_CAPABILITY=avx2 or default) and the CPU has AVX512-BF16.
  p.bf16_kernel = p.capability == "AVX512" && cpu_fused_lstm_bf16_kernel() != nullptr;
  p.panel_units = cpu_fused_lstm_kernel().lstm.panel_units;
  return p;
}

}  // namespace cpu_fused

namespace {

//: Runs body(thread, count, barrier) on `threads` threads in one OpenMP region (the runtime may grant fewer: every
//: split is by `count`), or on the calling thread alone.
template <class Body>
void run_region(int threads, const Body& body) {
  SpinBarrier barrier;
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    body(omp_get_thread_num(), omp_get_num_threads(), barrier);
    return;
  }
#endif
  body(0, 1, barrier);
}

//: Runs one chunk, each thread packing a share of the panels first when `pack` (W_hh's, and W_ih's where the step
//: computes the input projection): split by units, the panels it then reads, so no thread reads a panel another one
//: packs; split by rows, every thread reads every panel, and dynamically any thread may claim any panel, so a
//: barrier follows the packing.
template <class S>
void run_chunk(const FusedForwardOf<S>& kernel, const FusedLstmArgsOf<S>& args, int threads, const S* w_hh,
               const S* w_ih, bool pack) {
  const int64_t panels = blocks_of(args.H, kernel.panel_units);
  run_region(threads, [&](int thread, int count, SpinBarrier& barrier) {
    if (pack) {
      const int64_t first = panels * thread / count, last = panels * (thread + 1) / count;
      kernel.pack(w_hh, args.H, args.H, first, last, const_cast<S*>(args.packed));
      if (args.input_in_step) kernel.pack(w_ih, args.I, args.H, first, last, const_cast<S*>(args.packed_x));
      if (args.split != Split::Units) barrier.wait(count);
    }
    kernel.run_thread(args, thread, count, barrier);
  });
}

//: The plan for `in` on this CPU, or none (the loop) where it declines; forced, an LSTM or GRU the kernels cannot run
//: is an error (a test or benchmark would measure the wrong path), except a backward they do not have (bfloat16: the
//: loop's runs on the fused forward's activations); the other cells are not this variable's business.
std::optional<cpu_fused::Plan> fused_plan(const LayerInputs& in, bool backward) {
  using namespace cpu_fused;
  const bool heads = in.w_hh.dim() == 3;  // [heads, 4d, d]
  const int64_t N = in.x.size(1), H = heads ? in.w_hh.size(0) * in.w_hh.size(2) : in.w_hh.size(0) / gates_of(in.mode);
  const Variants v = variants_of(in);
  const Force force = forced_path();
  PlanInput request = plan_input(in.mode, in.x.scalar_type(), in.w_hr.has_value(), v.norm || v.zoneout_h || v.zoneout_c,
                                 N, H, in.x.size(2), available_threads(), force, backward, forced_split(),
                                 forced_input());
  request.heads = heads;
  const Plan plan = plan_layer(request);
  if (plan.path == Path::Fused) return plan;
  const bool empty = N == 0 || H == 0;  // nothing to compute: the loop's empty outputs, forced or not
  const bool fused_cell = in.mode == Mode::LSTM || in.mode == Mode::GRU;
  const bool forward_only = backward && in.x.scalar_type() == at::kBFloat16;
  TORCH_CHECK(force != Force::Fused || !fused_cell || empty || forward_only, "fusedrnn: ", kForceEnv, "=fused, but ",
              plan.reason);
  return std::nullopt;
}

}  // namespace

namespace {

//: The fused forward of an LSTM or a GRU in storage dtype S with `kernel` (FusedLstmKernel's lstm or gru for float,
//: FusedLstmBf16Kernel's for bfloat16).
template <class S>
std::tuple<Tensor, Tensor, Tensor, Tensor> run_forward(const LayerInputs& in, const cpu_fused::Plan& plan,
                                                       const FusedForwardOf<S>& kernel) {
  const bool lstm = in.mode == Mode::LSTM;
  const bool input_in_step = plan.input == cpu_fused::InputProjection::Step;
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const int64_t GH = in.w_hh.size(0), H = GH / gates_of(in.mode);
  const auto options = in.x.options();
  const Tensor w_hh = in.w_hh.contiguous(), w_ih = input_in_step ? in.w_ih.contiguous() : Tensor();
  const Tensor x = input_in_step ? in.x.contiguous() : Tensor();
  const Tensor packed = recycled_empty({kernel.packed_size(H, H)}, options);  // fresh: ~1 ms of page faults at H=512
  const Tensor packed_x = input_in_step ? recycled_empty({kernel.packed_size(I, H)}, options) : Tensor();
  const auto [bias, b_hn] = fold_biases(in);  // b_hn: GRU's (zeros without bias), undefined for the LSTM
  Tensor y = recycled_empty({T, N, H}, options);
  // The LSTM's cell state stays float32.
  Tensor c = lstm ? in.c0.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true) : Tensor();
  // Recycled: into fresh memory the recurrence took half as long again (cpu_buffers.h).
  const int64_t saved_columns = lstm ? kLstmSaved : kGruSaved;
  Tensor saved = in.save ? recycled_empty({T, N, saved_columns * H}, options) : at::empty({0}, options);

  FusedLstmArgsOf<S> args;
  args.T = T, args.N = N, args.H = H, args.I = I, args.reverse = in.reverse;
  args.packed = packed.const_data_ptr<S>();
  args.h0 = in.h0.const_data_ptr<S>();
  args.y = y.mutable_data_ptr<S>();
  args.c = lstm ? c.mutable_data_ptr<float>() : nullptr;
  args.b_hn = lstm ? nullptr : b_hn.const_data_ptr<S>();
  args.saved = in.save ? saved.mutable_data_ptr<S>() : nullptr;
  args.lengths = in.lengths.defined() ? in.lengths.const_data_ptr<int64_t>() : nullptr;
  args.split = plan.split;
  BlockClaims claims(plan.threads);
  args.claims = &claims;
  const S* w_ih_data = input_in_step ? w_ih.const_data_ptr<S>() : nullptr;
  if (input_in_step) {
    // One region for the sequence: each step adds x_t W_ih^T to its tiles and the folded biases in the epilogue.
    const Tensor folded = bias.defined() ? bias : at::zeros({GH}, options);
    args.input_in_step = true;
    args.x = x.const_data_ptr<S>(), args.packed_x = packed_x.const_data_ptr<S>();
    args.gi = folded.const_data_ptr<S>();
    args.first = 0, args.steps = T;
    run_chunk(kernel, args, plan.threads, w_hh.const_data_ptr<S>(), w_ih_data, /*pack=*/true);
  } else {
    // The input projection x W_ih^T + bias per chunk of steps: cpu_pointwise's rows per GEMM, as the loop, and as
    // the loop on oneDNN where the CPU backend has that path, W_ih reordered once for several chunks (2-core AMD
    // EPYC, fp32: [6400, 512] x [512, 2048] 81 ms against addmm's 98; [400, ...], one chunk, 4.4 on the plain W_ih
    // against 5.8).
    const int64_t chunk = chunk_steps(cpu_pointwise(), T, N);
    const PreparedGemm* gemm = prepared_gemm(cpu_pointwise(), T);
    const Tensor w_ih_prepared = prepare(gemm, in.w_ih, chunk * N, chunks_of(T, chunk));
    Tensor gi = w_ih_prepared.defined() ? Tensor() : at::empty({chunk, N, GH}, options);
    for (int64_t first = 0; first < T; first += chunk) {
      const int64_t steps = std::min(chunk, T - first);
      args.first = first, args.steps = steps;
      args.gi_first_t = in.reverse ? T - first - steps : first;
      const Tensor x_chunk = in.x.narrow(0, args.gi_first_t, steps).view({steps * N, I});
      if (w_ih_prepared.defined()) {
        gi = Tensor();  // the last chunk's buffer released first, so that malloc can hand it out again
        gi = gemm->linear(x_chunk, w_ih_prepared, bias.defined() ? std::optional<Tensor>(bias) : std::nullopt)
                 .contiguous();
      } else {
        Tensor out = gi.narrow(0, 0, steps).view({steps * N, GH});
        if (bias.defined()) {
          at::addmm_out(out, bias, x_chunk, in.w_ih.t());
        } else {
          at::mm_out(out, x_chunk, in.w_ih.t());
        }
      }
      args.gi = gi.const_data_ptr<S>();
      run_chunk(kernel, args, plan.threads, w_hh.const_data_ptr<S>(), w_ih_data, first == 0);
    }
  }
  Tensor h_n = y.select(0, in.reverse ? 0 : T - 1).clone();
  return std::make_tuple(y, h_n, lstm ? c.to(in.x.scalar_type()) : at::empty({0}, options), saved);
}

}  // namespace

std::optional<std::tuple<Tensor, Tensor, Tensor, Tensor>> fused_lstm_forward(const LayerInputs& in) {
  const std::optional<cpu_fused::Plan> plan = fused_plan(in, /*backward=*/false);
  if (!plan) return std::nullopt;
  if (in.x.scalar_type() == at::kBFloat16) {  // the planner took it: the CPU has the kernels
    const FusedLstmBf16Kernel& kernel = *cpu_fused_lstm_bf16_kernel();
    return run_forward<c10::BFloat16>(in, *plan, in.mode == Mode::GRU ? kernel.gru : kernel.lstm);
  }
  const FusedLstmKernel& kernel = cpu_fused_lstm_kernel();
  return run_forward<float>(in, *plan, in.mode == Mode::GRU ? kernel.gru : kernel.lstm);
}

std::optional<std::vector<Tensor>> fused_lstm_backward(const LayerInputs& in, const Tensor& y, const Tensor& saved,
                                                       const Tensor& grad_y, const Tensor& grad_h_n,
                                                       const Tensor& grad_c_n, bool has_bias) {
  const std::optional<cpu_fused::Plan> plan = fused_plan(in, /*backward=*/true);
  if (!plan) return std::nullopt;
  const bool lstm = in.mode == Mode::LSTM;
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const int64_t GH = in.w_hh.size(0), H = GH / gates_of(in.mode);
  const FusedBackward& kernel = lstm ? cpu_fused_lstm_kernel().lstm_backward : cpu_fused_lstm_kernel().gru_backward;
  const auto options = in.x.options();
  auto none = [&] { return at::empty({0}, options); };  // absent gradients: fresh, so no two outputs alias
  const Tensor w_hh = in.w_hh.contiguous();
  const Tensor packed = recycled_empty({kernel.packed_size(H)}, options);
  // The whole sequence's gate gradients at once (4/5 of the saved activations' size, which training holds anyway),
  // so that the weight gradients are large GEMMs after the recurrence; the loop chunks them instead. The GRU's
  // [r z n | n]: the recurrent side's three gates, then the input side's n (its r and z are the recurrent side's).
  const int64_t width = lstm ? GH : GH + H;
  const Tensor dg = recycled_empty({T, N, width}, options);
  Tensor dc = lstm ? (grad_c_n.defined() ? grad_c_n.clone() : at::zeros({N, H}, options)) : Tensor();
  Tensor dh_carry = grad_h_n.clone();

  FusedLstmBackwardArgs args;
  args.T = T, args.N = N, args.H = H, args.reverse = in.reverse;
  args.packed = packed.const_data_ptr<float>();
  args.saved = saved.const_data_ptr<float>();
  args.c0 = lstm ? in.c0.const_data_ptr<float>() : nullptr;
  args.h0 = in.h0.const_data_ptr<float>();
  args.y = y.const_data_ptr<float>();
  args.grad_y = grad_y.const_data_ptr<float>();
  args.dg = dg.mutable_data_ptr<float>();
  args.dc = lstm ? dc.mutable_data_ptr<float>() : nullptr;
  args.dh_carry = dh_carry.mutable_data_ptr<float>();
  args.lengths = in.lengths.defined() ? in.lengths.const_data_ptr<int64_t>() : nullptr;
  args.split = plan->split;
  BlockClaims claims(plan->threads);
  args.claims = &claims;
  const int64_t groups = blocks_of(H, kernel.group_units);
  // Split by units, at most a thread per group (a group is 4 of the forward's panels).
  const int threads = static_cast<int>(plan->split == Split::Rows ? plan->threads
                                                                   : std::min<int64_t>(plan->threads, groups));
  run_region(threads, [&](int thread, int count, SpinBarrier& barrier) {
    // Each thread packs a share of the groups: split by units, those it reads (run_backward_thread's split); split
    // by rows or dynamically, any thread may read any group, so all wait for the packing.
    kernel.pack(w_hh.const_data_ptr<float>(), H, groups * thread / count, groups * (thread + 1) / count,
                const_cast<float*>(args.packed));
    if (args.split != Split::Units) barrier.wait(count);
    kernel.run_thread(args, thread, count, barrier);
  });
  const Tensor dg_rows = dg.view({T * N, width});
  const Tensor dg_recurrent = dg.narrow(2, 0, GH);  // [T, N, G*H]: dh_{t-1} = dg W_hh, dW_hh, db_hh
  // dh_0: the last processed step's dg W_hh plus what the step carried; then the sequence's big GEMMs.
  const int64_t first_step = in.reverse ? T - 1 : 0;  // the first step of the forward: its h_{t-1} is h0
  Tensor dh0 = at::addmm(dh_carry, dg_recurrent.select(0, first_step), w_hh);
  // dW_hh = sum over t of dg_t^T h_{t-1}: the steps whose h_{t-1} is a y row as one product on views of dg and y (a
  // copy of y with h0 in front cost 2-5 ms of fresh memory at N=64), and the first step's dg^T h0.
  Tensor dw_hh = at::mm(dg_recurrent.select(0, first_step).t(), in.h0);
  if (T > 1) {
    const Tensor dg_rest = dg_recurrent.narrow(0, in.reverse ? 0 : 1, T - 1).reshape({(T - 1) * N, GH});
    dw_hh.addmm_(dg_rest.t(), y.narrow(0, in.reverse ? 1 : 0, T - 1).reshape({(T - 1) * N, H}));
  }
  const Tensor x_rows = in.x.reshape({T * N, I});
  Tensor dw_ih, dx, db_ih, db_hh;
  if (lstm) {
    dw_ih = at::mm(dg_rows.t(), x_rows);
    // dx = dg W_ih on oneDNN against a contiguous copy of W_ih^T where the product pays for the copy (the same AMD
    // EPYC: [6400, 2048] x [2048, 512] 62 ms + 1-2 against at::mm's 77; at [400, ...] at::mm's 4.7 beats 4.2 + 1-2);
    // the weight gradients multiply two activations and stay with at::mm (oneDNN on the transposed views measured
    // slower, 112 ms against 75).
    const PreparedGemm* gemm = prepared_gemm(cpu_pointwise(), T);
    const Tensor w_ih_t_prepared = prepare(gemm, in.w_ih.t(), T * N, 1);
    dx = w_ih_t_prepared.defined() ? gemm->linear(dg_rows, w_ih_t_prepared, std::nullopt) : at::mm(dg_rows, in.w_ih);
    db_ih = has_bias ? dg_rows.sum(0) : none();
    db_hh = has_bias ? db_ih.clone() : none();
  } else {
    // The input side's gradients are the columns r z (shared) and the input n: two products each, on views.
    const Tensor dg_rz = dg_rows.narrow(1, 0, 2 * H), dg_in = dg_rows.narrow(1, GH, H);
    dw_ih = at::empty_like(in.w_ih);
    Tensor dw_ih_rz = dw_ih.narrow(0, 0, 2 * H), dw_ih_n = dw_ih.narrow(0, 2 * H, H);
    at::mm_out(dw_ih_rz, dg_rz.t(), x_rows);
    at::mm_out(dw_ih_n, dg_in.t(), x_rows);
    dx = at::mm(dg_rz, in.w_ih.narrow(0, 0, 2 * H));
    dx.addmm_(dg_in, in.w_ih.narrow(0, 2 * H, H));
    db_hh = has_bias ? dg_rows.narrow(1, 0, GH).sum(0) : none();
    db_ih = has_bias ? at::cat({db_hh.narrow(0, 0, 2 * H), dg_in.sum(0)}) : none();
  }
  return std::vector<Tensor>{dx.view({T, N, I}), dh0, lstm ? dc : none(), dw_ih, dw_hh, db_ih, db_hh,
                             none(), none(), none(), none(), none()};
}

}  // namespace fusedrnn
