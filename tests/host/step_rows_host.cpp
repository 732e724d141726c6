// Host emulation of the CUDA layer-norm row kernel (csrc/pointwise_cuda.cu: row_kernel): step.h's forward_row and
// backward_row run by a "block" of host threads, each owning every P-th element of the row as a CUDA thread does
// (BlockLanes), with a std::barrier for __syncthreads and a per-thread partial sum for the block reduction.
// tests/test_cuda_row_kernel_host.py builds it with ThreadSanitizer and runs it: a missing lanes.sync() (a thread
// reading an element another thread wrote in a loop of another width) is a data race there, and the results must
// match the one-thread run (the CPU pass's order) to rounding.
//
// Usage: step_rows_host THREADS; prints "ok <max difference>" or "mismatch ..." (exit status 1).
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "step.h"

namespace {

using fusedrnn::BackwardStep;
using fusedrnn::ForwardStep;
using fusedrnn::Mat;
using fusedrnn::Mode;
using fusedrnn::ScalarMath;
using T = float;

//: One emulated block: its thread count, barrier and the per-thread partials of a reduction.
struct Block {
  int threads;
  std::barrier<> barrier;
  std::vector<T> partial;
  explicit Block(int p) : threads(p), barrier(p), partial(p) {}
};

thread_local Block* tl_block = nullptr;
thread_local int tl_thread = 0;

struct Lane {
  T load(const T* p) const { return *p; }
  void store(T* p, T v) const { *p = v; }
  T zero() const { return T(0); }
  T keep(T v) const { return v; }
};

//: step.h's Lanes as pointwise_cuda.cu's BlockLanes, on host threads.
struct ThreadLanes {
  using Compute = T;
  using Vec = T;
  template <class Body>
  void operator()(int64_t width, const Body& body) const {
    for (int64_t j = tl_thread; j < width; j += tl_block->threads) body(Lane{}, j);
  }
  static T total(T v) {
    tl_block->partial[tl_thread] = v;
    tl_block->barrier.arrive_and_wait();
    T sum = T(0);
    for (T p : tl_block->partial) sum += p;
    tl_block->barrier.arrive_and_wait();  // the partials are reused by the next reduction
    return sum;
  }
  void sync() const { tl_block->barrier.arrive_and_wait(); }
};

//: Runs body(n) for every row on a block of `threads` host threads (rows one after another, as blocks would).
void run_rows(int threads, int64_t rows, const std::function<void(int64_t)>& body) {
  for (int64_t n = 0; n < rows; ++n) {
    Block block(threads);
    std::vector<std::thread> workers;
    for (int k = 0; k < threads; ++k) {
      workers.emplace_back([&, k] {
        tl_block = &block;
        tl_thread = k;
        body(n);
      });
    }
    for (auto& worker : workers) worker.join();
  }
}

struct Buffer {
  std::vector<T> data;
  int64_t ld;
  Buffer(int64_t rows, int64_t cols) : data(rows * cols), ld(cols) {}
  Mat mat() { return Mat{data.data(), ld}; }
};

//: Every buffer of one forward and backward step of a layer-norm cell, with random inputs.
struct Problem {
  Mode mode;
  int64_t N, H, G;
  std::vector<int64_t> lengths;
  Buffer gi, gh, b_hn, h_prev, c_prev, ws, h, zh, zc, ln_ih, ln_hh, ln_cw, ln_cb, bias;
  Buffer dh, dc, dg_h, dg_i, dh_prev, d_cn, dv_h, dv_i;
  fusedrnn::SavedLayout layout;

