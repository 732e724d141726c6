// The `cuda` backend's persistent path (persistent_host.cpp): plan, one cooperative launch per layer direction, and
// the GEMMs around it. Same inputs and results as rnn_loop.h's loops, which run whenever the planner refuses.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

#include "rnn_loop.h"

namespace fusedrnn::persistent {

//: forward_loop's results, or nothing when the persistent kernel does not fit (persistent_plan.h) or is turned off
//: (FUSEDRNN_CUDA_TUNE=path=step). Throws when FUSEDRNN_CUDA_TUNE is malformed or asks for a path that does not fit,
//: and when the kernel's grid barrier timed out.
std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>> forward(const LayerInputs& in);

//: backward_loop's results, or nothing (as forward). Needs forward's saved activations (either path's: same layout).
std::optional<std::vector<at::Tensor>> backward(const LayerInputs& in, const at::Tensor& y, const at::Tensor& saved,
                                                const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                                const std::optional<at::Tensor>& grad_c_n, bool has_bias);

//: Deferred barrier checks, per host thread. Between defer_barrier_checks() and flush_barrier_checks(), a persistent
//: launch keeps its barrier flag instead of reading it (a host sync each); the flush reads them all in one sync and
//: throws if any barrier timed out (check=false: drops them, for an exception already on its way). A module call
//: runs its layers under one (fusedrnn.backends.native), so it syncs once, not once per layer direction. Nests.
void defer_barrier_checks();
void flush_barrier_checks(bool check);

}  // namespace fusedrnn::persistent
