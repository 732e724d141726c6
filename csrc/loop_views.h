// Views of a layer's tensors that the host time loops (rnn_loop.cpp, slstm_loop.cpp) hand to a pointwise pass or a
// GEMM: row-major matrices (Mat), time steps of [T, N, C] tensors, and the chunking of the big GEMMs over time.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "pointwise.h"

namespace fusedrnn {

//: See forward_loop (rnn_loop.cpp): below this many steps, copying W_hh^T once (or reordering the weights for
//: Pointwise::prepared_gemm, which costs about the same: ~0.5 ms for a 4 MB W_hh on CPU) costs more than it saves.
constexpr int64_t kMinStepsToTransposeWeights = 16;

//: Steps per input-projection (forward) and weight-gradient (backward) GEMM. The device decides how many rows such a
//: GEMM needs (Pointwise::gemm_rows; 0 = the whole sequence at once). On CPU a bounded chunk is as fast as one huge
//: GEMM, and its buffers are reused, stay in cache and need no fresh pages: measured 50 of 170 ms were page faults
//: for a one-shot [T, N, G*H] projection at T=100, N=64, H=512.
inline int64_t chunk_steps(const Pointwise& pw, int64_t T, int64_t N) {
  return pw.gemm_rows > 0 ? std::min<int64_t>(T, std::max<int64_t>(1, pw.gemm_rows / std::max<int64_t>(N, 1))) : T;
}

//: The chunks of chunk_steps that cover T steps: the products each chunked GEMM's weight takes part in.
inline int64_t chunks_of(int64_t T, int64_t chunk) {
  return (T + chunk - 1) / chunk;
}

//: A 2-D tensor as a Mat (row stride from the tensor).
inline Mat mat(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0)};
}

//: Time step t of a [T, N, C] tensor, starting at column `col`.
inline Mat step_mat(const at::Tensor& t3, int64_t t, int64_t col = 0) {
  auto* base = static_cast<char*>(t3.data_ptr());
  return {base + (t * t3.stride(0) + col) * t3.element_size(), t3.stride(1)};
}

//: Columns [col, ...) of a Mat of element type `element_size` bytes.
inline Mat columns(const Mat& m, int64_t col, int64_t element_size) {
  return {static_cast<char*>(m.p) + col * element_size, m.ld};
}

inline const int64_t* lengths_ptr(const at::Tensor& lengths) {
  return lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
}

//: h_{t-1} of the steps t in [lo, lo + steps) as [steps * N, P] rows: the layer's outputs y [T, N, P] shifted by one
//: step against the direction of time, h0 [N, P] where the chunk holds the direction's first step.
inline at::Tensor previous_outputs(const at::Tensor& y, const at::Tensor& h0, int64_t lo, int64_t steps, bool reverse) {
  const int64_t T = y.size(0), N = y.size(1), P = y.size(2);
  const at::Tensor first = h0.unsqueeze(0);
  const bool starts = reverse ? lo + steps == T : lo == 0;  // the chunk holds the first step: h_{t-1} = h0
  at::Tensor rows;
  if (starts && steps == 1) {
    rows = first;  // a one-step call (a cell): nothing to concatenate
  } else if (!reverse) {
    rows = starts ? at::cat({first, y.narrow(0, 0, steps - 1)}) : y.narrow(0, lo - 1, steps);
  } else {
    rows = starts ? at::cat({y.narrow(0, lo + 1, steps - 1), first}) : y.narrow(0, lo + 1, steps);
  }
  return rows.view({steps * N, P});
}

//: The backward loops' walk: the forward's steps in reverse order, in chunks of `chunk` steps (chunk_steps) whose
//: weight gradients are GEMMs over all their steps. Sets lo / steps to the current chunk's steps [lo, lo + steps),
//: calls step(t, k) for each time step t (k: its index in the chunk's buffers) and flush() after each chunk.
template <class Step, class Flush>
void walk_back_in_chunks(int64_t T, int64_t chunk, bool reverse, int64_t& lo, int64_t& steps, const Step& step,
                         const Flush& flush) {
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = reverse ? s : T - 1 - s;
    if (s % chunk == 0) {
      if (s > 0) flush();
      steps = std::min(chunk, T - s);
      lo = reverse ? s : T - s - steps;
    }
    step(t, t - lo);
  }
  flush();
}

}  // namespace fusedrnn
