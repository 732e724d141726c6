// The persistent backward kernel: the reverse-time loop of one layer direction in one cooperative launch. CTA c keeps
// W_hh's columns of its hidden units [u0, u0 + units), transposed ([units, G*H]), in shared memory and the fp32
// (fp64) gradient state of its N x units states in registers (dc; the part of dh_{t-1} that bypasses W_hh). Per step,
// in the forward's reverse order:
//   1. dh_t = grad_y[t] + dh from step t+1; the cell's backward (cell_math.h) from the saved activations gives the
//      gate gradients of its units, written to dg_h[t] (and GRU's input-side dg_i[t]);
//   2. the grid barrier: dg_h[t] of every unit is written;
//   3. dg_h[t] [N, G*H] staged from L2 times the transposed slice -> W_hh's contribution to dh_{t-1} of its units.
// The weight gradients are GEMMs over all T*N rows of dg_h / dg_i after the launch (persistent_host.cpp).
// In the code a step s runs 3. of the step before (s > 0), then 1. (s < T): steps 0..T, a barrier before each 3.
// except a launch's first. A launch runs steps [p.steps.begin, p.steps.end) (persistent.h: StepRange): all T + 1 on
// the persistent path, one on the per-step path, whose state waits in p.steps.carried between launches.
#include "persistent_device.h"

