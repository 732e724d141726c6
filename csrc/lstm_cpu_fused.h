// The CPU backend's weight-stationary fused LSTM, float32 (issue 23). Forward: W_hh packed once per call into
// gate-interleaved column panels, one OpenMP region per chunk of steps (see lstm_cpu_fused.cpp), each thread owning a
// slice of hidden units for all four gates, so the gate math of its slice needs nothing from the other threads; per
// step a register-blocked micro-kernel (lstm_cpu_fused_kernels.h, compiled per CPU capability) computes the slice's
// gate columns, adds the input projection (precomputed per chunk of steps, or, for the LSTM where the planner finds
// it faster, x_t times W_ih packed like W_hh in the same tiles) and applies cell_math.h's LSTM in registers; then one
// spin barrier, h being exchanged through y itself (y[t] is the next step's h_{t-1}). Backward
// (lstm_cpu_fused_backward_kernels.h): the same skeleton on W_hh's columns, dh = dg W_hh per step. The GRU runs the
// same skeletons, forward and backward, with three gates and its own epilogues (torch.nn's reset gate on
// W_hn h + b_hn), saving the loop's activations.
//
// This header holds only plain data and baseline code: the variant files include it before their target pragma.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include <c10/util/BFloat16.h>

namespace at {
class Tensor;
}

namespace fusedrnn {

struct LayerInputs;

//: Gates of the LSTM, in torch.nn's order i, f, g, o.
constexpr int kLstmGates = 4;

//: Blocks of `block` hidden units that cover H (the last one partial).
inline int64_t blocks_of(int64_t H, int64_t block) {
  return (H + block - 1) / block;
}

//: How a step's work is shared among the fused kernel's threads (lstm_cpu_fused_plan.h decides): Units, each thread
//: a slice of the hidden units for every batch row, so the threads exchange h (or dg) through a barrier after every
//: step; Dynamic, the same slices, but a thread done with its own claims the blocks its peers have not started yet
//: (BlockClaims), so the slower core (interrupts, a neighbour process) does not set every step's pace; Rows, each
//: thread every unit for a slice of the batch rows, so no thread reads what another writes and no step needs a
//: barrier, at the price of each thread streaming the whole packed W_hh every step.
enum class Split { Units, Dynamic, Rows };

//: The part of every step thread `thread` of `threads` computes (Dynamic: first): unit blocks [first_block,
//: last_block) for rows [first_row, last_row).
struct ThreadSlice {
  int64_t first_block, last_block, first_row, last_row;
};

inline ThreadSlice thread_slice(Split split, int64_t blocks, int64_t N, int thread, int threads) {
  if (split == Split::Rows) return {0, blocks, N * thread / threads, N * (thread + 1) / threads};
  return {blocks * thread / threads, blocks * (thread + 1) / threads, 0, N};
}

//: The claims of Split::Dynamic: one cursor per thread's slice, holding (step + 1, next unclaimed block) in one word,
//: so that a claim is one compare-and-swap and a cursor needs no reset between steps (a cursor still tagged with an
//: earlier step has claimed nothing of this one). The threads' barrier after every step orders a step's claims and
//: writes before the next step's; a claim itself publishes nothing, so it is relaxed.
class BlockClaims {
 public:
  explicit BlockClaims(int threads) : cursors_(static_cast<size_t>(threads)) {}

  //: The next block of [first, last), thread `owner`'s slice, that nobody has claimed in step `step`; -1 if none.
  int64_t claim(int owner, int64_t step, int64_t first, int64_t last) {
    std::atomic<uint64_t>& cursor = cursors_[static_cast<size_t>(owner)].value;
    const uint64_t tag = static_cast<uint64_t>(step + 1) << kBlockBits;
    uint64_t seen = cursor.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t next = (seen & ~kBlockMask) == tag ? static_cast<int64_t>(seen & kBlockMask) : first;
      if (next >= last) return -1;
      if (cursor.compare_exchange_weak(seen, tag | static_cast<uint64_t>(next + 1), std::memory_order_relaxed)) {
        return next;
      }
    }
  }

  //: Runs body(block) for every block of step `step` this thread claims: its own slice's first (thread_slice), then
  //: what is left of the others', each from its front, the next thread's first.
  template <class Body>
  void for_claimed_blocks(int64_t step, int64_t blocks, int thread, int threads, const Body& body) {
    for (int k = 0; k < threads; ++k) {
      const int owner = (thread + k) % threads;
      const ThreadSlice slice = thread_slice(Split::Dynamic, blocks, 0, owner, threads);
      for (int64_t b; (b = claim(owner, step, slice.first_block, slice.last_block)) >= 0;) body(b);
    }
  }

