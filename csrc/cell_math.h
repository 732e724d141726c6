// The cell math of every supported recurrent cell, forward and backward, written once.
//
// Both the CPU pointwise pass (pointwise_cpu.cpp, on at::vec::Vectorized lanes) and the CUDA kernel
// (pointwise_cuda.cu, one thread per element) instantiate these functions, so the CPU tests exercise the same
// formulas the GPU runs. Every function is templated on
//   M  the math primitives: sigmoid, tanh, relu and relu's gradient (ScalarMath below, or a vector version), and
//   T  the accumulate type the arithmetic runs in (float for fp16/bf16/fp32 storage, double for fp64), or a vector
//      of it.
// Gate inputs are pre-activations with every bias already added; "d" prefixes are gradients.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDRNN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDRNN_HOST_DEVICE inline
#endif

namespace fusedrnn {

//: The cells, in the same order as fusedrnn.reference.GATES. IndRNN's recurrence is elementwise (u * h_{t-1}, no
//: GEMM); otherwise it is the Elman cell.
enum class Mode { LSTM, GRU, RNN_TANH, RNN_RELU, INDRNN_TANH, INDRNN_RELU };

FUSEDRNN_HOST_DEVICE bool is_indrnn(Mode mode) {
  return mode == Mode::INDRNN_TANH || mode == Mode::INDRNN_RELU;
}

FUSEDRNN_HOST_DEVICE bool uses_tanh(Mode mode) {
  return mode == Mode::RNN_TANH || mode == Mode::INDRNN_TANH;
}

//: Gates per cell (torch.nn's weight layout: LSTM i,f,g,o; GRU r,z,n; Elman one).
FUSEDRNN_HOST_DEVICE int gates_of(Mode mode) {
  return mode == Mode::LSTM ? 4 : mode == Mode::GRU ? 3 : 1;
}

//: Scalar primitives for host and device code.
struct ScalarMath {
  template <class T>
  static FUSEDRNN_HOST_DEVICE T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
  }
  template <class T>
  static FUSEDRNN_HOST_DEVICE T tanh(T x) {
    return std::tanh(x);
  }
  template <class T>
  static FUSEDRNN_HOST_DEVICE T relu(T x) {
    return (x > T(0) || x != x) ? x : T(0);  // NaN propagates, as in torch.relu
  }
  //: d relu(a) given its output y = relu(a) and the upstream gradient dy.
  template <class T>
  static FUSEDRNN_HOST_DEVICE T relu_backward(T y, T dy) {
    return y > T(0) ? dy : T(0);
  }
  // sLSTM's primitives (its stabiliser): exp, logsigmoid, NaN-propagating min / max as torch.minimum / maximum, and
  // the weights their gradients take.
  template <class T>
  static FUSEDRNN_HOST_DEVICE T exp(T x) {
    return std::exp(x);
  }
  //: log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): no overflow for either sign (ATen's CPU formula).
  template <class T>
  static FUSEDRNN_HOST_DEVICE T logsigmoid(T x) {
    return (x < T(0) ? x : T(0)) - std::log1p(std::exp(-std::fabs(x)));
  }
  template <class T>
  static FUSEDRNN_HOST_DEVICE T minimum(T a, T b) {
    return (a < b || a != a) ? a : b;
  }
  template <class T>
  static FUSEDRNN_HOST_DEVICE T maximum(T a, T b) {
    return (a > b || a != a) ? a : b;
  }
  //: d max(a, b) / d a as torch.maximum's backward gives it: 1 where a wins, 0 where b wins, a half each at a tie.
  template <class T>
  static FUSEDRNN_HOST_DEVICE T max_weight(T a, T b) {
    return a > b ? T(1) : a == b ? T(0.5) : T(0);
  }
  //: 1 where x <= bound, else 0: d min(x, bound) / dx as torch.clamp(max=bound) gives it (the bound passes).
  template <class T>
  static FUSEDRNN_HOST_DEVICE T at_most(T x, T bound) {
    return x <= bound ? T(1) : T(0);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// LSTM: c = f*c_prev + i*g, h = o*tanh(c) (the projection h <- W_hr h is a GEMM outside the pointwise pass).

template <class M, class T>
FUSEDRNN_HOST_DEVICE void lstm_forward(T ai, T af, T ag, T ao, T c_prev, T& i, T& f, T& g, T& o, T& c, T& h) {
  i = M::sigmoid(ai);
  f = M::sigmoid(af);
  g = M::tanh(ag);
  o = M::sigmoid(ao);
  c = f * c_prev + i * g;
  h = o * M::tanh(c);
}

//: The gate gradients through c = f*c_prev + i*g, given dc, the whole gradient of c.
template <class T>
FUSEDRNN_HOST_DEVICE void lstm_cell_backward(T i, T f, T g, T c_prev, T dc, T& dai, T& daf, T& dag, T& dc_prev) {
  const T one = T(1);
  dai = dc * g * i * (one - i);
  daf = dc * c_prev * f * (one - f);
  dag = dc * i * (one - g * g);
  dc_prev = dc * f;
}

//: dh: gradient of this step's h (before projection); dc: gradient of c from the next step. Writes the gate
//: pre-activation gradients and dc_prev.
template <class M, class T>
FUSEDRNN_HOST_DEVICE void lstm_backward(T i, T f, T g, T o, T c, T c_prev, T dh, T dc, T& dai, T& daf, T& dag,
                                        T& dao, T& dc_prev) {
  const T one = T(1);
  const T tc = M::tanh(c);
  dao = dh * tc * o * (one - o);
  lstm_cell_backward(i, f, g, c_prev, dc + dh * o * (one - tc * tc), dai, daf, dag, dc_prev);
}

// ---------------------------------------------------------------------------------------------------------------
// GRU, PyTorch's variant: r, z = sigmoid(.), n = tanh(a_in + r * hn) with hn = W_hn h + b_hn, h = (1-z)*n + z*h_prev.

template <class M, class T>
FUSEDRNN_HOST_DEVICE void gru_forward(T ar, T az, T a_in, T hn, T h_prev, T& r, T& z, T& n, T& h) {
  r = M::sigmoid(ar);
  z = M::sigmoid(az);
  n = M::tanh(a_in + r * hn);
  h = (T(1) - z) * n + z * h_prev;
}

//: Writes the gradients of a_r, a_z (shared by the input and the recurrent side), of a_in (input side), of hn
//: (recurrent side, before the reset gate) and the direct part of dh_prev (z * dh; the GEMM adds the rest).
template <class M, class T>
FUSEDRNN_HOST_DEVICE void gru_backward(T r, T z, T n, T hn, T h_prev, T dh, T& dar, T& daz, T& da_in, T& dhn,
                                       T& dh_prev_direct) {
  const T one = T(1);
  da_in = dh * (one - z) * (one - n * n);
  daz = dh * (h_prev - n) * z * (one - z);
  dar = da_in * hn * r * (one - r);
  dhn = da_in * r;
  dh_prev_direct = dh * z;
}

// ---------------------------------------------------------------------------------------------------------------
// Elman RNN: h = tanh(a) or relu(a); the backward pass needs only the output.

template <class M, class T>
FUSEDRNN_HOST_DEVICE T rnn_forward(Mode mode, T a) {
  return uses_tanh(mode) ? M::tanh(a) : M::relu(a);
}

template <class M, class T>
FUSEDRNN_HOST_DEVICE T rnn_backward(Mode mode, T h, T dh) {
  return uses_tanh(mode) ? dh * (T(1) - h * h) : M::relu_backward(h, dh);
}

// ---------------------------------------------------------------------------------------------------------------
// xLSTM's sLSTM (fusedrnn/reference_slstm.py, the oracle, which these lines follow operation for operation), gates
// i, f, z, o from pre-activations a (every bias and the recurrent product added), state (c, n, m) (h is an output):
//   log f = logsigmoid(f~)  (tirex: logsigmoid(min(f~, kTirexForgetClamp)))
//   m_t = i~ on a first step (the whole n state zero: the caller's batch-wide flag), else max(log f + m_{t-1}, i~)
//   i' = min(exp(i~ - m_t), 1), f' = min(exp(log f + m_{t-1} - m_t), 1)
//   c_t = f' c_{t-1} + i' tanh(z~), n_t = f' n_{t-1} + i', h_t = sigmoid(o~) c_t / n_t

//: TiRex clamps the forget pre-activation at this value (reference_slstm.TIREX_FORGET_CLAMP).
constexpr double kTirexForgetClamp = 15.0;

//: What both directions compute from a step's pre-activations and m_{t-1}.
template <class T>
struct SlstmGates {
  T f_in;          // f~, clamped for tirex
  T log_f_plus_m;  // log f + m_{t-1}
  T m;             // m_t
  T e_i, e_f;      // exp(i~ - m_t), exp(log f + m_{t-1} - m_t): the gates before their cap at 1
  T i, f, z, o;    // i', f', tanh(z~), sigmoid(o~)
};

template <class M, class T>
FUSEDRNN_HOST_DEVICE SlstmGates<T> slstm_gates(T i_raw, T f_raw, T z_raw, T o_raw, T m_prev, bool first,
                                                bool tirex) {
  SlstmGates<T> g;
  g.f_in = tirex ? M::minimum(f_raw, T(kTirexForgetClamp)) : f_raw;
  g.log_f_plus_m = m_prev + M::logsigmoid(g.f_in);
  g.m = first ? i_raw : M::maximum(i_raw, g.log_f_plus_m);
  g.e_i = M::exp(i_raw - g.m);
  g.e_f = M::exp(g.log_f_plus_m - g.m);
  g.i = M::minimum(g.e_i, T(1));
  g.f = M::minimum(g.e_f, T(1));
  g.z = M::tanh(z_raw);
  g.o = M::sigmoid(o_raw);
  return g;
}

template <class M, class T>
FUSEDRNN_HOST_DEVICE void slstm_forward(T i_raw, T f_raw, T z_raw, T o_raw, T c_prev, T n_prev, T m_prev, bool first,
                                        bool tirex, T& c, T& n, T& m, T& h) {
  const SlstmGates<T> g = slstm_gates<M>(i_raw, f_raw, z_raw, o_raw, m_prev, first, tirex);
  c = g.f * c_prev + g.i * g.z;
  n = g.f * n_prev + g.i;
  m = g.m;
  h = g.o * c / n;
}

//: The pre-activations' gradients of one step, recomputing its gates. dh: the whole gradient of h_t; dc, dn, dm: in,
//: the gradients of c_t, n_t, m_t; out, those of c_{t-1}, n_{t-1}, m_{t-1} (h_{t-1} gets its part through the
//: recurrent GEMM). torch's splits at ties: minimum / maximum give each side half, clamp passes at the bound.
template <class M, class T>
FUSEDRNN_HOST_DEVICE void slstm_backward(T i_raw, T f_raw, T z_raw, T o_raw, T c_prev, T n_prev, T m_prev, bool first,
                                         bool tirex, T dh, T& dc, T& dn, T& dm, T& dai, T& daf, T& daz, T& dao) {
  const T one = T(1);
  const SlstmGates<T> g = slstm_gates<M>(i_raw, f_raw, z_raw, o_raw, m_prev, first, tirex);
  const T c = g.f * c_prev + g.i * g.z;
  const T n = g.f * n_prev + g.i;
  dao = dh * c / n * g.o * (one - g.o);
  const T d_c = dc + dh * g.o / n;
  const T d_n = dn - dh * g.o * c / (n * n);
  const T d_f = d_c * c_prev + d_n * n_prev;
  const T d_i = d_c * g.z + d_n;
  daz = d_c * g.i * (one - g.z * g.z);
  const T d_e_i = d_i * M::max_weight(one, g.e_i) * g.e_i;  // d(i~ - m_t)
  const T d_e_f = d_f * M::max_weight(one, g.e_f) * g.e_f;  // d(log f + m_{t-1} - m_t)
  const T d_m = dm - d_e_i - d_e_f;
  const T to_i = first ? one : M::max_weight(i_raw, g.log_f_plus_m);  // the share of d m_t that reaches i~
  dai = d_e_i + d_m * to_i;
  const T d_log_f_plus_m = d_e_f + d_m * (one - to_i);
  daf = d_log_f_plus_m * M::sigmoid(T(0) - g.f_in);  // d logsigmoid(v) / dv = sigmoid(-v)
  if (tirex) daf = daf * M::at_most(f_raw, T(kTirexForgetClamp));
  dc = d_c * g.f;
  dn = d_n * g.f;
  dm = d_log_f_plus_m;
}

// ---------------------------------------------------------------------------------------------------------------
// Zoneout (Krueger et al. 2016): state = fresh + m (prev - fresh), m the weight of the previous state (a 0/1 draw in
// training, the rate in eval). Backward: d fresh = (1 - m) d state, d prev += m d state.

template <class T>
FUSEDRNN_HOST_DEVICE T zoneout(T m, T prev, T fresh) {
  return fresh + m * (prev - fresh);
}

// ---------------------------------------------------------------------------------------------------------------
// Layer norm over a row v of width W: nhat = (v - mean) * rstd, rstd = 1 / sqrt(var + kLayerNormEps) (biased
// variance), out = nhat * gain (+ bias). The row sums are the caller's (they span lanes); these are the per-element
// parts. Backward, with dn = d out * gain: dv = rstd * (dn - mean(dn) - nhat * mean(dn * nhat)).

//: F.layer_norm's and haste's epsilon (fusedrnn.reference.EPS).
constexpr double kLayerNormEps = 1e-5;

//: 1 / sqrt(var + eps) from a row's biased variance (every norm of the CPU pass and the CUDA row kernel).
template <class T>
FUSEDRNN_HOST_DEVICE T layer_norm_rstd(T var) {
  return T(1) / std::sqrt(var + T(kLayerNormEps));
}

template <class T>
FUSEDRNN_HOST_DEVICE T layer_norm_backward(T dn, T nhat, T rstd, T mean_dn, T mean_dn_nhat) {
  return rstd * (dn - mean_dn - nhat * mean_dn_nhat);
}

}  // namespace fusedrnn
