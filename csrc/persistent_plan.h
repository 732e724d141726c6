// The host-side planner of the fused CUDA kernels (persistent_*.cu): which path a layer direction takes, and with
// which grid, cluster, hidden slice per CTA, tiles and shared memory; a reason for every refusal. In order of
// preference:
//   persistent  one launch for the whole sequence, W_hh slices resident in shared memory: the cluster path for
//               forwards that fit one thread-block cluster, else the grid path, a cooperative launch of one CTA per
//               SM (every CTA must be resident at once);
//   step        the same kernels launched once per step (ordinary launches; the launch boundary is the grid-wide
//               synchronisation): any number of CTAs, each reloading its W_hh slice (from L2) every step, so it
//               covers what does not fit on chip at once;
//   loop        rnn_loop.cpp's cuBLAS GEMM + pointwise kernel per step, only where even one step's slice does not
//               fit a CTA (projection, batches beyond the register/tile limits, very wide W_hh rows).
//
// Plain C++ without CUDA: a pure function of the sizes and of the device's numbers, so CPU tests cover every decision
// (through the op fusedrnn::cuda_plan, ops.cpp). The launcher (persistent_host.cpp) feeds it the device's numbers.
//
// Work split (forward; backward in brackets): CTA c owns hidden units [c*units, (c+1)*units). Its resident operand
// is W_hh's rows of those units for every gate, [gates*units, H] (backward: W_hh's columns of those units,
// transposed, [units, gates*H]); per step it multiplies that by the exchanged h_{t-1} [N, H] (dgates_t [N, gates*H])
// in tiles of kTileM x kTileN x kTileK, W being the M (wide) side, and runs the cell math of its N x units states.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace fusedrnn::persistent {

//: Threads per CTA: the kernels' __launch_bounds__ (256 leaves 255 registers a thread: the fp32/fp64 LSTM spilled at
//: the 128 of 512 threads), and the default.
constexpr int kMaxThreads = 256;
constexpr int kDefaultThreads = 256;
constexpr int kWarpSize = 32;
//: The warp tile: mma.sync m16n8k16 (the FFMA engine of fp32/fp64 computes the same tile with the same lanes).
constexpr int kTileM = 16, kTileN = 8, kTileK = 16;
//: Output tiles one warp accumulates in registers (4 accumulators each); more batch tiles than this are refused.
constexpr int kMaxTilesPerWarp = 4;
//: (batch row, hidden unit) states each thread keeps in registers across the sequence.
constexpr int kMaxStatesPerThread = 4;
//: Elements added to every shared-memory row: the 8 rows of a fragment then start in different banks.
constexpr int kRowPad = 8;
//: How long a CTA waits at the grid barrier before it gives up and flags an error: far beyond any step (a step takes
//: microseconds), short enough that a stuck grid (CTAs not co-resident, a failed CTA) surfaces as an error. Tools
//: that slow kernels down by orders of magnitude (compute-sanitizer) may need a longer one: kBarrierTimeoutEnv, or
//: FUSEDRNN_CUDA_TUNE=timeout_ms=... (which wins: it is the per-run override a sweep or a test sets).
constexpr int kDefaultBarrierTimeoutMs = 5000;
//: Tuning overrides, "key=value,..." (parse_tune); a sweep driver sets it. Its path=loop also sends IndRNN to the
//: per-step loop (indrnn_host.cpp).
constexpr const char* kTuneEnv = "FUSEDRNN_CUDA_TUNE";
//: The barrier timeout as its own setting, apart from FUSEDRNN_CUDA_TUNE, so a caller can shorten it for a whole test
//: run (scripts/gpu_check.sh) although the tests set FUSEDRNN_CUDA_TUNE themselves.
constexpr const char* kBarrierTimeoutEnv = "FUSEDRNN_CUDA_BARRIER_TIMEOUT_MS";
//: Shared memory the kernels declare statically (the abort flag and the cluster path's two 8-byte mbarriers: 32
//: bytes in ptxas' report, which aligns them), kept out of the dynamic budget.
constexpr int64_t kStaticSmemBytes = 32;

enum class Direction { Forward, Backward };

