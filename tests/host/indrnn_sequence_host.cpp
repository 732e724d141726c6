// Host driver for csrc/indrnn_sequence.h, the time loops the whole-sequence IndRNN CUDA kernels run (indrnn_cuda.cu):
// tests/test_indrnn_sequence_host.py compiles it with the system C++ compiler and checks every output against float64
// autograd of fusedrnn.reference. One host "thread" per (row, unit), as the kernel's grid, storage and accumulate
// type both the chosen C++ type (the kernels' own 16-bit storage is not emulated here).
//
// Usage: indrnn_sequence_host float|double, reading whitespace-separated numbers from stdin:
//   mode T N H reverse has_lengths has_zoneout      (mode: cell_math.h's Mode value)
//   gi [T*N*H]  u [H]  h0 [N*H]  lengths [N] (if has_lengths)  zoneout [T*N*H] (if has_zoneout)
//   grad_y [T*N*H]  grad_h_n [N*H]
// Prints five lines (%.17g): y [T*N*H], h_n [N*H], da [T*N*H], dh0 [N*H], du_rows [N*H].
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <vector>

#include "indrnn_sequence.h"

using fusedrnn::IndrnnBackward;
using fusedrnn::IndrnnForward;
using fusedrnn::Mode;
using fusedrnn::ScalarMath;

template <class T>
static std::vector<T> read(int64_t count) {
  std::vector<T> values(count);
  for (auto& v : values) {
    double x;
    std::cin >> x;
    v = static_cast<T>(x);
  }
  return values;
}

template <class T>
static void print(const std::vector<T>& values) {
  for (size_t k = 0; k < values.size(); ++k) std::printf(k ? " %.17g" : "%.17g", static_cast<double>(values[k]));
  std::printf("\n");
}

template <class T>
static int run() {
  int64_t mode, T_, N, H, reverse, has_lengths, has_zoneout;
  if (!(std::cin >> mode >> T_ >> N >> H >> reverse >> has_lengths >> has_zoneout)) return 2;
  const int64_t steps = T_ * N * H;
  const auto gi = read<T>(steps), u = read<T>(H), h0 = read<T>(N * H);
  std::vector<int64_t> lengths;
  if (has_lengths) {
    for (double v : read<double>(N)) lengths.push_back(static_cast<int64_t>(v));
  }
  const auto zoneout = has_zoneout ? read<T>(steps) : std::vector<T>();
  const auto grad_y = read<T>(steps), grad_h_n = read<T>(N * H);
  if (!std::cin) return 2;

  std::vector<T> y(steps), h_n(N * H), h_tilde(has_zoneout ? steps : 0);
  IndrnnForward f{static_cast<Mode>(mode), T_, N, H, reverse != 0, has_lengths ? lengths.data() : nullptr};
  f.gi = gi.data(), f.u = u.data(), f.h0 = h0.data();
  f.zoneout = has_zoneout ? zoneout.data() : nullptr;
  f.y = y.data(), f.h_n = h_n.data();
  f.h_tilde = has_zoneout ? h_tilde.data() : nullptr, f.h_tilde_ld = H;  // zoneout's saved width is H (step.h)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < H; ++j) fusedrnn::indrnn_forward_unit<ScalarMath, T, T>(f, n, j);
  }

  std::vector<T> da(steps), dh0(N * H), du_rows(N * H);
  IndrnnBackward b{f.mode, T_, N, H, f.reverse, f.lengths};
  b.u = u.data(), b.h0 = h0.data(), b.y = y.data();
  b.zoneout = f.zoneout, b.h_tilde = f.h_tilde, b.h_tilde_ld = f.h_tilde_ld;
  b.grad_y = grad_y.data(), b.grad_h_n = grad_h_n.data();
  b.da = da.data(), b.dh0 = dh0.data(), b.du_rows = du_rows.data();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < H; ++j) fusedrnn::indrnn_backward_unit<ScalarMath, T, T>(b, n, j);
  }
  print(y), print(h_n), print(da), print(dh0), print(du_rows);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "float") && std::strcmp(argv[1], "double"))) {
    std::fprintf(stderr, "usage: %s float|double < inputs\n", argv[0]);
    return 2;
  }
  return std::strcmp(argv[1], "float") == 0 ? run<float>() : run<double>();
}
