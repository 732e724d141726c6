// The persistent forward kernel: one launch runs every step of one layer direction. CTA c keeps the W_hh rows of its
// hidden units [u0, u0 + units) for every gate in shared memory (persistent_plan.h) and the fp32 (fp64) h and c of
// its N x units states in registers. Per step:
//   1. h_{t-1} of all units times the W slice -> the recurrent pre-activations of its units (matmul_step);
//   2. the cell math (cell_math.h, the CPU's too) with gi_t (x_t W_ih^T + biases, one GEMM before the launch,
//      loaded during the previous step's barrier wait): h_t, c_t, the saved activations (rnn_loop.h's layout);
//   3. its slice of h_t written to y[t] and exchanged, then a barrier (none after the last step of the launch).
// A launch runs steps [p.steps.begin, p.steps.end) (persistent.h: StepRange): all of them on the persistent paths,
// one on the per-step path, whose state waits in p.steps.carried between launches.
// Two exchanges (kCluster):
//   grid path (cooperative launch, one CTA per SM): h_t goes through y in L2; every CTA stages y[t-1] (h0 first)
//     from L2 and meets the others at the counter barrier (grid_barrier);
//   cluster path (one thread-block cluster, sm_90): every CTA writes its h_t slice straight into the shared memory of
//     every CTA of the cluster (distributed shared memory; two buffers, read / written alternately) and the step
//     ends at a cluster barrier of mbarriers in shared memory (cluster_step_barrier: no L2 round trip, and bounded
//     like the grid barrier).
#include "persistent_device.h"