//: What the planner decides from. smem_per_block: cudaDevAttrMaxSharedMemoryPerBlockOptin (227 KB on H100).
struct PlanInput {
  int gates = 4;
  int64_t batch = 1, hidden = 1;
  bool projection = false;
  int element_size = 2;  // bytes of the storage dtype: 2 (fp16/bf16), 4 (fp32), 8 (fp64)
  Direction direction = Direction::Forward;
  int sm_count = 132;
  int64_t smem_per_block = 227 * 1024;
  int blocks_per_sm = -1;  // co-resident CTAs per SM at the plan's threads and smem; -1: not known yet
  int max_cluster = 0;     // the largest thread-block cluster of the kernel (16 on H100); 0: no clusters (< sm_90)
};

//: Overrides from FUSEDRNN_CUDA_TUNE ("key=value,..."); 0 / empty: the planner's choice.
struct Tune {
  int ctas = 0;     // CTAs in the grid (hidden slice = ceil(H / ctas))
  int threads = 0;  // threads per CTA
  int chunk = 0;    // K columns of the gathered operand staged in shared memory at once (a multiple of kTileK)
  int cluster = -1;  // CTAs of the cluster path; 0: never the cluster path; -1: the planner's choice
  int timeout_ms = 0;  // the barriers' bounded wait (0: kBarrierTimeoutEnv, else kDefaultBarrierTimeoutMs)
  std::string path;  // "" (planner); "persistent" or "step" (that path, a refusal is an error); "loop" (rnn_loop.cpp)
};

//: The numbers the kernels need (passed to them by value).
struct Tiling {
  int ctas = 0, threads = 0, units = 0;  // grid, block, hidden units per CTA (the last CTA may have fewer)
  int m = 0, m_pad = 0, n_pad = 0, k = 0, k_pad = 0;  // the per-step matmul [m, k] x [k, N], padded to tiles
  int chunk = 0, ksplit = 1;  // staged K columns; warps splitting K of one tile (summed in a fixed order)
  int w_ld = 0, b_ld = 0;     // shared-memory row strides (elements) of the W slice and of the staged operand
  int64_t smem_bytes = 0;     // dynamic shared memory per CTA
  int cluster = 0;            // the cluster path's CTAs (= ctas, one cluster); 0: the grid path
};

enum class Path { Persistent, Step, Loop };

inline const char* path_name(Path path) {
  return path == Path::Persistent ? "persistent" : path == Path::Step ? "step" : "loop";
}

