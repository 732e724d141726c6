// The planner of the CPU backend's fused LSTM and GRU (lstm_cpu_fused.h): whether a layer direction runs them or
// rnn_loop.cpp's loop (a oneDNN/BLAS GEMM call and a pointwise pass per step), with how many threads, and a reason
// for every refusal. Plain C++, a pure function of the sizes (the same shape as persistent_plan.h), so the tests
// cover every decision through the op fusedrnn::cpu_fused_plan (ops.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

#include "cell_math.h"
#include "lstm_cpu_fused.h"

namespace fusedrnn::cpu_fused {

//: Batch rows up to which the fused kernels are chosen over the loop: as far as they measured faster. 2-core Intel
//: Xeon (AVX-512, 2 MB L2 per core), float32, T=100, I=H=512 and 256, one thread, machine shared (load 3.9-5.0),
//: thread CPU time, medians of 5 interleaved calls (bench/cpu_fused_lstm_speed.py; bench/results/
//: cpu-intel-xeon-processor-2c/cpu-fused-lstm-t1.md, -t1-avx2.md):
//: AVX-512 variant, N=1/4/16/64: fused / loop 1.05-2.01x in inference, 1.10-1.80x in training at every shape, the
//: least at N=64, where both are compute-bound; larger batches are unmeasured, so the loop.
//: AVX2 variant (8-unit panels, 3-row tiles; measured on the same CPU under ATEN_CPU_CAPABILITY=avx2,
//: ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, an approximation of an AVX2 machine), N=1/4/16: fused / loop
//: 1.13-1.49x at every shape (with 2-row tiles N=16 H=512 inference was 0.93x: each panel re-read 8 times a step).
//: N=64 is unmeasured there: up to 16.
//: The GRU's fused forward (the same skeleton) beat the loop at every shape of those limits: 2-core AMD EPYC (Zen 4),
//: two threads, quiet, T=100, inference / training, fused / loop: AVX-512 I=H=512 N=1 2.06x / 1.28x, N=4 1.49x /
//: 1.15x, N=16 1.10x / 1.07x, N=64 1.15x / 1.05x, I=H=256 N=16 1.39x / 1.12x, I=H=128 N=32 1.56x / 1.18x; AVX2
//: (limited as above) N=1 to 16 1.13-1.77x / 1.10-1.48x (bench/results/cpu-amd-epyc-f25m17-2c/gru-fused.md). With the
//: GRU's fused backward too, training (AVX-512, same machine, 7 interleaved calls, ms, fused / loop): H=512 N=1 11.5 /
//: 19.6, N=4 24.7 / 29.7, N=64 353 / 355; H=256 N=16 25.5 / 31.5.
//: The bfloat16 GRU's fused forward (vdpbf16ps, the bfloat16 LSTM's policy on 3-gate panels) against the loop, same
//: Zen 4, T=100, I=H, 7-41 interleaved calls, fused / loop ms: H=512 N=1 1.81 / 7.91, N=4 3.65 / 6.52, N=16 13.0 /
//: 16.3, N=64 49.0 / 56.3 (training, the loop's backward either way: N=4 16.5 / 19.3, N=64 212 / 224); H=256 N=1
//: 0.55 / 2.81, N=4 1.08 / 3.72, N=64 13.9 / 18.4.
constexpr int64_t kMaxBatchAvx512 = 64;
constexpr int64_t kMaxBatchAvx2 = 16;

//: Batch rows per thread from which the backward splits a step by rows (Split::Rows) instead of by units: its
//: threads then exchange nothing, where split by units each reads the other threads' dg rows after every step (4H
//: floats per row, 4x the forward's h). 2-core AMD EPYC (Zen 4, AVX-512), two threads, T=100, fp32, quiet, wall ms,
//: medians of 7-15 interleaved calls of the backward op, units / rows: I=H=512 N=64 305.6 / 293.9, N=32 149.6 /
//: 138.7, N=16 72.7 / 71.8; I=H=256 N=64 86.3 / 75.9; I=H=1024 N=64 1170 / 1157, N=32 583 / 578. The forward by
//: rows measured within +-5% of by units either way (noise), so it keeps the units split.
constexpr int64_t kMinRowsPerThreadBackward = 16;

//: Batch rows x hidden units from which a step split by units is shared dynamically (Split::Dynamic): a thread done
//: with its slice takes the panels its peer has not started, at the price of a compare-and-swap per panel and a
//: cache line read from the peer per step. 2-core AMD EPYC (Zen 4), two threads, T=100, inference, wall ms (the
//: threads' barrier wait per call, summed), medians of 15-82 interleaved calls, units / dynamic:
//: - quiet, I=H=512: bfloat16 N=64 74.4 / 76.3 (1.9 / 1.2 ms waiting), float32 N=64 160.8 / 160.5 (6.6 / 2.5),
//:   N=16 36.7 / 36.4 (0.9 / 0.4), N=4 11.2 / 11.1-11.3 (0.17 / 0.12); training N=16 115.2 / 114.4, N=4 32.8 / 32.2;
//: - under load (a busy process on one core, OMP_WAIT_POLICY=PASSIVE), float32 N=4: H=512 29.7 / 25.6, H=256 8.3 / 8.0;
//: - small steps, where the claims cost more than the balance brings: N=1 H=64 0.24 / 0.24, H=128 0.45 / 0.46,
//:   H=256 1.16 / 1.18, bfloat16 H=256 0.64 / 0.66, N=4 H=128 0.93 / 0.94; N=4 H=256 (1024) 2.91 / 2.88.
constexpr int64_t kMinRowUnitsToShare = 2048;

//: Where the fused LSTM forward computes the input projection x_t W_ih^T: in each step, in the same register tiles as
//: h_{t-1} W_hh^T (InputProjection::Step), or as one GEMM per chunk of steps whose output the step reads back (Gemm).
//: In the step it runs at the micro-kernel's rate instead of oneDNN's and the gates' pre-activations never reach
//: memory, but every step streams W_ih's panels as well as W_hh's: that pays from a few rows a step and while the
//: two weights stay in the last-level cache. 2-core AMD EPYC (Zen 4, 1 MB L2 per core, 32 MB L3), two threads,
//: T=100, I=H, inference, wall ms, medians of 5-61 interleaved calls, gemm / step:
//: - float32 H=512 (W_ih 4 MB): N=4 12.35 / 12.45, N=8 20.79 / 19.63, N=16 36.76 / 34.80, N=32 70.0 / 67.0, N=64
//:   133.9 / 128.3 (training 497 / 462); H=256 N=1 1.34 / 1.72, N=2 1.65 / 1.90, N=4 4.16 / 3.48, N=64 40.3 / 35.1;
//:   H=128 N=1 0.34 / 0.38; I=128 H=512 N=4 7.86 / 6.84;
//: - float32 H=768 (W_ih + W_hh 18 MB): N=16 82.3 / 81.5, N=64 315 / 304; H=1024 (32 MB): N=16 153 / 173, N=32 278 /
//:   289, N=64 563 / 554;
//: - bfloat16 H=512 (W_ih 2 MB): N=1 2.58 / 3.40, N=2 4.06 / 4.35, N=4 5.75 / 5.33 (training 25.2 / 21.9), N=8
//:   11.34 / 10.42, N=16 19.5 / 18.1, N=32 39.5 / 35.4, N=64 75.1 / 70.7; H=256 N=1 0.64 / 0.78, N=64 22.6 / 21.0;
//:   H=1024 (16 MB): N=8 37.8 / 38.7, N=16 78.3 / 69.9, N=32 144.5 / 136.1.
//: One thread (OMP_NUM_THREADS=1), the rule's cells: float32 H=256 N=4 4.90 / 4.70, H=512 N=8 37.1 / 37.3, N=64 271 /
//: 247, I=128 H=512 N=4 13.3 / 12.5; bfloat16 H=512 N=4 9.00 / 9.02, N=64 134 / 125.
//: The AVX2 variant (8-unit panels, 3-row tiles; the same CPU under ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
//: MKL_ENABLE_INSTRUCTIONS=AVX2), float32: H=256 N=4 2.73 / 2.98, N=16 10.6 / 9.9; H=512 N=8 20.4 / 19.2, N=16 41.2 /
//: 37.0.
//: So: at least kMinBatchForInputInStep rows (below, a tile's weight loads outweigh its few rows' products; AVX2's
//: 3-row tiles need more), at most kMaxInputWeightBytesPerRow of W_ih a row, and both weights within
//: kMaxWeightBytesForInputInStep (3/4 of this L3; past it W_ih streams from memory). The baseline variant keeps the
//: GEMM (unmeasured; the planner sends it to the loop unless forced).
constexpr int64_t kMinBatchForInputInStepAvx512 = 4;
constexpr int64_t kMinBatchForInputInStepAvx2 = 8;
constexpr int64_t kMaxInputWeightBytesPerRow = int64_t{512} << 10;
constexpr int64_t kMaxWeightBytesForInputInStep = int64_t{24} << 20;

//: How the caller forces a path (FUSEDRNN_CPU_LSTM=fused|loop, for tests and benchmarks); Auto: the planner's rule.
enum class Force { Auto, Fused, Loop };

enum class Path { Fused, Loop };

//: Where the fused LSTM forward's input projection runs (kMinBatchForInputInStep* and below them).
enum class InputProjection { Gemm, Step };

//: How the caller forces it (FUSEDRNN_CPU_LSTM_INPUT=gemm|step, for tests and benchmarks); Auto: the rule.
enum class ForceInput { Auto, Gemm, Step };

//: How the caller forces a split (FUSEDRNN_CPU_LSTM_SPLIT=units|dynamic|rows, for tests and benchmarks); Auto: the
//: rule.
enum class ForceSplit { Auto, Units, Dynamic, Rows };

struct PlanInput {
  Mode mode = Mode::LSTM;
  bool float32 = true;    // the storage dtype is float32
  bool bfloat16 = false;  // the storage dtype is bfloat16
  bool bf16_kernel = false;  // the bfloat16 kernels run here (AVX512-BF16 and the AVX-512 variant selected)
  bool projection = false;
  bool variants = false;  // layer norm or zoneout
  bool heads = false;     // multi-head: W_hh block-diagonal, [heads, 4d, d] (issue #21)
  bool backward = false;  // the plan of the backward (else of the forward)
  int64_t batch = 1, hidden = 1;
  int64_t input_size = 1;
  int threads = 1;            // at::get_num_threads(), or 1 inside a parallel region
  std::string capability;     // the CPU kernels' variant (cpu_pointwise_capability): DEFAULT, AVX2, AVX512
  int64_t panel_units = 16;   // hidden units per panel of that variant (FusedLstmKernel::panel_units)
  Force force = Force::Auto;
  ForceSplit force_split = ForceSplit::Auto;
  ForceInput force_input = ForceInput::Auto;
};

struct Plan {
  Path path = Path::Loop;
  int threads = 1;     // the fused kernel's threads: the input's, at most one per panel
  Split split = Split::Units;
  InputProjection input = InputProjection::Gemm;  // the LSTM forward's; a GRU's n gate needs its two parts apart
  std::string reason;  // why the loop runs (empty when fused)
};

inline const char* path_name(Path path) {
  return path == Path::Fused ? "fused" : "loop";
}

inline const char* input_name(InputProjection input) {
  return input == InputProjection::Step ? "step" : "gemm";
}

inline const char* split_name(Split split) {
  switch (split) {
    case Split::Units: return "units";
    case Split::Dynamic: return "dynamic";
    case Split::Rows: return "rows";
  }
  return "";
}

//: What the kernel cannot run, whatever is forced; empty if it can.
inline std::string unsupported(const PlanInput& in) {
  if (in.mode != Mode::LSTM && in.mode != Mode::GRU) return "the fused kernels are LSTM and GRU only";
  if (!in.float32 && !in.bfloat16) return "the fused kernel is float32 or bfloat16 only";
  if (in.bfloat16 && !in.bf16_kernel) {
    return "bfloat16 needs AVX512-BF16 (vdpbf16ps) and the AVX-512 variant: this CPU, build or capability lacks one";
  }
  // The forward saves the loop's layout (i f g o c or r z n hn, bfloat16), so the loop's backward runs on them.
  if (in.bfloat16 && in.backward) return "no bfloat16 backward: the fused backward is float32 (the loop's runs)";
  if (in.projection) return "no projection (proj_size) in the fused kernel";
  if (in.variants) return "no layer norm or zoneout in the fused kernel";
  if (in.heads) return "no multi-head (block-diagonal) W_hh in the fused kernel: its panels pack a dense one";
  if (in.batch <= 0 || in.hidden <= 0) return "empty batch or hidden size";
  return "";
}

//: Why the loop is faster for this call; empty where the fused kernel is.
inline std::string slower(const PlanInput& in) {
  if (in.capability != "AVX512" && in.capability != "AVX2") {
    return "no vector variant (capability " + in.capability + "): the loop's BLAS GEMM is faster";
  }
  const int64_t max_batch = in.capability == "AVX512" ? kMaxBatchAvx512 : kMaxBatchAvx2;
  if (in.batch > max_batch) {
    return "batch " + std::to_string(in.batch) + " > " + std::to_string(max_batch) + " on " + in.capability +
           ": the loop measured as fast or faster, or the batch is unmeasured";
  }
  return "";
}

//: Whether the LSTM forward's input projection pays in the step (kMinBatchForInputInStep* and below them).
inline bool input_in_step_pays(const PlanInput& in) {
  if (in.capability != "AVX512" && in.capability != "AVX2") return false;
  const int64_t min_batch = in.capability == "AVX512" ? kMinBatchForInputInStepAvx512 : kMinBatchForInputInStepAvx2;
  const int64_t element_bytes = in.float32 ? 4 : 2;
  const int64_t w_ih_bytes = kLstmGates * in.hidden * in.input_size * element_bytes;
  const int64_t w_hh_bytes = kLstmGates * in.hidden * in.hidden * element_bytes;
  return in.batch >= min_batch && in.batch * kMaxInputWeightBytesPerRow >= w_ih_bytes &&
         w_ih_bytes + w_hh_bytes <= kMaxWeightBytesForInputInStep;
}

inline Plan plan_layer(const PlanInput& in) {
  Plan p;
  if (in.force == Force::Loop) {
    p.reason = "forced (FUSEDRNN_CPU_LSTM=loop)";
    return p;
  }
  p.reason = unsupported(in);
  if (p.reason.empty() && in.force == Force::Auto) p.reason = slower(in);
  if (!p.reason.empty()) return p;
  p.path = Path::Fused;
  // Every thread the call has (at most one per panel) runs the kernel, however small the step. Measured, T=100,
  // float32, inference, quiet 2-core AMD EPYC (Zen 4, 1 MB L2 per core), wall ms, medians of 9-11 interleaved calls,
  // one thread / two: H=32 N=1 0.13 / 0.12, N=4 0.20 / 0.18; H=64 N=1 0.21 / 0.16, N=4 0.38 / 0.30; H=128 N=1 0.49 /
  // 0.35, N=4 1.01 / 0.71; H=256 N=1 1.89 / 1.10, N=4 3.61 / 2.45 (training 5.02 / 3.62, 10.38 / 8.06); bfloat16
  // H=128 N=1 0.35 / 0.29, H=256 N=1 0.96 / 0.66, N=4 1.97 / 1.34. An earlier rule kept W_hh of up to 1 MB on one
  // thread from a 2-core Intel Xeon measured under load (load average ~4, OMP_WAIT_POLICY=PASSIVE: H=256 N=1 two
  // threads 8.8 ms against one's 2.1), where a peer descheduled mid-sequence stalls every barrier; on a quiet machine
  // the second core's compute and cache win at every size measured.
  const int64_t panels = blocks_of(in.hidden, in.panel_units);
  p.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(in.threads, panels)));
  if (in.force_split == ForceSplit::Auto) {
    const bool share = p.threads > 1 && in.batch * in.hidden >= kMinRowUnitsToShare;
    p.split = in.backward && in.batch >= kMinRowsPerThreadBackward * p.threads ? Split::Rows
              : share                                                          ? Split::Dynamic
                                                                               : Split::Units;
  } else {
    p.split = in.force_split == ForceSplit::Rows      ? Split::Rows
              : in.force_split == ForceSplit::Dynamic ? Split::Dynamic
                                                      : Split::Units;
    // At most a thread per batch row (by units, per panel: above).
    if (p.split == Split::Rows) p.threads = static_cast<int>(std::min<int64_t>(in.threads, in.batch));
  }
  if (in.mode == Mode::LSTM && !in.backward) {
    const bool step = in.force_input == ForceInput::Auto ? input_in_step_pays(in) : in.force_input == ForceInput::Step;
    p.input = step ? InputProjection::Step : InputProjection::Gemm;
  }
  return p;
}

