// Host side of the fused CUDA kernels: the plan on the current device (with its occupancy), the input projection
// before the launch and the weight-gradient GEMMs after it, the launches (persistent: one cooperative or cluster
// launch and the barrier's error flag; per step: one ordinary launch per step, nothing else on the host per step).
// Compiled only into CUDA builds (fusedrnn/_build.py: CUDA_SOURCES), by the C++ compiler.
#include "persistent_host.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "persistent.h"

namespace fusedrnn::persistent {
namespace {

using at::Tensor;

//: Bytes a 16-byte vector load needs in alignment and row length.
constexpr int64_t kVectorBytes = 16;

void check_cuda(cudaError_t rc, const char* what) {
  TORCH_CHECK(rc == cudaSuccess, "fusedrnn: ", what, " failed: ", cudaGetErrorString(rc));
}

DType dtype_of(c10::ScalarType t) {
  switch (t) {
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    default: break;
  }
  TORCH_CHECK(false, "fusedrnn: the persistent CUDA kernels do not support dtype ", t);
}

//: FUSEDRNN_CUDA_TUNE's text (read on every call: a test or sweep may change it between calls; getenv is cheap,
//: the parse and the plan are cached by this text).
std::string tune_text() {
  const char* spec = std::getenv(kTuneEnv);
  return spec != nullptr ? spec : "";
}

Tune tune_from(const std::string& text) {
  try {
    return parse_tune(text);
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
}

//: The largest cluster the kernels ask for: 16 CTAs, the H100's non-portable maximum (8 is the portable one).
constexpr int kMaxCluster = 16, kPortableCluster = 8;

const void* kernel_of(const LayerInputs& in, Direction direction, bool cluster) {
  const DType dtype = dtype_of(in.x.scalar_type());
  return direction == Direction::Forward ? forward_kernel(in.mode, dtype, cluster) : backward_kernel(in.mode, dtype);
}

//: The launch configuration of a cluster-path plan: one cluster of plan.ctas CTAs.
struct ClusterLaunch {
  cudaLaunchConfig_t config = {};
  cudaLaunchAttribute attribute = {};
  ClusterLaunch(const ClusterLaunch&) = delete;  // config points at attribute
  ClusterLaunch(const Plan& plan, cudaStream_t stream) {
    config.gridDim = dim3(plan.ctas);
    config.blockDim = dim3(plan.threads);
    config.dynamicSmemBytes = static_cast<size_t>(plan.smem_bytes);
    config.stream = stream;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = plan.ctas;
    attribute.val.clusterDim.y = attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
};

//: Guards the caches below (plans, kernel attributes): layers may run on several host threads (DDP, autograd).
std::mutex cache_mutex;

//: Raises the kernel's dynamic shared-memory limit (and cluster-size limit) to what `plan` launches it with, once per
//: (device, kernel, size). The limit only ever grows: a plan cached earlier may launch the same kernel with more
//: shared memory than the latest one. Call with cache_mutex held.
void allow(const void* kernel, const Plan& plan) {
  static std::map<std::pair<int, const void*>, std::pair<int64_t, bool>> allowed;  // -> (smem, non-portable)
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto& [smem, non_portable] = allowed[{device, kernel}];
  if (plan.smem_bytes > smem) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(plan.smem_bytes)),
               "cudaFuncSetAttribute (dynamic shared memory)");
    smem = plan.smem_bytes;
  }
  if (plan.cluster > kPortableCluster && !non_portable) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
               "cudaFuncSetAttribute (non-portable cluster size)");
    non_portable = true;
  }
}

//: Whether `kernel` was built for sm_90 (SASS, or PTX of compute_90): a build without it (e.g.
//: TORCH_CUDA_ARCH_LIST=8.0+PTX) JIT-compiles compute_80 PTX, where the cluster code is a trap, a sticky error that
//: would break every later CUDA call in the process.
bool built_for_clusters(const void* kernel) {
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, kernel) != cudaSuccess) {
    (void)cudaGetLastError();  // no usable binary is an answer here, not a sticky error
    return false;
  }
  return attributes.ptxVersion >= 90 && attributes.binaryVersion >= 90;
}

//: Whether one cluster of the cluster-path plan can be resident (cudaOccupancyMaxActiveClusters >= 1).
bool cluster_fits(const void* kernel, const Plan& plan) {
  allow(kernel, plan);
  ClusterLaunch launch(plan, nullptr);
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &launch.config) != cudaSuccess) {
    (void)cudaGetLastError();  // an unsupported size is an answer here, not a sticky error
    return false;
  }
  return clusters >= 1;
}

