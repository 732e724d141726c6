// Host driver for csrc/cell_math.h with ScalarMath, the primitives the CUDA kernels use (the CPU pass instantiates the
// same formulas with vector primitives instead): tests/test_cell_math_host.py compiles it with the system C++
// compiler, feeds it inputs and checks every output against float64 autograd.
//
// Usage: cell_math_host float|double < lines of "<function> <inputs...>"; prints one line of outputs per input line
// (%.17g), the inputs rounded to the chosen type first.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cell_math.h"

using fusedrnn::Mode;
using fusedrnn::ScalarMath;

template <class T>
static void print(const std::vector<T>& values) {
  for (size_t k = 0; k < values.size(); ++k) {
    std::printf(k ? " %.17g" : "%.17g", static_cast<double>(values[k]));
  }
  std::printf("\n");
}

template <class T>
static std::vector<T> read(int count) {
  std::vector<T> values(count);
  for (auto& v : values) {
    double x;
    std::cin >> x;
    v = static_cast<T>(x);
  }
  return values;
}

template <class T>
static int run() {
  using M = ScalarMath;
  std::string fn;
  while (std::cin >> fn) {
    if (fn == "sigmoid" || fn == "tanh" || fn == "relu") {
      T a = read<T>(1)[0];
      print<T>({fn == "sigmoid" ? M::sigmoid(a) : fn == "tanh" ? M::tanh(a) : M::relu(a)});
    } else if (fn == "relu_backward") {
      auto v = read<T>(2);
      print<T>({M::relu_backward(v[0], v[1])});
    } else if (fn == "lstm_forward") {
      auto v = read<T>(5);  // ai af ag ao c_prev
      T i, f, g, o, c, h;
      fusedrnn::lstm_forward<M, T>(v[0], v[1], v[2], v[3], v[4], i, f, g, o, c, h);
      print<T>({i, f, g, o, c, h});
    } else if (fn == "lstm_backward") {
      auto v = read<T>(8);  // i f g o c c_prev dh dc
      T dai, daf, dag, dao, dc_prev;
      fusedrnn::lstm_backward<M, T>(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], dai, daf, dag, dao, dc_prev);
      print<T>({dai, daf, dag, dao, dc_prev});
    } else if (fn == "gru_forward") {
      auto v = read<T>(5);  // ar az a_in hn h_prev
      T r, z, n, h;
      fusedrnn::gru_forward<M, T>(v[0], v[1], v[2], v[3], v[4], r, z, n, h);
      print<T>({r, z, n, h});
    } else if (fn == "gru_backward") {
      auto v = read<T>(6);  // r z n hn h_prev dh
      T dar, daz, da_in, dhn, dh_prev;
      fusedrnn::gru_backward<M, T>(v[0], v[1], v[2], v[3], v[4], v[5], dar, daz, da_in, dhn, dh_prev);
      print<T>({dar, daz, da_in, dhn, dh_prev});
    } else if (fn == "rnn_forward" || fn == "rnn_backward") {
      auto v = read<T>(3);  // mode (as a number), then a / (h, dh)
      const Mode mode = static_cast<Mode>(static_cast<int>(v[0]));
      print<T>({fn == "rnn_forward" ? fusedrnn::rnn_forward<M, T>(mode, v[1])
                                    : fusedrnn::rnn_backward<M, T>(mode, v[1], v[2])});
    } else if (fn == "zoneout") {
      auto v = read<T>(3);  // m prev fresh
      print<T>({fusedrnn::zoneout<T>(v[0], v[1], v[2])});
    } else if (fn == "layer_norm_rstd") {
      print<T>({fusedrnn::layer_norm_rstd<T>(read<T>(1)[0])});  // var
    } else if (fn == "slstm_forward") {
      auto v = read<T>(9);  // i~ f~ z~ o~ c_prev n_prev m_prev first tirex
      T c, n, m, h;
      fusedrnn::slstm_forward<M, T>(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] != T(0), v[8] != T(0), c, n, m, h);
      print<T>({c, n, m, h});
    } else if (fn == "slstm_backward") {
      auto v = read<T>(13);  // i~ f~ z~ o~ c_prev n_prev m_prev first tirex dh dc dn dm
      T dc = v[10], dn = v[11], dm = v[12], dai, daf, daz, dao;
      fusedrnn::slstm_backward<M, T>(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] != T(0), v[8] != T(0), v[9], dc,
                                     dn, dm, dai, daf, daz, dao);
      print<T>({dai, daf, daz, dao, dc, dn, dm});
    } else if (fn == "layer_norm_backward") {
      auto v = read<T>(5);  // dn nhat rstd mean_dn mean_dn_nhat
      print<T>({fusedrnn::layer_norm_backward<T>(v[0], v[1], v[2], v[3], v[4])});
    } else {
      std::fprintf(stderr, "unknown function %s\n", fn.c_str());
      return 2;
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "float") && std::strcmp(argv[1], "double"))) {
    std::fprintf(stderr, "usage: %s float|double\n", argv[0]);
    return 2;
  }
  return std::strcmp(argv[1], "float") == 0 ? run<float>() : run<double>();
}