namespace fusedrnn::persistent {
namespace {

template <class S, Mode kMode, bool kCluster>
__global__ void __launch_bounds__(kMaxThreads, 1) forward_kernel_impl(const ForwardParams p, const Tiling tl) {
  using A = AccOf<S>;
  constexpr int G = kGates<kMode>;
  constexpr int kSaved = kMode == Mode::LSTM ? kLstmSaved : kMode == Mode::GRU ? kGruSaved : 0;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int abort_flag;
  __shared__ __align__(8) unsigned long long step_mbarriers[kClusterStepBarriers];  // cluster path's step barrier
  S* Ws = reinterpret_cast<S*>(smem);
  S* Bs = Ws + tl.m_pad * tl.w_ld;                      // grid path: the staged chunk; cluster path: buffer 0
  S* Bs_other = Bs + tl.n_pad * tl.b_ld;                // cluster path: buffer 1
  A* acc_s = reinterpret_cast<A*>(kCluster ? Bs_other + tl.n_pad * tl.b_ld : Bs_other);

  const int T = p.s.T, N = p.s.N, H = p.s.H, U = tl.units;
  const int64_t GH = static_cast<int64_t>(G) * H;
  const int u0 = blockIdx.x * U, units_here = min(U, H - u0);
  const S* w = static_cast<const S*>(p.w_hh);
  const S* gi = static_cast<const S*>(p.gi);
  const S* h0 = static_cast<const S*>(p.h0);
  S* y = static_cast<S*>(p.y);
  S* ws = static_cast<S*>(p.ws);

  // The resident slice: row gate * U + u holds W_hh's row gate * H + u0 + u; padding rows and columns are zero.
  for (int i = threadIdx.x; i < tl.m_pad * tl.k_pad; i += blockDim.x) {
    const int m = i / tl.k_pad, k = i % tl.k_pad, gate = m / U, u = m % U;
    const bool inside = gate < G && u < units_here && k < H;
    Ws[m * tl.w_ld + k] = inside ? w[(gate * static_cast<int64_t>(H) + u0 + u) * H + k] : Storage<S>::store(A(0));
  }

  const int begin = p.steps.begin, end = p.steps.end;
  A* carried = static_cast<A*>(p.steps.carried);  // [2, N, H]: h, c (only when begin > 0 or end < T)
  const int64_t NH = static_cast<int64_t>(N) * H;
  A h[kMaxStatesPerThread], c[kMaxStatesPerThread], pre[kMaxStatesPerThread][G];
#pragma unroll
  for (int e = 0; e < kMaxStatesPerThread; ++e) {
    const StateIndex at = state_index(e, units_here, U, N);
    h[e] = c[e] = A(0);
    if (!at.active) continue;
    const int64_t i = at.n * static_cast<int64_t>(H) + u0 + at.u;
    if (begin > 0) {
      h[e] = carried[i];
      if constexpr (kMode == Mode::LSTM) c[e] = carried[NH + i];
    } else {
      h[e] = Storage<S>::load(h0[i]);
      if constexpr (kMode == Mode::LSTM) c[e] = Storage<S>::load(static_cast<const S*>(p.c0)[i]);
    }
  }
  auto step_time = [&](int s) { return p.s.reverse ? T - 1 - s : s; };
  auto load_gi = [&](int t) {
#pragma unroll
    for (int e = 0; e < kMaxStatesPerThread; ++e) {
      const StateIndex at = state_index(e, units_here, U, N);
      const S* row = gi + (static_cast<int64_t>(t) * N + at.n) * GH + u0 + at.u;
#pragma unroll
      for (int gate = 0; gate < G; ++gate) pre[e][gate] = at.active ? Storage<S>::load(row[gate * H]) : A(0);
    }
  };
  load_gi(step_time(begin));
  if constexpr (kCluster) {
    // Buffer 0 holds h0, buffer 1 zeros; the other CTAs only ever write real (row < N, unit < H) elements, so the
    // padding stays zero. The barrier also makes sure every CTA of the cluster runs before anyone writes into it.
    stage(Bs, tl, h0, H, N, H, 0, tl.k_pad, p.vector_loads);
    for (int i = threadIdx.x; i < tl.n_pad * tl.b_ld; i += blockDim.x) Bs_other[i] = Storage<S>::store(A(0));
    cluster_step_barrier_init(step_mbarriers);
    cluster_barrier();
  } else {
    __syncthreads();  // Ws complete
  }

  for (int s = begin; s < end; ++s) {
    const int t = step_time(s);
    S* h_next = nullptr;  // cluster path: the buffer this step's h_t goes to, in every CTA of the cluster
    if constexpr (kCluster) {
      S* h_now = s % 2 == 0 ? Bs : Bs_other;
      h_next = s % 2 == 0 ? Bs_other : Bs;
      matmul_step<S, /*kStaged=*/false>(tl, Ws, h_now, acc_s, nullptr, 0, N, H, false, p.tf32);
    } else {
      const S* h_prev = s == 0 ? h0 : y + static_cast<int64_t>(p.s.reverse ? t + 1 : t - 1) * N * H;
      matmul_step(tl, Ws, Bs, acc_s, h_prev, H, N, H, p.vector_loads, p.tf32);
    }
    __syncthreads();  // acc_s complete
#pragma unroll
    for (int e = 0; e < kMaxStatesPerThread; ++e) {
      const StateIndex at = state_index(e, units_here, U, N);
      if (!at.active) continue;
      const int64_t row = static_cast<int64_t>(t) * N + at.n, col = u0 + at.u;
      S* saved = ws != nullptr ? ws + row * kSaved * H + col : nullptr;
      auto save = [&](int k, A v) {
        if (saved != nullptr) saved[k * H] = Storage<S>::store(v);
      };
      if (!row_valid(p.s.lengths, t, at.n)) {  // a finished row keeps its state (step.h: forward_element)
        for (int k = 0; k < kSaved; ++k) save(k, A(0));
        if constexpr (kMode == Mode::LSTM) save(kLstmSaved - 1, c[e]);
      } else {
        A rec[G], a[G];  // the recurrent part h_{t-1} W_hh^T, and the full pre-activation
#pragma unroll
        for (int gate = 0; gate < G; ++gate) {
          rec[gate] = sum_partials(tl, acc_s, gate * U + at.u, at.n);
          a[gate] = pre[e][gate] + rec[gate];
        }
        if constexpr (kMode == Mode::LSTM) {
          A i, f, g, o, c_new, h_new;
          lstm_forward<ScalarMath>(a[0], a[1], a[2], a[3], c[e], i, f, g, o, c_new, h_new);
          save(0, i), save(1, f), save(2, g), save(3, o), save(4, c_new);
          c[e] = c_new;
          h[e] = h_new;
        } else if constexpr (kMode == Mode::GRU) {
          // The reset gate scales only the recurrent part of the n gate, b_hn included.
          const A b_hn = p.b_hn != nullptr ? Storage<S>::load(static_cast<const S*>(p.b_hn)[col]) : A(0);
          const A hn = rec[2] + b_hn;
          A r, z, n, h_new;
          gru_forward<ScalarMath>(a[0], a[1], pre[e][2], hn, h[e], r, z, n, h_new);
          save(0, r), save(1, z), save(2, n), save(3, hn);
          h[e] = h_new;
        } else {
          h[e] = rnn_forward<ScalarMath>(kMode, a[0]);
        }
      }
      const S out = Storage<S>::store(h[e]);
      y[row * H + col] = out;
      if constexpr (kCluster) {
        if (s + 1 < end) {
          for (unsigned rank = 0; rank < gridDim.x; ++rank) {
            store_to_cluster_rank(h_next + at.n * tl.b_ld + col, out, rank);
          }
        }
      }
    }
    if (s + 1 < end) {
      load_gi(step_time(s + 1));  // in flight during the barrier wait
      if constexpr (kCluster) {
        // After it no CTA reads this step's buffer any more, so the next step may overwrite it. (No barrier after
        // the last step: no CTA touches another's shared memory then.)
        if (!cluster_step_barrier(step_mbarriers, static_cast<unsigned>(s - begin), p.barrier, abort_flag)) {
          cluster_barrier();  // stay resident until no CTA of the cluster writes into this one (see there)
          return;
        }
      } else if (!grid_barrier(p.barrier, s + 1 - begin, abort_flag)) {
        return;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kMaxStatesPerThread; ++e) {
    const StateIndex at = state_index(e, units_here, U, N);
    if (!at.active) continue;
    const int64_t i = at.n * static_cast<int64_t>(H) + u0 + at.u;
    if (end < T) {  // the next launch goes on from here
      carried[i] = h[e];
      if constexpr (kMode == Mode::LSTM) carried[NH + i] = c[e];
      continue;
    }
    static_cast<S*>(p.h_n)[i] = Storage<S>::store(h[e]);
    if constexpr (kMode == Mode::LSTM) static_cast<S*>(p.c_n)[i] = Storage<S>::store(c[e]);
  }
}

template <class S, bool kCluster>
const void* for_mode(Mode mode) {
  switch (mode) {
    case Mode::LSTM: return reinterpret_cast<const void*>(&forward_kernel_impl<S, Mode::LSTM, kCluster>);
    case Mode::GRU: return reinterpret_cast<const void*>(&forward_kernel_impl<S, Mode::GRU, kCluster>);
    case Mode::RNN_TANH: return reinterpret_cast<const void*>(&forward_kernel_impl<S, Mode::RNN_TANH, kCluster>);
    case Mode::RNN_RELU: return reinterpret_cast<const void*>(&forward_kernel_impl<S, Mode::RNN_RELU, kCluster>);
  }
  return nullptr;
}

template <bool kCluster>
const void* for_dtype(Mode mode, DType dtype) {
  switch (dtype) {
    case DType::Half: return for_mode<__half, kCluster>(mode);
    case DType::BFloat16: return for_mode<__nv_bfloat16, kCluster>(mode);
    case DType::Float: return for_mode<float, kCluster>(mode);
    case DType::Double: return for_mode<double, kCluster>(mode);
  }
  return nullptr;
}

}  // namespace

const void* forward_kernel(Mode mode, DType dtype, bool cluster) {
  return cluster ? for_dtype<true>(mode, dtype) : for_dtype<false>(mode, dtype);
}

}  // namespace fusedrnn::persistent