namespace fusedrnn::persistent {
namespace {

template <class S, Mode kMode>
__global__ void __launch_bounds__(kMaxThreads, 1) backward_kernel_impl(const BackwardParams p, const Tiling tl) {
  using A = AccOf<S>;
  constexpr int G = kGates<kMode>;
  constexpr int kSaved = kMode == Mode::LSTM ? kLstmSaved : kMode == Mode::GRU ? kGruSaved : 0;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int abort_flag;
  S* Ws = reinterpret_cast<S*>(smem);
  S* Bs = Ws + tl.m_pad * tl.w_ld;
  A* acc_s = reinterpret_cast<A*>(Bs + tl.n_pad * tl.b_ld);

  const int T = p.s.T, N = p.s.N, H = p.s.H, U = tl.units;
  const int GH = G * H;
  const int u0 = blockIdx.x * U, units_here = min(U, H - u0);
  const S* w = static_cast<const S*>(p.w_hh);
  const S* y = static_cast<const S*>(p.y);
  const S* ws = static_cast<const S*>(p.ws);
  const S* grad_y = static_cast<const S*>(p.grad_y);
  S* dg_h = static_cast<S*>(p.dg_h);
  S* dg_i = static_cast<S*>(p.dg_i);

  // The resident slice, transposed: row u holds W_hh[:, u0 + u]. Consecutive threads read consecutive units.
  for (int i = threadIdx.x; i < tl.m_pad * tl.k_pad; i += blockDim.x) {
    const int u = i % tl.m_pad, k = i / tl.m_pad;
    const bool inside = u < units_here && k < GH;
    Ws[u * tl.w_ld + k] = inside ? w[static_cast<int64_t>(k) * H + u0 + u] : Storage<S>::store(A(0));
  }

  const int begin = p.steps.begin, end = p.steps.end;  // end <= T + 1
  A* carried = static_cast<A*>(p.steps.carried);         // [2, N, H]: direct, dc (only when begin > 0 or end <= T)
  const int64_t NH = static_cast<int64_t>(N) * H;
  A dc[kMaxStatesPerThread], carry[kMaxStatesPerThread], direct[kMaxStatesPerThread];
#pragma unroll
  for (int e = 0; e < kMaxStatesPerThread; ++e) {
    const StateIndex at = state_index(e, units_here, U, N);
    dc[e] = carry[e] = direct[e] = A(0);
    if (!at.active) continue;
    const int64_t i = at.n * static_cast<int64_t>(H) + u0 + at.u;
    if (begin > 0) {  // carry is this launch's first matmul plus direct
      direct[e] = carried[i];
      if constexpr (kMode == Mode::LSTM) dc[e] = carried[NH + i];
      continue;
    }
    carry[e] = Storage<S>::load(static_cast<const S*>(p.grad_h_n)[i]);
    if constexpr (kMode == Mode::LSTM) {
      if (p.grad_c_n != nullptr) dc[e] = Storage<S>::load(static_cast<const S*>(p.grad_c_n)[i]);
    }
  }
  __syncthreads();  // Ws complete

  // What a step reads besides the exchanged dgates, per state: grad_y[t], the saved activations of t, and c_{t-1}
  // (LSTM) / h_{t-1} (GRU) / h_t (Elman). Loaded one step ahead, so the loads are in flight during the barrier wait
  // and the matmul instead of starting each step's chain.
  constexpr int kInputs = kSaved + 1;
  A dy[kMaxStatesPerThread], in[kMaxStatesPerThread][kInputs];
  auto step_time = [&](int s) { return p.s.reverse ? s : T - 1 - s; };
  auto load_inputs = [&](int t) {
    const bool first = p.s.reverse ? t == T - 1 : t == 0;  // h_{t-1} is h0 (c_{t-1} is c0)
    const int t_prev = p.s.reverse ? t + 1 : t - 1;
#pragma unroll
    for (int e = 0; e < kMaxStatesPerThread; ++e) {
      const StateIndex at = state_index(e, units_here, U, N);
      if (!at.active) continue;
      const int64_t row = static_cast<int64_t>(t) * N + at.n, col = u0 + at.u, state = at.n * static_cast<int64_t>(H) + col;
      const int64_t prev = static_cast<int64_t>(t_prev) * N + at.n;  // a row index; not read when `first`
      dy[e] = Storage<S>::load(grad_y[row * H + col]);
#pragma unroll
      for (int k = 0; k < kSaved; ++k) in[e][k] = Storage<S>::load(ws[(row * kSaved + k) * H + col]);
      if constexpr (kMode == Mode::LSTM) {
        const S* c0 = static_cast<const S*>(p.c0);
        in[e][kSaved] = Storage<S>::load(first ? c0[state] : ws[(prev * kSaved + 4) * H + col]);
      } else if constexpr (kMode == Mode::GRU) {
        const S* h0 = static_cast<const S*>(p.h0);
        in[e][kSaved] = Storage<S>::load(first ? h0[state] : y[prev * H + col]);
      } else {
        in[e][kSaved] = Storage<S>::load(y[row * H + col]);
      }
    }
  };
  if (begin < T) load_inputs(step_time(begin));

  for (int s = begin; s < end; ++s) {
    if (s > 0) {  // 3. of step s-1: W_hh's part of dh_{t-1}, from every unit's dgates of step s-1
      if (s > begin && !grid_barrier(p.barrier, s - begin, abort_flag)) return;
      matmul_step(tl, Ws, Bs, acc_s, dg_h + static_cast<int64_t>(step_time(s - 1)) * N * GH, GH, N, GH,
                  p.vector_loads, p.tf32);
      __syncthreads();  // acc_s complete
#pragma unroll
      for (int e = 0; e < kMaxStatesPerThread; ++e) {
        const StateIndex at = state_index(e, units_here, U, N);
        if (at.active) carry[e] = direct[e] + sum_partials(tl, acc_s, at.u, at.n);
      }
    }
    if (s == T) break;
    const int t = step_time(s);
#pragma unroll
    for (int e = 0; e < kMaxStatesPerThread; ++e) {
      const StateIndex at = state_index(e, units_here, U, N);
      if (!at.active) continue;
      const int64_t row = static_cast<int64_t>(t) * N + at.n, col = u0 + at.u;
      const A dh = dy[e] + carry[e];
      S* gh = dg_h + row * GH + col;
      S* gx = kMode == Mode::GRU ? dg_i + row * GH + col : nullptr;
      const A* x = in[e];
      if (!row_valid(p.s.lengths, t, at.n)) {  // a finished row: h and c were carried, so are their gradients
#pragma unroll
        for (int gate = 0; gate < G; ++gate) {
          gh[gate * H] = Storage<S>::store(A(0));
          if constexpr (kMode == Mode::GRU) gx[gate * H] = Storage<S>::store(A(0));
        }
        direct[e] = dh;
        continue;
      }
      if constexpr (kMode == Mode::LSTM) {
        A dai, daf, dag, dao, dc_prev;
        lstm_backward<ScalarMath>(x[0], x[1], x[2], x[3], x[4], x[kSaved], dh, dc[e], dai, daf, dag, dao, dc_prev);
        gh[0] = Storage<S>::store(dai), gh[H] = Storage<S>::store(daf);
        gh[2 * H] = Storage<S>::store(dag), gh[3 * H] = Storage<S>::store(dao);
        dc[e] = dc_prev;
        direct[e] = A(0);
      } else if constexpr (kMode == Mode::GRU) {
        A dar, daz, da_in, dhn, dh_direct;
        gru_backward<ScalarMath>(x[0], x[1], x[2], x[3], x[kSaved], dh, dar, daz, da_in, dhn, dh_direct);
        gh[0] = gx[0] = Storage<S>::store(dar);
        gh[H] = gx[H] = Storage<S>::store(daz);
        gh[2 * H] = Storage<S>::store(dhn);
        gx[2 * H] = Storage<S>::store(da_in);
        direct[e] = dh_direct;
      } else {
        gh[0] = Storage<S>::store(rnn_backward<ScalarMath>(kMode, x[kSaved], dh));
        direct[e] = A(0);
      }
    }
    if (s + 1 < min(end, T)) load_inputs(step_time(s + 1));  // in flight during the barrier wait and matmul
  }
#pragma unroll
  for (int e = 0; e < kMaxStatesPerThread; ++e) {
    const StateIndex at = state_index(e, units_here, U, N);
    if (!at.active) continue;
    const int64_t i = at.n * static_cast<int64_t>(H) + u0 + at.u;
    if (end <= T) {  // the next launch goes on from here
      carried[i] = direct[e];
      if constexpr (kMode == Mode::LSTM) carried[NH + i] = dc[e];
      continue;
    }
    static_cast<S*>(p.dh0)[i] = Storage<S>::store(carry[e]);
    if constexpr (kMode == Mode::LSTM) static_cast<S*>(p.dc0)[i] = Storage<S>::store(dc[e]);
  }
}

template <class S>
const void* for_mode(Mode mode) {
  switch (mode) {
    case Mode::LSTM: return reinterpret_cast<const void*>(&backward_kernel_impl<S, Mode::LSTM>);
    case Mode::GRU: return reinterpret_cast<const void*>(&backward_kernel_impl<S, Mode::GRU>);
    case Mode::RNN_TANH: return reinterpret_cast<const void*>(&backward_kernel_impl<S, Mode::RNN_TANH>);
    case Mode::RNN_RELU: return reinterpret_cast<const void*>(&backward_kernel_impl<S, Mode::RNN_RELU>);
  }
  return nullptr;
}

}  // namespace

const void* backward_kernel(Mode mode, DType dtype) {
  switch (dtype) {
    case DType::Half: return for_mode<__half>(mode);
    case DType::BFloat16: return for_mode<__nv_bfloat16>(mode);
    case DType::Float: return for_mode<float>(mode);
    case DType::Double: return for_mode<double>(mode);
  }
  return nullptr;
}

}  // namespace fusedrnn::persistent