struct Plan : Tiling {
  Path path = Path::Loop;
  std::string reason;  // why not persistent (and, on the loop path, why not per step); empty when persistent
  bool persistent() const { return path == Path::Persistent; }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

inline std::string trimmed(const std::string& s) {
  const size_t first = s.find_first_not_of(" \t"), last = s.find_last_not_of(" \t");
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

//: A positive integer setting, or std::invalid_argument naming `what`.
inline int parse_positive(const std::string& what, const std::string& value) {
  size_t used = 0;
  int v = -1;
  try {
    v = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || v <= 0) {
    throw std::invalid_argument(what + "=" + value + " is not a positive integer");
  }
  return v;
}

//: The barrier timeout in ms: tune's timeout_ms, else the kBarrierTimeoutEnv value `env` (nullptr: unset), else the
//: default. Throws std::invalid_argument on a malformed env value.
inline int barrier_timeout_ms(const Tune& tune, const char* env) {
  if (tune.timeout_ms > 0) return tune.timeout_ms;
  if (env != nullptr && *env != '\0') return parse_positive(kBarrierTimeoutEnv, trimmed(env));
  return kDefaultBarrierTimeoutMs;
}

//: Parses FUSEDRNN_CUDA_TUNE; throws std::invalid_argument on an unknown key or a malformed value.
inline Tune parse_tune(const std::string& spec) {
  Tune tune;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string item = trimmed(spec.substr(start, end - start));
    start = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = trimmed(eq == std::string::npos ? item : item.substr(0, eq));
    const std::string value = trimmed(eq == std::string::npos ? "" : item.substr(eq + 1));
    auto number = [&]() { return parse_positive("FUSEDRNN_CUDA_TUNE: " + key, value); };
    if (key == "ctas") {
      tune.ctas = number();
    } else if (key == "threads") {
      tune.threads = number();
    } else if (key == "chunk") {
      tune.chunk = number();
    } else if (key == "timeout_ms") {
      tune.timeout_ms = number();
    } else if (key == "cluster") {
      tune.cluster = value == "0" ? 0 : number();
    } else if (key == "path") {
      if (value != "persistent" && value != "step" && value != "loop") {
        throw std::invalid_argument("FUSEDRNN_CUDA_TUNE: path=" + value + " (expected persistent, step or loop)");
      }
      tune.path = value;
    } else {
      throw std::invalid_argument("FUSEDRNN_CUDA_TUNE: unknown key '" + key +
                                  "' (known: ctas, threads, chunk, cluster, timeout_ms, path)");
    }
  }
  return tune;
}

//: Refuses a plan whose CTAs cannot all be resident at once (a grid barrier would then wait forever).
inline void require_co_resident(Plan& plan, int blocks_per_sm, int sm_count) {
  if (!plan.persistent() || blocks_per_sm < 0) return;
  const int64_t resident = static_cast<int64_t>(blocks_per_sm) * sm_count;
  if (plan.ctas > resident) {
    plan.path = Path::Loop;
    plan.reason = "only " + std::to_string(resident) + " CTAs (" + std::to_string(blocks_per_sm) + " per SM x " +
                  std::to_string(sm_count) + " SMs) fit at once with " + std::to_string(plan.smem_bytes) +
                  " bytes of shared memory and " + std::to_string(plan.threads) + " threads; the grid needs " +
                  std::to_string(plan.ctas);
  }
}

//: Fills p's tiling for `wanted` CTAs of p.threads threads; returns why it does not fit, or "" when it does.
//: resident: the cluster path, where the whole operand (h_{t-1}) lives in two shared-memory buffers (the one read
//: this step, the one the cluster writes for the next) instead of chunks staged from L2.
inline std::string tile(Plan& p, const PlanInput& in, const Tune& tune, int64_t wanted, bool resident) {
  const bool forward = in.direction == Direction::Forward;
  const int64_t G = in.gates, N = in.batch, H = in.hidden;
  p.units = static_cast<int>(ceil_div(H, wanted));
  p.ctas = static_cast<int>(ceil_div(H, p.units));  // no CTA without hidden units
  const int64_t states = N * p.units;
  if (states > static_cast<int64_t>(p.threads) * kMaxStatesPerThread) {
    return "batch " + std::to_string(N) + " x " + std::to_string(p.units) + " hidden units per CTA = " +
           std::to_string(states) + " states exceed " + std::to_string(p.threads) + " threads x " +
           std::to_string(kMaxStatesPerThread) + " registers";
  }
  p.m = static_cast<int>(forward ? G * p.units : p.units);
  p.k = static_cast<int>(forward ? H : G * H);
  p.m_pad = static_cast<int>(round_up(p.m, kTileM));
  p.n_pad = static_cast<int>(round_up(N, kTileN));
  p.k_pad = static_cast<int>(round_up(p.k, kTileK));
  const int warps = p.threads / kWarpSize;
  const int64_t tiles = static_cast<int64_t>(p.m_pad / kTileM) * (p.n_pad / kTileN);
  p.ksplit = static_cast<int>(std::max<int64_t>(1, warps / tiles));
  const int64_t groups = warps / p.ksplit;
  if (ceil_div(tiles, groups) > kMaxTilesPerWarp) {
    return std::to_string(tiles) + " output tiles of " + std::to_string(kTileM) + "x" + std::to_string(kTileN) +
           " (batch " + std::to_string(N) + ") exceed " + std::to_string(warps) + " warps x " +
           std::to_string(kMaxTilesPerWarp);
  }

  const int64_t es = in.element_size, acc_size = es == 8 ? 8 : 4;
  p.w_ld = p.k_pad + kRowPad;
  const int64_t w_bytes = static_cast<int64_t>(p.m_pad) * p.w_ld * es;
  const int64_t acc_bytes = static_cast<int64_t>(p.ksplit) * p.m_pad * p.n_pad * acc_size;
  const int64_t budget = in.smem_per_block - kStaticSmemBytes;
  const int64_t left = budget - w_bytes - acc_bytes;
  const int64_t row_bytes = static_cast<int64_t>(p.n_pad) * es;  // one staged K column, all batch rows
  const int buffers = resident ? 2 : 1;
  const int64_t columns = std::max<int64_t>(0, left / (buffers * row_bytes) - kRowPad);  // K columns that fit
  const int64_t largest = std::min<int64_t>(p.k_pad, columns / kTileK * kTileK);
  if (largest < (resident ? p.k_pad : kTileK)) {
    return "the W_hh slice (" + std::to_string(p.m_pad) + " x " + std::to_string(p.w_ld) + ", " +
           std::to_string(w_bytes) + " bytes) with the accumulators and " +
           (resident ? "two buffers of all of h" : "one staged tile") + " for batch " + std::to_string(N) +
           " exceeds the " + std::to_string(in.smem_per_block) + " bytes of shared memory per block";
  }
  if (!resident && tune.chunk && (tune.chunk % kTileK != 0 || tune.chunk > largest)) {
    return "chunk=" + std::to_string(tune.chunk) + " must be a multiple of " + std::to_string(kTileK) +
           " and at most " + std::to_string(largest) + " here";
  }
  p.chunk = static_cast<int>(!resident && tune.chunk ? tune.chunk : largest);
  p.b_ld = p.chunk + kRowPad;
  p.smem_bytes = w_bytes + buffers * row_bytes * p.b_ld + acc_bytes;
  return "";
}

//: Why a layer of this size has nothing to fuse, or "": every tiling divides by the batch and hidden sizes.
inline std::string check_sizes(const PlanInput& in) {
  if (in.batch <= 0 || in.hidden <= 0) {
    return "batch " + std::to_string(in.batch) + ", hidden " + std::to_string(in.hidden) +
           ": an empty layer has nothing to fuse (the loop returns its empty results)";
  }
  return "";
}

//: Why tune.threads cannot run the kernels, or "".
inline std::string check_threads(int threads) {
  if (threads % kWarpSize != 0 || threads < 2 * kWarpSize || threads > kMaxThreads) {
    return "threads=" + std::to_string(threads) + " must be a multiple of 32 in [64, " + std::to_string(kMaxThreads) +
           "]";
  }
  return "";
}

//: The persistent plan, or a refusal (path Loop) with its reason; plan_layer picks what runs then.
//: Pure: same input, same plan.
//: Forward passes whose W_hh fits in one thread-block cluster (in.max_cluster CTAs) take the cluster path: h is
//: exchanged through distributed shared memory and each step ends at a barrier of mbarriers in shared memory, far
//: cheaper than the grid-wide one (no L2 round trip; the cluster's CTAs are scheduled together). Everything else
//: that fits takes the grid path (one CTA per SM, exchange through L2, the counter barrier).
inline Plan plan_persistent(const PlanInput& in, const Tune& tune = {}) {
  Plan p;
  auto refuse = [&](std::string why) {
    p.path = Path::Loop;
    p.reason = std::move(why);
    return p;
  };
  if (tune.path == "step" || tune.path == "loop") {
    return refuse("FUSEDRNN_CUDA_TUNE asks for the " + tune.path + " path (path=" + tune.path + ")");
  }
  if (std::string why = check_sizes(in); !why.empty()) return refuse(why);
  if (in.projection) {
    return refuse("projection (proj_size): every step would need a second grid-wide exchange for W_hr h");
  }
  if (in.sm_count <= 0) return refuse("no SMs reported");
  p.threads = tune.threads ? tune.threads : kDefaultThreads;
  if (std::string why = check_threads(p.threads); !why.empty()) return refuse(why);
  // The backward pass has no cluster path (its dgates exchange is G times larger): cluster= applies to forwards.
  const bool forward = in.direction == Direction::Forward;
  const bool cluster_possible = forward && in.max_cluster > 0;
  if (forward && tune.cluster > 0) {
    if (!cluster_possible) {
      return refuse("cluster=" + std::to_string(tune.cluster) + ": this GPU has no thread-block clusters (sm_90)");
    }
    if (tune.cluster > in.max_cluster) {
      return refuse("cluster=" + std::to_string(tune.cluster) + " exceeds the largest cluster here (" +
                    std::to_string(in.max_cluster) + " CTAs)");
    }
  }
  if (cluster_possible && tune.cluster != 0 && tune.ctas == 0) {
    Plan c = p;
    const int64_t size = tune.cluster > 0 ? tune.cluster : std::min<int64_t>(in.max_cluster, in.hidden);
    std::string why = tile(c, in, tune, size, /*resident=*/true);
    if (why.empty()) {
      c.cluster = c.ctas;
      c.path = Path::Persistent;
      return c;
    }
    if (tune.cluster > 0) return refuse("cluster=" + std::to_string(tune.cluster) + ": " + why);
  }
  // The grid path: one CTA per SM by default (each takes most of an SM's shared memory; fewer CTAs make a cheaper
  // barrier).
  if (tune.ctas > in.sm_count) {
    return refuse("ctas=" + std::to_string(tune.ctas) + " exceeds the " + std::to_string(in.sm_count) + " SMs");
  }
  const int64_t wanted = tune.ctas ? tune.ctas : std::min<int64_t>(in.hidden, in.sm_count);
  std::string why = tile(p, in, tune, wanted, /*resident=*/false);
  if (!why.empty()) return refuse(why);
  p.path = Path::Persistent;
  require_co_resident(p, in.blocks_per_sm, in.sm_count);
  return p;
}

//: The per-step plan (the grid path's kernels, one launch per step), or a refusal (path Loop) with its reason.
//: No co-residency, so the grid may exceed the SMs: starting from the persistent grid's ceil(H / min(H, SMs)) hidden
//: units per CTA, the planner takes the most units per CTA that fit (fewest CTAs: every CTA stages all of h_{t-1} or
//: dgates_t from L2 each step); fewer units per CTA shrink every limit (states, output tiles, the W slice), so large
//: layers fit by spreading wider. The limits one unit per CTA still hits: batch (N <= 256 at 256 threads: N / 8
//: output tiles of one 16-row tile row, 4 per warp) and one 16-row W slice with a staged tile in shared memory.
inline Plan plan_step(const PlanInput& in, const Tune& tune = {}) {
  Plan p;
  auto refuse = [&](std::string why) {
    p.path = Path::Loop;
    p.reason = std::move(why);
    return p;
  };
  if (tune.path == "loop") return refuse("FUSEDRNN_CUDA_TUNE asks for the loop path (path=loop)");
  if (std::string why = check_sizes(in); !why.empty()) return refuse(why);
  if (in.projection) return refuse("projection (proj_size): the fused kernels have no W_hr step");
  p.threads = tune.threads ? tune.threads : kDefaultThreads;
  if (std::string why = check_threads(p.threads); !why.empty()) return refuse(why);
  auto fits = [&](Plan& q, int64_t units) { return tile(q, in, tune, ceil_div(in.hidden, units), false); };
  if (tune.ctas) {
    if (std::string why = tile(p, in, tune, tune.ctas, false); !why.empty()) return refuse(why);
  } else {
    // Binary search for the most units per CTA that fit, assuming fit is monotone in the units (it is up to the
    // K-split accumulators, a few KB; a plan found is checked by tile() either way).
    int64_t lo = 1, hi = ceil_div(in.hidden, std::max<int64_t>(1, std::min<int64_t>(in.hidden, in.sm_count)));
    if (std::string why = fits(p, lo); !why.empty()) return refuse(why);
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      Plan q = p;
      if (fits(q, mid).empty()) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    if (std::string why = fits(p, lo); !why.empty()) return refuse(why);  // unreachable: lo fitted
  }
  p.path = Path::Step;
  return p;
}

//: The plan of one layer direction: persistent where it fits (and FUSEDRNN_CUDA_TUNE allows), else per step, else
//: the loop. A step or loop plan's reason says why the faster paths were refused.
inline Plan fall_back(const PlanInput& in, const Tune& tune, const std::string& why_not_persistent) {
  Plan step = plan_step(in, tune);
  step.reason = step.path == Path::Step ? why_not_persistent
                                        : why_not_persistent + "; per step: " + step.reason;
  return step;
}

inline Plan plan_layer(const PlanInput& in, const Tune& tune = {}) {
  Plan p = plan_persistent(in, tune);
  return p.persistent() ? p : fall_back(in, tune, p.reason);
}

//: A fused (persistent or per-step) plan as "key=value,..." (the names of Tiling's fields).
inline std::string describe(const Plan& p) {
  const std::pair<const char*, int64_t> fields[] = {
      {"ctas", p.ctas},   {"threads", p.threads}, {"units", p.units}, {"m", p.m},         {"m_pad", p.m_pad},
      {"n_pad", p.n_pad}, {"k", p.k},             {"k_pad", p.k_pad}, {"chunk", p.chunk}, {"ksplit", p.ksplit},
      {"w_ld", p.w_ld},   {"b_ld", p.b_ld},       {"smem_bytes", p.smem_bytes},           {"cluster", p.cluster}};
  std::string out;
  for (const auto& [name, value] : fields) out += (out.empty() ? "" : ",") + std::string(name) + "=" + std::to_string(value);
  return out;
}

}  // namespace fusedrnn::persistent