 private:
  //: The low bits hold the block (2^32 blocks of 16 units, far past any hidden size), the high ones the step.
  static constexpr int kBlockBits = 32;
  static constexpr uint64_t kBlockMask = (uint64_t{1} << kBlockBits) - 1;
  struct alignas(64) Cursor {  // a cache line each: each owner claims its own slice's blocks without sharing a line
    std::atomic<uint64_t> value{0};
  };
  std::vector<Cursor> cursors_;
};

//: One chunk of steps of a fused LSTM (or GRU: G = 3 gates, no c) forward in storage dtype Storage (float or
//: c10::BFloat16), as plain pointers (shapes: T steps, N rows, H units; every array contiguous). The LSTM's cell state
//: is float32 in both.
template <class Storage>
struct FusedLstmArgsOf {
  int64_t T = 0, N = 0, H = 0;
  int64_t first = 0, steps = 0;      // the chunk: processing steps s in [first, first + steps)
  bool reverse = false;              // step s runs time t = T - 1 - s
  int64_t gi_first_t = 0;            // the time of gi's first step
  const Storage* gi = nullptr;       // [steps, N, G*H]: x_t W_ih^T + the folded biases (rnn_loop.h: fold_biases),
                                     // in time order from gi_first_t; input_in_step: [G*H], the folded biases
  bool input_in_step = false;        // each step computes x_t W_ih^T itself (the LSTM's InputProjection::Step)
  const Storage* x = nullptr;        // input_in_step: [T, N, I]
  const Storage* packed_x = nullptr; // input_in_step: W_ih packed as W_hh (K = I)
  int64_t I = 0;
  const Storage* packed = nullptr;   // W_hh packed by the kernel's pack
  const Storage* h0 = nullptr;       // [N, H]
  Storage* y = nullptr;              // [T, N, H]: h_t, carried past a row's length; y[t] is step t+1's h_{t-1}
  float* c = nullptr;                // LSTM: [N, H]: c_0 in, c of the last step run out
  const Storage* b_hn = nullptr;     // GRU: [H] b_hn, which the reset gate scales (zeros without bias)
  Storage* saved = nullptr;          // [T, N, 5H] i f g o c, GRU [T, N, 4H] r z n hn (rnn_loop.h: saved_layout),
                                     // or null (inference)
  const int64_t* lengths = nullptr;  // [N] or null (step.h: row_valid)
  Split split = Split::Units;
  BlockClaims* claims = nullptr;     // Split::Dynamic's, for at least the region's threads
};

using FusedLstmArgs = FusedLstmArgsOf<float>;

//: The fused LSTM or GRU backward over the whole sequence, float32: per step (in reverse processing order) dh_t =
//: grad_y[t] + dg_{t+1} W_hh + what the step after carries, then cell_math.h's lstm_backward / gru_backward for the
//: thread's units; the weight gradients are large GEMMs after it (lstm_cpu_fused.cpp). Shapes as FusedLstmArgs.
struct FusedLstmBackwardArgs {
  int64_t T = 0, N = 0, H = 0;
  bool reverse = false;
  const float* packed = nullptr;  // W_hh packed by FusedBackward::pack
  const float* saved = nullptr;   // [T, N, 5H] i f g o c (GRU [T, N, 4H] r z n hn), as the forward saved them
  const float* c0 = nullptr;      // LSTM: [N, H]
  const float* h0 = nullptr;      // GRU: [N, H]
  const float* y = nullptr;       // GRU: [T, N, H], the forward's output (h_t, carried past a row's length)
  const float* grad_y = nullptr;  // [T, N, H]
  float* dg = nullptr;            // [T, N, 4H] out: the LSTM's i f g o pre-activation gradients; the GRU's r z n of
                                  // the recurrent side, then n of the input side
  float* dc = nullptr;            // LSTM: [N, H]: grad_c_n (or zeros) in, dc_0 out
  float* dh_carry = nullptr;      // [N, H]: grad_h_n in; per step what goes to the step before besides dg W_hh
                                  // (a finished row's whole dh; else 0, the GRU's z dh); out: that part of dh_0
  const int64_t* lengths = nullptr;
  Split split = Split::Units;
  BlockClaims* claims = nullptr;  // Split::Dynamic's, for at least the region's threads
};

