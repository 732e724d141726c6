// IndRNN over a whole sequence, one (batch row, hidden unit) at a time: h_t = act(a_t + u_j h_{t-1}), a_t the input
// projection with both biases. A unit's recurrence reads only its own previous state, so one thread can own (n, j)
// for the whole time loop with no GEMM and no barrier between steps: one kernel launch per direction instead of the
// per-step loop's T (rnn_loop.cpp + pointwise_cuda.cu). These functions are that loop, forward and backward; the
// CUDA kernels (indrnn_cuda.cu) are thin wrappers over them, and tests/host/indrnn_sequence_host.cpp runs the same
// functions on the host against float64 autograd of fusedrnn.reference.
//
// Same semantics and tensors as the per-step loop (so either direction may run on either path):
//   * lengths: a row past its length keeps its state; y carries it there (the caller zeroes the output) and its
//     pre-activation gradient is 0, while dh passes through to the earlier steps;
//   * zoneout: h_t = m h_{t-1} + (1 - m) h~_t, with h~_t saved for the backward (step.h: SavedLayout::h_tilde, 0 for
//     a finished row);
//   * the cell math is cell_math.h's rnn_forward / rnn_backward, in the accumulate type A (float for fp16/bf16/fp32
//     storage S, double for fp64: IndrnnAccumulate). Unlike the per-step loop, which reloads h_{t-1} from y in S
//     every step, the state stays in A across steps (y is still written in S; the backward reads h from y).
#pragma once

#include <cstdint>

#include "cell_math.h"

