// The `cuda` backend's whole-sequence IndRNN path (indrnn_host.cpp): plan (indrnn_plan.h), the input projection and
// weight-gradient GEMMs around one kernel launch per layer direction (indrnn_cuda.cu). Same inputs and results as
// rnn_loop.h's loops, which run whenever the planner refuses; either direction may run on either path.
//
// On CPU tensors the same host code runs the kernels' loops on the host (every (row, unit) through
// indrnn_sequence.h, in the kernels' accumulate type) when FUSEDRNN_CPU_INDRNN=sequence: a test hook, so that CPU
// tests check this path end to end (GEMMs, saved activations, gradient order) but for the CUDA launch itself. By
// default the CPU runs IndRNN on rnn_loop.cpp (vectorised over units).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <tuple>
#include <vector>

#include "indrnn_sequence.h"
#include "rnn_loop.h"

namespace fusedrnn::indrnn {

//: forward_loop's results, or nothing where the planner refuses (not IndRNN, FUSEDRNN_CUDA_TUNE=path=loop, empty;
//: on CPU, unless FUSEDRNN_CPU_INDRNN=sequence).
std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>> forward(const LayerInputs& in);

//: backward_loop's results (all twelve), or nothing where the planner refuses.
std::optional<std::vector<at::Tensor>> backward(const LayerInputs& in, const at::Tensor& y, const at::Tensor& saved,
                                                const at::Tensor& grad_y, const at::Tensor& grad_h_n, bool has_bias);

#ifdef FUSEDRNN_WITH_CUDA
//: The kernels (indrnn_cuda.cu), asynchronous on the current stream; dtype: the storage dtype of every pointer
//: (du_rows: its accumulate type, IndrnnAccumulate).
void launch_forward(const IndrnnForward& p, c10::ScalarType dtype);
void launch_backward(const IndrnnBackward& p, c10::ScalarType dtype);
#endif

}  // namespace fusedrnn::indrnn
