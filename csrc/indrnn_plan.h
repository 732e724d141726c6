// When the `cuda` backend runs an IndRNN layer direction as one whole-sequence kernel (indrnn_sequence.h through
// indrnn_cuda.cu: one launch, each thread owning a (batch row, hidden unit) for every step) instead of the per-step
// loop (rnn_loop.cpp: a pointwise launch per step), with a reason for every refusal. Plain C++, a pure function of
// the call's sizes, so CPU tests cover every decision (through the op fusedrnn::cuda_indrnn_plan, ops.cpp).
//
// The sequence kernel serves everything the per-step loop does for IndRNN (lengths, reverse, zoneout, every dtype),
// so the refusals are only: another cell, an explicit request for the loop, nothing to launch, a grid too big.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "cell_math.h"

namespace fusedrnn::indrnn {

//: Threads per block: a multiple of the warp size. Each thread runs a dependent chain over T steps (a load of a_t, one
//: FMA and an activation per step), so what hides the latency is many resident warps; 256 is pointwise_cuda.cu's
//: choice for the same per-element work.
constexpr int kThreads = 256;
//: A grid's x dimension is at most 2^31 - 1 blocks.
constexpr int64_t kMaxBlocks = 2147483647;

enum class Path { Sequence, Loop };

inline const char* path_name(Path path) {
  return path == Path::Sequence ? "sequence" : "loop";
}

struct PlanInput {
  Mode mode = Mode::INDRNN_TANH;
  int64_t batch = 1, hidden = 1;
  bool force_loop = false;  // FUSEDRNN_CUDA_TUNE=path=loop: every cell on rnn_loop.cpp (e.g. to compare the paths)
};

struct Plan {
  Path path = Path::Loop;
  std::string reason;  // why not the sequence kernel; empty when it runs
  bool sequence() const { return path == Path::Sequence; }
};

//: Blocks of kThreads covering batch * hidden threads.
inline int64_t blocks_for(int64_t batch, int64_t hidden) {
  return (batch * hidden + kThreads - 1) / kThreads;
}

inline Plan plan_layer(const PlanInput& in) {
  auto refuse = [](std::string why) { return Plan{Path::Loop, std::move(why)}; };
  if (!is_indrnn(in.mode)) return refuse("not IndRNN: the recurrence is a GEMM per step");
  if (in.force_loop) return refuse("FUSEDRNN_CUDA_TUNE asks for the loop path (path=loop)");
  if (in.batch <= 0 || in.hidden <= 0) {
    return refuse("empty batch or hidden size: nothing to launch (the loop returns the empty results)");
  }
  if (in.hidden > kMaxBlocks * kThreads / in.batch || blocks_for(in.batch, in.hidden) > kMaxBlocks) {
    return refuse(std::to_string(in.batch) + " x " + std::to_string(in.hidden) +
                  " (row, unit) threads need more than " + std::to_string(kMaxBlocks) + " blocks of " +
                  std::to_string(kThreads));
  }
  return Plan{Path::Sequence, ""};
}

}  // namespace fusedrnn::indrnn