namespace fusedrnn {

//: The accumulate type A of storage type S: as at::acc_type<S, /*is_cuda=*/true> (double for double, float for the
//: rest), named here so that the CUDA kernels and their host emulation (indrnn_host.cpp) compute alike.
template <class S>
struct IndrnnAccumulate {
  using type = float;
};
template <>
struct IndrnnAccumulate<double> {
  using type = double;
};
template <class S>
using indrnn_accumulate_t = typename IndrnnAccumulate<S>::type;

//: Shapes: T steps, N rows, H units; [T, N, H] tensors row-major and contiguous, element (t, n, j) at (t*N + n)*H + j.
struct IndrnnForward {
  Mode mode;
  int64_t T, N, H;
  bool reverse;
  const int64_t* lengths = nullptr;  // [N] or null: row n takes part in step t iff t < lengths[n]
  const void* gi = nullptr;          // [T, N, H] x_t W_ih^T + b_ih + b_hh
  const void* u = nullptr;           // [H] the recurrent scale (the layer's w_hh)
  const void* h0 = nullptr;          // [N, H]
  const void* zoneout = nullptr;     // [T, N, H] the previous state's weight m, or null (no zoneout)
  void* y = nullptr;                 // out [T, N, H]: the state after each step (carried past a row's length)
  void* h_n = nullptr;               // out [N, H]
  void* h_tilde = nullptr;           // out, with zoneout and a backward to come: h~_t at (t*N + n)*h_tilde_ld + j
  int64_t h_tilde_ld = 0;            //   (columns of the saved activations), else null
};

struct IndrnnBackward {
  Mode mode;
  int64_t T, N, H;
  bool reverse;
  const int64_t* lengths = nullptr;
  const void* u = nullptr;         // [H]
  const void* h0 = nullptr;        // [N, H]
  const void* y = nullptr;         // [T, N, H] the forward's states
  const void* zoneout = nullptr;   // [T, N, H] or null, as in IndrnnForward
  const void* h_tilde = nullptr;   // with zoneout: the forward's saved h~ (same indexing as IndrnnForward)
  int64_t h_tilde_ld = 0;
  const void* grad_y = nullptr;    // [T, N, H]
  const void* grad_h_n = nullptr;  // [N, H]
  void* da = nullptr;              // out [T, N, H] the pre-activation gradient (= d gi; 0 past a row's length)
  void* dh0 = nullptr;             // out [N, H]
  void* du_rows = nullptr;         // out [N, H] in the accumulate type A: row n's sum over t of da_t * h_{t-1}
                                   //   (the caller sums the rows: du = du_rows.sum(0), a fixed-order reduction)
};

//: Steps whose loads a thread issues together before it runs them. The loads of a step (a_t, the mask; backward:
//: dy_t, h_t) do not depend on the recurrence, so a chunk's loads are in flight at once and a thread waits about
//: one memory latency per chunk rather than per step: what matters where the grid is too small to hide latency
//: with other warps (N * H of a few thousand: one or two blocks per SM). Costs about 2-4 registers per step of the
//: chunk (ptxas: tests/test_cuda_kernels_compile.py). 8: an assumption (latency ~10x a step's FMA + activation),
//: not yet measured on a GPU.
constexpr int kStepsInFlight = 8;

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDRNN_UNROLL _Pragma("unroll")
#else
#define FUSEDRNN_UNROLL
#endif

//: Step s of the direction's walk (s = 0 first) as a time index.
FUSEDRNN_HOST_DEVICE int64_t indrnn_time(int64_t T, bool reverse, int64_t s) {
  return reverse ? T - 1 - s : s;
}

//: The offset of (walk step s, row n, unit j) in a [T, N, C] tensor whose rows are ld elements apart.
template <class P>
FUSEDRNN_HOST_DEVICE int64_t indrnn_at(const P& p, int64_t s, int64_t n, int64_t j, int64_t ld) {
  return (indrnn_time(p.T, p.reverse, s) * p.N + n) * ld + j;
}

//: Whether walk step s is one of row n's valid steps (step.h: row_valid, t < lengths[n]), given lengths[n] as read
//: once per thread (indrnn_length) rather than once per step.
template <class P>
FUSEDRNN_HOST_DEVICE bool indrnn_valid(const P& p, int64_t length, int64_t s) {
  return indrnn_time(p.T, p.reverse, s) < length;
}

template <class P>
FUSEDRNN_HOST_DEVICE int64_t indrnn_length(const P& p, int64_t n) {
  return p.lengths == nullptr ? p.T : p.lengths[n];
}

//: The forward of row n, unit j, over every step.
template <class M, class S, class A>
FUSEDRNN_HOST_DEVICE void indrnn_forward_unit(const IndrnnForward& p, int64_t n, int64_t j) {
  const S* gi = static_cast<const S*>(p.gi);
  const S* zoneout = static_cast<const S*>(p.zoneout);
  S* y = static_cast<S*>(p.y);
  S* h_tilde = static_cast<S*>(p.h_tilde);
  const A u = static_cast<A>(static_cast<const S*>(p.u)[j]);
  const int64_t length = indrnn_length(p, n);
  A h = static_cast<A>(static_cast<const S*>(p.h0)[n * p.H + j]);
  for (int64_t first = 0; first < p.T; first += kStepsInFlight) {
    A a[kStepsInFlight], m[kStepsInFlight];  // this chunk's pre-activations and zoneout weights
    FUSEDRNN_UNROLL
    for (int k = 0; k < kStepsInFlight; ++k) {
      const int64_t s = first + k;
      a[k] = s < p.T ? static_cast<A>(gi[indrnn_at(p, s, n, j, p.H)]) : A(0);
      m[k] = s < p.T && zoneout != nullptr ? static_cast<A>(zoneout[indrnn_at(p, s, n, j, p.H)]) : A(0);
    }
    FUSEDRNN_UNROLL
    for (int k = 0; k < kStepsInFlight; ++k) {
      const int64_t s = first + k;
      if (s >= p.T) break;
      S* saved = h_tilde == nullptr ? nullptr : h_tilde + indrnn_at(p, s, n, j, p.h_tilde_ld);
      if (indrnn_valid(p, length, s)) {
        const A fresh = rnn_forward<M>(p.mode, a[k] + u * h);
        if (saved != nullptr) *saved = static_cast<S>(fresh);
        h = zoneout == nullptr ? fresh : fusedrnn::zoneout(m[k], h, fresh);
      } else if (saved != nullptr) {
        *saved = static_cast<S>(A(0));  // finite, as the per-step pass saves for a finished row
      }
      y[indrnn_at(p, s, n, j, p.H)] = static_cast<S>(h);
    }
  }
  static_cast<S*>(p.h_n)[n * p.H + j] = static_cast<S>(h);
}

//: The backward of row n, unit j: the forward's steps in reverse order. dh is the whole gradient of h_t (from y_t
//: and from step t+1); the activation's derivative is taken at h~_t (= h_t without zoneout).
template <class M, class S, class A>
FUSEDRNN_HOST_DEVICE void indrnn_backward_unit(const IndrnnBackward& p, int64_t n, int64_t j) {
  const S* y = static_cast<const S*>(p.y);
  const S* grad_y = static_cast<const S*>(p.grad_y);
  const S* zoneout = static_cast<const S*>(p.zoneout);
  const S* h_tilde = static_cast<const S*>(p.h_tilde);
  S* da = static_cast<S*>(p.da);
  const A u = static_cast<A>(static_cast<const S*>(p.u)[j]);
  const A h0 = static_cast<A>(static_cast<const S*>(p.h0)[n * p.H + j]);
  const int64_t length = indrnn_length(p, n);
  A dh = static_cast<A>(static_cast<const S*>(p.grad_h_n)[n * p.H + j]);
  A du = A(0);
  // A chunk holds walk steps last, last - 1, ..., down to last - kStepsInFlight + 1 (those >= 0). state[k] is the
  // state after walk step last - k, and h0 before step 0: for step last - k, h_t is state[k] and h_{t-1} is
  // state[k + 1] (y carries the state for a row that had not started yet in reverse).
  for (int64_t last = p.T - 1; last >= 0; last -= kStepsInFlight) {
    A dy[kStepsInFlight], m[kStepsInFlight], fresh[kStepsInFlight], state[kStepsInFlight + 1];
    auto state_after = [&](int64_t s) { return s >= 0 ? static_cast<A>(y[indrnn_at(p, s, n, j, p.H)]) : h0; };
    FUSEDRNN_UNROLL
    for (int k = 0; k < kStepsInFlight; ++k) {
      const int64_t s = last - k;
      state[k] = state_after(s);
      dy[k] = s >= 0 ? static_cast<A>(grad_y[indrnn_at(p, s, n, j, p.H)]) : A(0);
      m[k] = s >= 0 && zoneout != nullptr ? static_cast<A>(zoneout[indrnn_at(p, s, n, j, p.H)]) : A(0);
      fresh[k] = s >= 0 && h_tilde != nullptr ? static_cast<A>(h_tilde[indrnn_at(p, s, n, j, p.h_tilde_ld)])
                                              : state[k];
    }
    state[kStepsInFlight] = state_after(last - kStepsInFlight);
    FUSEDRNN_UNROLL
    for (int k = 0; k < kStepsInFlight; ++k) {
      const int64_t s = last - k;
      if (s < 0) break;
      S* da_at = da + indrnn_at(p, s, n, j, p.H);
      dh = dh + dy[k];
      if (!indrnn_valid(p, length, s)) {  // the state was carried: so is its gradient
        *da_at = static_cast<S>(A(0));
        continue;
      }
      const A direct = zoneout != nullptr ? m[k] * dh : A(0);  // zoneout: m dh reaches h_{t-1} directly,
      const A d = rnn_backward<M>(p.mode, fresh[k], dh - direct);  // and (1 - m) dh the fresh h~_t
      *da_at = static_cast<S>(d);
      du = du + d * state[k + 1];
      dh = d * u + direct;
    }
  }
  static_cast<S*>(p.dh0)[n * p.H + j] = static_cast<S>(dh);
  static_cast<A*>(p.du_rows)[n * p.H + j] = du;
}

}  // namespace fusedrnn