//: The plan of one layer direction on the current device, computed once per (device, mode, dtype, batch, hidden,
//: projection, direction, FUSEDRNN_CUDA_TUNE) and then reused (planning queries the device and the occupancy).
struct PlanKey {
  int device;
  Mode mode;
  c10::ScalarType dtype;
  int64_t batch, hidden;
  bool projection;
  Direction direction;
  std::string tune;
  bool operator<(const PlanKey& o) const {
    return std::tie(device, mode, dtype, batch, hidden, projection, direction, tune) <
           std::tie(o.device, o.mode, o.dtype, o.batch, o.hidden, o.projection, o.direction, o.tune);
  }
};

//: The plan on the current device: the pure planner, then the kernel's real occupancy at the planned shared memory
//: (the cluster path falls back to the portable cluster size, then to the grid path, when its cluster cannot run).
//: no_cluster: plan the grid path (the driver refused a cluster launch that the occupancy query accepted).
//: Call with cache_mutex held.
Plan compute_plan(const LayerInputs& in, Direction direction, const Tune& tune, int device, bool no_cluster) {
  int sm_count = 0, smem_optin = 0, cooperative = 0, cluster_launch = 0, major = 0;
  check_cuda(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, device), "cudaDeviceGetAttribute");
  PlanInput input;
  input.gates = gates_of(in.mode);
  input.batch = in.x.size(1);
  input.hidden = in.w_hh.size(0) / input.gates;
  input.projection = in.w_hr.has_value();
  input.element_size = static_cast<int>(in.x.element_size());
  input.direction = direction;
  input.sm_count = sm_count;
  input.smem_per_block = smem_optin;
  // sm_90 is the only architecture the cluster kernels run on: the device must be one, and the loaded kernel must
  // have been built for it (fusedrnn/_build.py's arch list; a user's TORCH_CUDA_ARCH_LIST may leave it out).
  const bool clusters = !no_cluster && direction == Direction::Forward && major == 9 && cluster_launch != 0 &&
                        built_for_clusters(kernel_of(in, direction, true));
  input.max_cluster = clusters ? kMaxCluster : 0;
  Plan plan = plan_persistent(input, tune);
  for (const int smaller : {kPortableCluster, 0}) {
    if (!plan.persistent() || plan.cluster == 0 || cluster_fits(kernel_of(in, direction, true), plan)) break;
    input.max_cluster = smaller;
    plan = plan_persistent(input, tune);
  }
  if (plan.persistent() && plan.cluster == 0 && cooperative == 0) {
    plan.path = Path::Loop;
    plan.reason = "the device does not support cooperative launches";
  }
  if (plan.persistent() && plan.cluster == 0) {
    const void* kernel = kernel_of(in, direction, false);
    allow(kernel, plan);
    int blocks = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, plan.threads,
                                                             static_cast<size_t>(plan.smem_bytes)),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    require_co_resident(plan, blocks, sm_count);
  }
  if (!plan.persistent()) plan = fall_back(input, tune, plan.reason);
  TORCH_CHECK(tune.path.empty() || tune.path == "loop" || tune.path == path_name(plan.path), "fusedrnn: ", kTuneEnv,
              " asks for the ", tune.path, " CUDA path, which does not fit: ", plan.reason);
  if (plan.path == Path::Step) allow(kernel_of(in, direction, false), plan);
  return plan;
}

PlanKey key_of(const LayerInputs& in, Direction direction, std::string tune) {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return {device, in.mode, in.x.scalar_type(), in.x.size(1), in.w_hh.size(0) / gates_of(in.mode),
          in.w_hr.has_value(), direction, std::move(tune)};
}

//: The cached plan (see PlanKey); no_cluster replaces the entry with the grid path's plan (the driver refused its
//: cluster launch), so later calls of that shape skip the refused launch.
Plan plan_for(const LayerInputs& in, Direction direction, bool no_cluster = false) {
  static std::map<PlanKey, Plan> plans;
  PlanKey key = key_of(in, direction, tune_text());
  const std::lock_guard<std::mutex> lock(cache_mutex);
  auto found = plans.find(key);
  if (found != plans.end() && !no_cluster) return found->second;
  Plan plan = compute_plan(in, direction, tune_from(key.tune), key.device, no_cluster);
  plans.insert_or_assign(std::move(key), plan);
  return plan;
}