  Problem(Mode m, int64_t n, int64_t hidden, unsigned seed)
      : mode(m), N(n), H(hidden), G(fusedrnn::gates_of(m)), lengths{2, 0, 2}, gi(n, G * hidden),
        gh(n, G * hidden), b_hn(1, hidden), h_prev(n, hidden), c_prev(n, hidden), ws(n, 16 * hidden + 3),
        h(n, hidden), zh(n, hidden), zc(n, hidden), ln_ih(1, G * hidden), ln_hh(1, G * hidden), ln_cw(1, hidden),
        ln_cb(1, hidden), bias(1, G * hidden), dh(n, hidden), dc(n, hidden), dg_h(n, G * hidden),
        dg_i(n, G * hidden), dh_prev(n, hidden), d_cn(n, hidden), dv_h(n, G * hidden), dv_i(n, G * hidden) {
    std::mt19937 rng(seed);
    std::normal_distribution<T> normal(0, 1);
    std::bernoulli_distribution coin(0.3);
    for (Buffer* b : {&gi, &gh, &b_hn, &h_prev, &c_prev, &ln_cb, &bias, &dh, &dc}) {
      for (T& v : b->data) v = normal(rng);
    }
    for (Buffer* b : {&ln_ih, &ln_hh, &ln_cw}) {
      for (T& v : b->data) v = T(1) + T(0.3) * normal(rng);
    }
    for (Buffer* b : {&zh, &zc}) {
      for (T& v : b->data) v = coin(rng) ? T(1) : T(0);
    }
    // Columns of the saved row (any layout without overlaps serves: the row functions only follow the offsets).
    const int64_t cell = (mode == Mode::LSTM ? fusedrnn::kLstmSaved : fusedrnn::kGruSaved) * H;
    layout.c_tilde = mode == Mode::LSTM ? cell : -1;
    layout.nhat_c = mode == Mode::LSTM ? cell + H : -1;
    layout.nhat_ih = cell + 2 * H;
    layout.nhat_hh = layout.nhat_ih + G * H;
    layout.stats = layout.nhat_hh + G * H;
    layout.width = layout.stats + fusedrnn::kStats;
  }

  fusedrnn::Norms norms(bool with_bias) {
    return {ln_ih.mat(), ln_hh.mat(), mode == Mode::LSTM ? ln_cw.mat() : Mat{},
            mode == Mode::LSTM ? ln_cb.mat() : Mat{}, with_bias ? bias.mat() : Mat{}};
  }

  void run(int threads) {
    ForwardStep f;
    f.mode = mode, f.N = N, f.H = H, f.t = 1, f.lengths = lengths.data();
    f.gi = gi.mat(), f.gh = gh.mat(), f.b_hn = b_hn.mat(), f.h_prev = h_prev.mat(), f.c_prev = c_prev.mat();
    f.ws = ws.mat(), f.h = h.mat(), f.zoneout_h = zh.mat(), f.zoneout_c = mode == Mode::LSTM ? zc.mat() : Mat{};
    f.norm = norms(true), f.layout = layout;
    run_rows(threads, N, [&](int64_t n) { fusedrnn::forward_row<ScalarMath, T>(f, ThreadLanes{}, n); });
    BackwardStep b;
    b.mode = mode, b.N = N, b.H = H, b.t = 1, b.lengths = lengths.data();
    b.ws = ws.mat(), b.c_prev = c_prev.mat(), b.h_prev = h_prev.mat(), b.h = h.mat(), b.dh_a = dh.mat();
    b.dc = dc.mat(), b.dg_h = dg_h.mat(), b.dg_i = mode == Mode::GRU ? dg_i.mat() : dg_h.mat();
    b.dh_prev = dh_prev.mat(), b.zoneout_h = f.zoneout_h, b.zoneout_c = f.zoneout_c, b.norm = norms(false);
    b.layout = layout, b.d_cn = mode == Mode::LSTM ? d_cn.mat() : Mat{}, b.dv_h = dv_h.mat(), b.dv_i = dv_i.mat();
    run_rows(threads, N, [&](int64_t n) { fusedrnn::backward_row<ScalarMath, T>(b, ThreadLanes{}, n); });
  }

  std::vector<const Buffer*> outputs() const {
    return {&gi, &gh, &ws, &h, &dc, &dg_h, &dg_i, &dh_prev, &d_cn, &dv_h, &dv_i};
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 4;
  // H = 37: the H-wide and the G*H-wide loops give each thread different elements, so a missing barrier between
  // them is a race. Row 1 has finished (lengths 0 at t = 1): the early paths must reach every barrier too.
  const int64_t N = 3, H = 37;
  double worst = 0;
  for (Mode mode : {Mode::LSTM, Mode::GRU}) {
    Problem serial(mode, N, H, 7), block(mode, N, H, 7);
    serial.run(1);
    block.run(threads);
    const auto want = serial.outputs(), got = block.outputs();
    for (size_t k = 0; k < want.size(); ++k) {
      for (size_t i = 0; i < want[k]->data.size(); ++i) {
        const double a = got[k]->data[i], e = want[k]->data[i];
        const double diff = std::fabs(a - e);
        if (!(diff <= 1e-4 * (1 + std::fabs(e)))) {
          std::printf("mismatch mode %d buffer %zu element %zu: %.9g vs %.9g\n", static_cast<int>(mode), k, i, a, e);
          return 1;
        }
        worst = std::fmax(worst, diff);
      }
    }
  }
  std::printf("ok %.3g\n", worst);
  return 0;
}