//: The barrier every thread passes after each step: spinning (a step is microseconds, far shorter than a sleep and
//: wake-up), then yielding, so a thread whose peer lost its core to another process does not burn that core.
class SpinBarrier {
 public:
  void wait(int participants) {
    if (participants <= 1) return;
    const int generation = generation_.load(std::memory_order_relaxed);  // read before arriving: see below
    // The last to arrive resets the count, then releases the others; they saw the old generation, so none can
    // arrive at the next barrier before the count is reset.
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == participants - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpinsBeforeYield) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  //: About 10-50 us of pause instructions: several steps' worth, past which the peer is likely descheduled.
  static constexpr int kSpinsBeforeYield = 1 << 12;
  static void pause() {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_ia32_pause();
#endif
  }
  // Separate cache lines: the waiters poll generation_ while the arrivals write arrived_.
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

//: One cell's compiled fused forward in storage dtype Storage.
template <class Storage>
struct FusedForwardOf {
  //: Hidden units per panel: the vector width in float32 lanes; a thread's slice is whole panels.
  int64_t panel_units;
  //: Elements of a packed weight [G*H, K] (W_hh: K = H; W_ih, where the projection is fused: K = I).
  int64_t (*packed_size)(int64_t K, int64_t H);
  //: Packs panels [first, last) of w [G*H, K] into `packed`: panel b holds, for each k < K, the G gates' rows of
  //: units [b*panel_units, (b+1)*panel_units) at column k (zeros past H), so a step streams it in order.
  void (*pack)(const Storage* w, int64_t K, int64_t H, int64_t first, int64_t last, Storage* packed);
  //: Runs the chunk's steps for thread `thread` of `threads` (its thread_slice), passing `barrier` after every step
  //: but the chunk's last where the split is by units, statically or dynamically (the region's end synchronises
  //: that one).
  void (*run_thread)(const FusedLstmArgsOf<Storage>& args, int thread, int threads, SpinBarrier& barrier);
};

//: One cell's compiled fused backward, float32 (lstm_cpu_fused_backward_kernels.h).
struct FusedBackward {
  //: Hidden units per work group (4 panels: the micro-kernel's 4 vectors are 4 blocks of W_hh's columns).
  int64_t group_units;
  int64_t (*packed_size)(int64_t H);
  //: Packs groups [first, last): group q holds, for each of the G*H rows k of W_hh, its columns
  //: [q*group_units, (q+1)*group_units) (zeros past H).
  void (*pack)(const float* w_hh, int64_t H, int64_t first, int64_t last, float* packed);
  //: Every step of the sequence for thread `thread` of `threads` (its thread_slice of the groups), one barrier
  //: between steps where the split is by units, statically or dynamically.
  void (*run_thread)(const FusedLstmBackwardArgs& args, int thread, int threads, SpinBarrier& barrier);
};

//: One CPU capability's compiled fused kernels, float32 (lstm_cpu_fused_kernels.h): the LSTM's and the GRU's forward
//: and backward.
struct FusedLstmKernel {
  FusedForwardOf<float> lstm;
  FusedForwardOf<float> gru;
  FusedBackward lstm_backward;
  FusedBackward gru_backward;
};

//: The bfloat16 fused LSTM and GRU forwards (lstm_cpu_fused_bf16.cpp): AVX512-BF16's vdpbf16ps, two bfloat16
//: products per float32 lane and instruction, with float32 sums, cell math and LSTM cell state; in training they save
//: the loop's activations (bfloat16 i f g o c, r z n hn), and the loop's backward runs on them (the fused backward is
//: float32 only). Their pack: panel b holds, for each pair of columns k, k + 1, the G gates' rows of its units as
//: (k, k + 1) pairs, one 32-bit lane per unit (zeros past H), which is vdpbf16ps' operand layout.
struct FusedLstmBf16Kernel {
  FusedForwardOf<c10::BFloat16> lstm;
  FusedForwardOf<c10::BFloat16> gru;
};

//: The variant of the CPU capability the pointwise pass runs (pointwise_cpu.cpp: cpu_pointwise_capability).
const FusedLstmKernel& cpu_fused_lstm_kernel();

//: The bfloat16 kernels, or null where this CPU has no AVX512-BF16 (or the build has no x86 variants).
const FusedLstmBf16Kernel* cpu_fused_lstm_bf16_kernel();

//: The fused forward (LSTM or GRU) where the planner (lstm_cpu_fused_plan.h) chooses it for `in` (CPU tensors): y,
//: h_n, c_n and the saved activations as forward_loop (rnn_loop.h) returns them; none where it declines.
std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>> fused_lstm_forward(const LayerInputs& in);

//: The fused backward where the planner chooses it: the gradients in backward_loop's order (rnn_loop.h); none where
//: it declines. grad_c_n may be undefined (zero).
std::optional<std::vector<at::Tensor>> fused_lstm_backward(const LayerInputs& in, const at::Tensor& y,
                                                           const at::Tensor& saved, const at::Tensor& grad_y,
                                                           const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                                                           bool has_bias);

}  // namespace fusedrnn