//: fp32 matmuls on TF32 tensor cores exactly when torch.nn's cuDNN RNNs use them: torch.backends.cudnn.rnn's
//: fp32_precision (which follows torch.backends.cudnn.allow_tf32 unless set). The call without an operator is
//: deprecated since torch 2.9 and raises when the RNN and conv settings differ; 2.11 (our oldest) takes the operator.
bool use_tf32(const Tensor& x) {
  if (x.scalar_type() != at::kFloat) return false;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 11)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

Sizes sizes_of(const LayerInputs& in) {
  Sizes s;
  s.T = static_cast<int>(in.x.size(0));
  s.N = static_cast<int>(in.x.size(1));
  s.H = static_cast<int>(in.w_hh.size(1));
  s.reverse = in.reverse;
  s.lengths = in.lengths.defined() ? in.lengths.const_data_ptr<int64_t>() : nullptr;
  return s;
}

//: The per-step path: `steps` ordinary launches of `kernel` with (params, tiling), params.steps = [s, s + 1) and
//: params.steps.carried = the state between them (persistent.h: StepRange). The launch copies the arguments, so one
//: params object serves every launch; nothing else happens on the host per step.
template <class Params>
void launch_per_step(const void* kernel, const Plan& plan, Params& params, int steps, const Tensor& carried) {
  Tiling tiling = plan;
  void* args[] = {&params, &tiling};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  params.steps.carried = carried.data_ptr();
  for (int s = 0; s < steps; ++s) {
    params.steps.begin = s;
    params.steps.end = s + 1;
    check_cuda(cudaLaunchKernel(kernel, dim3(plan.ctas), dim3(plan.threads), args,
                                static_cast<size_t>(plan.smem_bytes), stream),
               "a per-step launch of the fused kernel");
  }
}

