// The persistent CUDA kernels' interface: plain pointers and sizes (no ATen, so the .cu files compile with CUDA
// headers only), filled by persistent_host.cpp. Shapes: T steps, N batch rows, H hidden units, G gates; every tensor
// contiguous, in the storage dtype unless said otherwise.
#pragma once

#include <cstdint>

#include "cell_math.h"
#include "persistent_plan.h"

namespace fusedrnn::persistent {

//: Storage dtypes of the kernels (mma.sync for the two 16-bit ones, FFMA for the others).
enum class DType { Half, BFloat16, Float, Double };

//: The grid barrier's words, zeroed before each launch: [0] arrivals (CTAs x steps), [1] the error flag, set when a
//: CTA waited longer than timeout_ns (the host turns it into a RuntimeError instead of hanging).
struct Barrier {
  unsigned long long* words = nullptr;
  unsigned long long timeout_ns = 0;
};

//: The steps one launch runs, counted in the direction's own order (s = 0 is the first step it processes): [begin,
//: end). The persistent path runs them all in one launch. The per-step path (Tiling from plan_step) launches once per
//: step, end = begin + 1: the grid barrier sits only between two steps of one launch, so it is never reached and the
//: launch boundary is the synchronisation (no co-residency needed). carried: what the registers hold between two
//: launches, [2, N, H] in the accumulate type (fp32; fp64 for fp64), each element read and written only by the CTA
//: owning its unit; null when one launch runs every step.
//:   forward:  steps 0..T-1; carried = (h, c) after step end-1.
//:   backward: steps 0..T, step s = W_hh's part of dh (from the dgates of step s-1, if s > 0) then the cell's
//:             backward of step s (if s < T); carried = (the dh part that bypasses W_hh, dc) after step end-1.
struct StepRange {
  int begin = 0, end = 0;
  void* carried = nullptr;
};

struct Sizes {
  int T = 0, N = 0, H = 0;
  bool reverse = false;
  const int64_t* lengths = nullptr;  // [N] or null: rows with t >= lengths[n] keep their state (step.h: row_valid)
};

struct ForwardParams {
  Sizes s;
  StepRange steps;
  const void* w_hh = nullptr;  // [G*H, H]
  const void* gi = nullptr;    // [T, N, G*H]: x W_ih^T + every bias except GRU's b_hn
  const void* b_hn = nullptr;  // GRU: [H] or null (no bias)
  const void* h0 = nullptr;    // [N, H]
  const void* c0 = nullptr;    // LSTM: [N, H]
  void* y = nullptr;           // [T, N, H]: h_t (carried for finished rows); also the exchange buffer of h
  void* ws = nullptr;          // [T, N, saved_width] (rnn_loop.h) or null (inference)
  void* h_n = nullptr;         // [N, H]
  void* c_n = nullptr;         // LSTM: [N, H]
  Barrier barrier;
  bool vector_loads = false;  // h0 and y allow 16-byte loads (aligned, H a multiple of 16 bytes)
  bool tf32 = false;          // fp32: the matmul on TF32 tensor cores (torch.backends.cudnn.allow_tf32)
};

struct BackwardParams {
  Sizes s;
  StepRange steps;
  const void* w_hh = nullptr;      // [G*H, H]
  const void* y = nullptr;         // [T, N, H] the forward's outputs (Elman: h_t; GRU: h_{t-1})
  const void* ws = nullptr;        // [T, N, saved_width]
  const void* h0 = nullptr;        // GRU: [N, H]
  const void* c0 = nullptr;        // LSTM: [N, H]
  const void* grad_y = nullptr;    // [T, N, H]
  const void* grad_h_n = nullptr;  // [N, H]
  const void* grad_c_n = nullptr;  // LSTM: [N, H] or null (zero)
  void* dg_h = nullptr;            // [T, N, G*H] gradient of the recurrent-side pre-activations; the exchange buffer
  void* dg_i = nullptr;            // GRU: [T, N, G*H] gradient of the input-side pre-activations
  void* dh0 = nullptr;             // [N, H]
  void* dc0 = nullptr;             // LSTM: [N, H]
  Barrier barrier;
  bool vector_loads = false;  // dg_h allows 16-byte loads (G*H a multiple of 16 bytes)
  bool tf32 = false;          // as in ForwardParams
};

//: The kernel for (mode, dtype) as a function pointer for the CUDA runtime's occupancy query and launch
//: (persistent_forward.cu, persistent_backward.cu); each takes (params, Tiling) by value. cluster: the forward's
//: cluster path (a launch of one thread-block cluster, Tiling::cluster > 0), else the grid path (a cooperative
//: launch of every step, or the per-step path's one ordinary launch per step: the same kernel).
const void* forward_kernel(Mode mode, DType dtype, bool cluster);
const void* backward_kernel(Mode mode, DType dtype);

}  // namespace fusedrnn::persistent