// The planner's inputs as the host finds them (lstm_cpu_fused.cpp).

//: FUSEDRNN_CPU_LSTM's value ("", "auto", "fused", "loop"; anything else is an error).
Force parse_force(const std::string& value);
//: FUSEDRNN_CPU_LSTM as this call finds it.
Force forced_path();
//: FUSEDRNN_CPU_LSTM_SPLIT's value ("", "auto", "units", "dynamic", "rows"; anything else is an error).
ForceSplit parse_force_split(const std::string& value);
//: FUSEDRNN_CPU_LSTM_SPLIT as this call finds it.
ForceSplit forced_split();
//: FUSEDRNN_CPU_LSTM_INPUT's value ("", "auto", "gemm", "step"; anything else is an error).
ForceInput parse_force_input(const std::string& value);
//: FUSEDRNN_CPU_LSTM_INPUT as this call finds it.
ForceInput forced_input();
//: at::get_num_threads(), or 1 inside a parallel region (the kernel then runs on the calling thread).
int available_threads();
//: A PlanInput with this CPU's kernel variant (capability, panel width).
PlanInput plan_input(Mode mode, c10::ScalarType dtype, bool projection, bool variants, int64_t batch, int64_t hidden,
                     int64_t input_size, int threads, Force force, bool backward, ForceSplit force_split,
                     ForceInput force_input);

}  // namespace fusedrnn::cpu_fused