//: The state carried between per-step launches: [2, N, H] in the kernels' accumulate type (fp64 for fp64, else
//: fp32).
Tensor carried_for(const Tensor& x, int64_t N, int64_t H) {
  return at::empty({2, N, H}, x.options().dtype(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
}

//: See defer_barrier_checks (persistent_host.h).
thread_local int defer_depth = 0;
thread_local std::vector<Tensor> deferred_flags;

void throw_if_timed_out(bool timed_out, const char* barrier) {
  TORCH_CHECK(!timed_out, "fusedrnn: the persistent CUDA kernel's ", barrier,
              " barrier timed out (its CTAs were not all running at once, or one of them stalled or failed); set ",
              kTuneEnv, "=path=step to use the per-step path, or a longer ", kBarrierTimeoutEnv,
              " under a slow tool such as compute-sanitizer");
}

//: Launches `kernel` with (params, tiling) over every step: the cluster path as one cluster, the grid path
//: cooperatively; then, unless the stream is being captured into a CUDA graph, waits for it and turns the barrier's
//: error flag into an error (a timed-out barrier never returns silently wrong results; both barriers are bounded).
//: Returns false, with nothing launched and no error left behind, when the driver refuses the cluster launch (the
//: occupancy query may accept a cluster that the launch then finds no room for); the caller then takes the grid path.
template <class Params>
bool launch(const void* kernel, const Plan& plan, Params& params, int steps, const Tensor& barrier_words) {
  params.steps = {0, steps, nullptr};
  Tiling tiling = plan;
  void* args[] = {&params, &tiling};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (plan.cluster > 0) {
    ClusterLaunch launch(plan, stream);
    const cudaError_t rc = cudaLaunchKernelExC(&launch.config, kernel, args);
    if (rc == cudaErrorInvalidClusterSize || rc == cudaErrorLaunchOutOfResources) {
      (void)cudaGetLastError();  // a refused cluster configuration (not sticky); the caller takes the grid path
      return false;
    }
    check_cuda(rc, "the cluster launch of the persistent kernel");
  } else {
    check_cuda(cudaLaunchCooperativeKernel(kernel, dim3(plan.ctas), dim3(plan.threads), args,
                                           static_cast<size_t>(plan.smem_bytes), stream),
               "the cooperative launch of the persistent kernel");
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone) return true;
  if (defer_depth > 0) {
    deferred_flags.push_back(barrier_words.narrow(0, 1, 1));
    return true;
  }
  throw_if_timed_out(barrier_words[1].item<int64_t>() != 0,  // synchronises with the stream
                     plan.cluster > 0 ? "cluster" : "grid");
  return true;
}

Tensor barrier_words_for(const Tensor& x) {
  return at::zeros({2}, x.options().dtype(at::kLong));
}

constexpr unsigned long long kNsPerMs = 1000000ull;

Barrier barrier_of(const Tensor& words) {
  int timeout_ms = kDefaultBarrierTimeoutMs;
  try {
    timeout_ms = barrier_timeout_ms(tune_from(tune_text()), std::getenv(kBarrierTimeoutEnv));
  } catch (const std::invalid_argument& error) {
    TORCH_CHECK_VALUE(false, error.what());
  }
  return {reinterpret_cast<unsigned long long*>(words.data_ptr<int64_t>()),
          static_cast<unsigned long long>(timeout_ms) * kNsPerMs};
}

//: An empty sequence, batch or hidden size has nothing to launch (rnn_loop.cpp returns the empty results, as the CPU
//: does). The variants are not theirs (the fused kernels have none of their math): IndRNN runs on its own sequence
//: kernel (indrnn_host.cpp), zoneout and layer norm on the loop.
//: Projections reach the planner, which refuses them with a reason (an error when FUSEDRNN_CUDA_TUNE forces a fused
//: path).
bool fused_candidate(const LayerInputs& in) {
  const bool variant = is_indrnn(in.mode) || in.zoneout_h.defined() || in.ln_ih.defined();
  return !variant && in.x.size(0) > 0 && in.x.size(1) > 0 && in.w_hh.size(1) > 0;
}

}  // namespace

std::optional<std::tuple<Tensor, Tensor, Tensor, Tensor>> forward(const LayerInputs& in) {
  if (!fused_candidate(in)) return std::nullopt;
  Plan plan = plan_for(in, Direction::Forward);
  if (plan.path == Path::Loop) return std::nullopt;
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2), H = in.w_hh.size(1);
  const bool lstm = in.mode == Mode::LSTM;
  const auto options = in.x.options();
  Tensor bias, b_hn;
  std::tie(bias, b_hn) = fold_biases(in);
  const Tensor x_rows = in.x.view({T * N, I});
  const Tensor gi = bias.defined() ? at::addmm(bias, x_rows, in.w_ih.t()) : at::mm(x_rows, in.w_ih.t());
  Tensor y = at::empty({T, N, H}, options);
  Tensor saved = in.save ? at::empty({T, N, saved_width(in.mode, H, false)}, options) : at::empty({0}, options);
  Tensor h_n = at::empty({N, H}, options);
  Tensor c_n = lstm ? at::empty({N, H}, options) : at::empty({0}, options);
  const Tensor barrier = plan.persistent() ? barrier_words_for(in.x) : Tensor();  // the grid barrier's words

  ForwardParams p;
  p.s = sizes_of(in);
  p.w_hh = in.w_hh.const_data_ptr();
  p.gi = gi.const_data_ptr();
  p.b_hn = b_hn.defined() ? b_hn.const_data_ptr() : nullptr;
  p.h0 = in.h0.const_data_ptr();
  p.c0 = lstm ? in.c0.const_data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.ws = in.save ? saved.data_ptr() : nullptr;
  p.h_n = h_n.data_ptr();
  p.c_n = lstm ? c_n.data_ptr() : nullptr;
  if (plan.persistent()) p.barrier = barrier_of(barrier);
  p.vector_loads = (H * in.x.element_size()) % kVectorBytes == 0 && aligned(p.h0) && aligned(p.y);
  p.tf32 = use_tf32(in.x);
  const void* kernel = kernel_of(in, Direction::Forward, plan.cluster > 0);
  if (plan.path == Path::Step) {
    launch_per_step(kernel, plan, p, static_cast<int>(T), carried_for(in.x, N, H));
  } else if (!launch(kernel, plan, p, static_cast<int>(T), barrier)) {
    // The driver refused the cluster: plan this shape without one from now on (the grid path, else per step).
    plan = plan_for(in, Direction::Forward, /*no_cluster=*/true);
    if (plan.path == Path::Loop) return std::nullopt;  // nothing was written: the loop recomputes everything
    kernel = kernel_of(in, Direction::Forward, false);
    if (plan.path == Path::Step) {
      launch_per_step(kernel, plan, p, static_cast<int>(T), carried_for(in.x, N, H));
    } else {
      launch(kernel, plan, p, static_cast<int>(T), barrier);
    }
  }
  return std::make_tuple(y, h_n, c_n, saved);
}

std::optional<std::vector<Tensor>> backward(const LayerInputs& in, const Tensor& y, const Tensor& saved,
                                            const Tensor& grad_y, const Tensor& grad_h_n,
                                            const std::optional<Tensor>& grad_c_n, bool has_bias) {
  if (!fused_candidate(in)) return std::nullopt;
  const Plan plan = plan_for(in, Direction::Backward);
  if (plan.path == Path::Loop) return std::nullopt;
  const int64_t T = in.x.size(0), N = in.x.size(1), I = in.x.size(2);
  const int64_t GH = in.w_hh.size(0), H = in.w_hh.size(1);
  const bool lstm = in.mode == Mode::LSTM, gru = in.mode == Mode::GRU;
  const auto options = y.options();
  auto none = [&] { return at::empty({0}, options); };  // absent gradients: fresh, so no two outputs alias
  Tensor dg_h = at::empty({T, N, GH}, options);
  Tensor dg_i = gru ? at::empty({T, N, GH}, options) : dg_h;
  Tensor dh0 = at::empty({N, H}, options);
  Tensor dc0 = lstm ? at::empty({N, H}, options) : none();
  const Tensor barrier = plan.persistent() ? barrier_words_for(in.x) : Tensor();  // the grid barrier's words

  BackwardParams p;
  p.s = sizes_of(in);
  p.w_hh = in.w_hh.const_data_ptr();
  p.y = y.const_data_ptr();
  p.ws = saved.const_data_ptr();
  p.h0 = in.h0.const_data_ptr();
  p.c0 = lstm ? in.c0.const_data_ptr() : nullptr;
  p.grad_y = grad_y.const_data_ptr();
  p.grad_h_n = grad_h_n.const_data_ptr();
  p.grad_c_n = lstm && grad_c_n.has_value() ? grad_c_n->const_data_ptr() : nullptr;
  p.dg_h = dg_h.data_ptr();
  p.dg_i = gru ? dg_i.data_ptr() : nullptr;
  p.dh0 = dh0.data_ptr();
  p.dc0 = lstm ? dc0.data_ptr() : nullptr;
  if (plan.persistent()) p.barrier = barrier_of(barrier);
  p.vector_loads = (GH * y.element_size()) % kVectorBytes == 0;  // dg_h is fresh, hence aligned
  p.tf32 = use_tf32(in.x);
  const void* kernel = kernel_of(in, Direction::Backward, false);
  if (plan.path == Path::Step) {  // steps 0..T: the last one gives dh0 (persistent.h: StepRange)
    launch_per_step(kernel, plan, p, static_cast<int>(T) + 1, carried_for(in.x, N, H));
  } else {
    launch(kernel, plan, p, static_cast<int>(T) + 1, barrier);
  }

  // The weight gradients: GEMMs over all T*N rows (dW_hh = sum_t dg_h_t^T h_{t-1}).
  const Tensor dgh = dg_h.view({T * N, GH}), dgi = dg_i.view({T * N, GH});
  const Tensor h0 = in.h0.unsqueeze(0);
  const Tensor h_prev = (in.reverse ? at::cat({y.narrow(0, 1, T - 1), h0}) : at::cat({h0, y.narrow(0, 0, T - 1)}))
                            .view({T * N, H});
  Tensor dw_hh = at::mm(dgh.t(), h_prev);
  Tensor dw_ih = at::mm(dgi.t(), in.x.view({T * N, I}));
  Tensor dx = at::mm(dgi, in.w_ih).view({T, N, I});
  Tensor db_ih = has_bias ? dgi.sum(0) : none(), db_hh = has_bias ? dgh.sum(0) : none();
  // Twelve, as backward_loop: ops.cpp reads every one (no projection, no layer-norm gains here).
  return std::vector<Tensor>{dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, none(), none(), none(), none(), none()};
}

void defer_barrier_checks() {
  ++defer_depth;
}

void flush_barrier_checks(bool check) {
  TORCH_CHECK(defer_depth > 0, "fusedrnn: flush_barrier_checks without defer_barrier_checks");
  if (--defer_depth > 0) return;
  std::vector<Tensor> flags = std::move(deferred_flags);
  deferred_flags.clear();
  if (!check || flags.empty()) return;
  throw_if_timed_out(at::cat(flags).max().item<int64_t>() != 0, "grid or cluster");  // one sync for them all
}

}  // namespace fusedrnn::persistent
