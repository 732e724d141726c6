// Device building blocks of the persistent kernels (persistent_forward.cu, persistent_backward.cu):
//   Storage<S>     the storage dtypes, their accumulate type and conversions;
//   matmul_step    one step's [m, k] x [k, N] product of the resident W slice (shared memory) with an operand every
//                  CTA reads from global memory/L2 (h_{t-1} or dgates_t), staged through shared memory in K chunks,
//                  on tensor cores (mma.sync m16n8k16, fp32 accumulate) for fp16/bf16, TF32 tensor cores or FFMA for
//                  fp32 (torch.backends.cudnn.allow_tf32), FFMA for fp64;
//   grid_barrier   one release/acquire arrival counter per launch, with a bounded wait that sets an error flag;
//   store_to_cluster_rank, cluster_barrier   the cluster path's exchange (distributed shared memory) and barrier.
// CUDA headers only (no ATen): these files are the slow ones to compile.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "persistent.h"
#include "step.h"

namespace fusedrnn::persistent {

//: Spins between two looks at the error flag and the clock (both cost an extra load each).
constexpr int kSpinsPerCheck = 64;

template <class S>
struct Storage;
template <>
struct Storage<__half> {
  using Acc = float;
  static constexpr bool kTensorCores = true;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Storage<__nv_bfloat16> {
  using Acc = float;
  static constexpr bool kTensorCores = true;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Storage<float> {
  using Acc = float;
  static constexpr bool kTensorCores = false;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <>
struct Storage<double> {
  using Acc = double;
  static constexpr bool kTensorCores = false;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
};

template <class S>
using AccOf = typename Storage<S>::Acc;

template <Mode kMode>
constexpr int kGates = kMode == Mode::LSTM ? 4 : kMode == Mode::GRU ? 3 : 1;

//: An unsigned integer as wide as S: data written by other CTAs during the launch is read through L2 (ld.global.cg)
//: as raw bits, so L1 never serves a stale copy.
template <int kBytes>
struct Bits;
template <>
struct Bits<2> {
  using type = unsigned short;
};
template <>
struct Bits<4> {
  using type = unsigned int;
};
template <>
struct Bits<8> {
  using type = unsigned long long;
};

template <class S>
__device__ __forceinline__ S load_cg(const S* p) {
  using B = typename Bits<sizeof(S)>::type;
  const B bits = __ldcg(reinterpret_cast<const B*>(p));
  S v;
  memcpy(&v, &bits, sizeof(S));
  return v;
}

//: Bs[n][kk] = src[n * ld + k0 + kk] for kk < width, zero outside [0, N) x [0, K). 16-byte loads when `vector`
//: (src 16-byte aligned, ld and K multiples of 16 bytes; width and k0 are multiples of kTileK).
template <class S>
__device__ __forceinline__ void stage(S* Bs, const Tiling& tl, const S* src, int64_t ld, int N, int K, int k0,
                                      int width, bool vector) {
  if (vector) {
    constexpr int V = 16 / sizeof(S);
    const int per_row = width / V;
    for (int i = threadIdx.x; i < tl.n_pad * per_row; i += blockDim.x) {
      const int n = i / per_row, kk = (i % per_row) * V;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (n < N && k0 + kk < K) v = __ldcg(reinterpret_cast<const uint4*>(src + n * ld + k0 + kk));
      *reinterpret_cast<uint4*>(Bs + n * tl.b_ld + kk) = v;
    }
  } else {
    for (int i = threadIdx.x; i < tl.n_pad * width; i += blockDim.x) {
      const int n = i / width, kk = i % width;
      S v = Storage<S>::store(AccOf<S>(0));
      if (n < N && k0 + kk < K) v = load_cg(src + n * ld + k0 + kk);
      Bs[n * tl.b_ld + kk] = v;
    }
  }
}

__device__ __forceinline__ uint32_t lds32(const void* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

template <class S>
__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<S, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

//: fp32 rounded to TF32 (round to nearest, ties away), as the tensor cores read it.
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

//: c += A[16 x 8] B[8 x 8] on tensor cores in TF32 (fp32 accumulate); a, b as in tile_16x8x16.
__device__ __forceinline__ void mma_tf32_1688(float (&c)[4], const float* a, int w_ld, const float* b, int b_ld,
                                              int g, int q) {
  const float* ap = a + g * w_ld + q;
  const float* bp = b + g * b_ld + q;
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(to_tf32(ap[0])), "r"(to_tf32(ap[8 * w_ld])), "r"(to_tf32(ap[4])), "r"(to_tf32(ap[8 * w_ld + 4])),
        "r"(to_tf32(bp[0])), "r"(to_tf32(bp[4])));
}

//: c += A[16 x 16] B[16 x 8] for one warp; a: A's top-left in shared memory (row stride w_ld, K contiguous),
//: b: B's top-left (stored as [n][k], row stride b_ld). Lane (g = lane / 4, q = lane % 4) holds c at rows g, g+8
//: and columns 2q, 2q+1 (the mma.sync accumulator layout, which the FFMA version reproduces). tf32 (fp32 only):
//: tensor cores in TF32, as torch.nn's cuDNN RNNs when torch.backends.cudnn.allow_tf32 is on.
template <class S>
__device__ __forceinline__ void tile_16x8x16(AccOf<S> (&c)[4], const S* a, int w_ld, const S* b, int b_ld,
                                             int lane, bool tf32) {
  const int g = lane >> 2, q = lane & 3;
  if constexpr (std::is_same_v<S, float>) {
    if (tf32) {
      mma_tf32_1688(c, a, w_ld, b, b_ld, g, q);
      mma_tf32_1688(c, a + 8, w_ld, b + 8, b_ld, g, q);
      return;
    }
  }
  if constexpr (Storage<S>::kTensorCores) {
    const S* ap = a + g * w_ld + 2 * q;
    const S* bp = b + g * b_ld + 2 * q;
    mma_16816<S>(c, lds32(ap), lds32(ap + 8 * w_ld), lds32(ap + 8), lds32(ap + 8 * w_ld + 8), lds32(bp),
                 lds32(bp + 8));
  } else {
    const S* a_lo = a + g * w_ld;
    const S* a_hi = a_lo + 8 * w_ld;
    const S* b0 = b + (2 * q) * b_ld;
    const S* b1 = b0 + b_ld;
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      c[0] += a_lo[kk] * b0[kk];
      c[1] += a_lo[kk] * b1[kk];
      c[2] += a_hi[kk] * b0[kk];
      c[3] += a_hi[kk] * b1[kk];
    }
  }
}

//: acc_s[ks][m][n] (ks < tl.ksplit, summed by sum_partials) = sum over k of Ws[m][k] * src[n][k]: the resident
//: slice Ws [m_pad][w_ld] times the operand src [N][ld] (K columns) that other CTAs wrote this step.
//: Warp w computes output tiles (w / ksplit) + i * groups for i < kMaxTilesPerWarp over every ksplit-th K tile.
//: kStaged (grid path): src is in global memory and is staged into Bs chunk by chunk, with __syncthreads around
//: each chunk; otherwise (cluster path) Bs already holds all of it (tl.chunk == tl.k_pad) and src is unused.
template <class S, bool kStaged = true>
__device__ __forceinline__ void matmul_step(const Tiling& tl, const S* Ws, S* Bs, AccOf<S>* acc_s, const S* src,
                                            int64_t ld, int N, int K, bool vector, bool tf32) {
  using A = AccOf<S>;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int ksub = warp % tl.ksplit, group = warp / tl.ksplit, groups = (blockDim.x / kWarpSize) / tl.ksplit;
  const int n_tiles = tl.n_pad / kTileN, tiles = (tl.m_pad / kTileM) * n_tiles;
  A c[kMaxTilesPerWarp][4];
#pragma unroll
  for (int i = 0; i < kMaxTilesPerWarp; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = A(0);
  for (int k0 = 0; k0 < tl.k_pad; k0 += tl.chunk) {
    const int width = min(tl.chunk, tl.k_pad - k0);
    if constexpr (kStaged) {
      stage(Bs, tl, src, ld, N, K, k0, width, vector);
      __syncthreads();
    }
    if (group < groups) {
#pragma unroll
      for (int i = 0; i < kMaxTilesPerWarp; ++i) {
        const int tile = group + i * groups;
        if (tile < tiles) {
          const S* a = Ws + (tile / n_tiles) * kTileM * tl.w_ld + k0;
          const S* b = Bs + (tile % n_tiles) * kTileN * tl.b_ld;
          const int stride = kTileK * tl.ksplit;
          int kk = ksub * kTileK;
          if constexpr (Storage<S>::kTensorCores) {
            // Two accumulator chains: back-to-back mma.sync on one accumulator wait for each other's result.
            A other[4] = {A(0), A(0), A(0), A(0)};
            for (; kk + stride < width; kk += 2 * stride) {
              tile_16x8x16<S>(c[i], a + kk, tl.w_ld, b + kk, tl.b_ld, lane, false);
              tile_16x8x16<S>(other, a + kk + stride, tl.w_ld, b + kk + stride, tl.b_ld, lane, false);
            }
            if (kk < width) tile_16x8x16<S>(c[i], a + kk, tl.w_ld, b + kk, tl.b_ld, lane, false);
#pragma unroll
            for (int j = 0; j < 4; ++j) c[i][j] += other[j];
          } else {
            for (; kk < width; kk += stride) tile_16x8x16<S>(c[i], a + kk, tl.w_ld, b + kk, tl.b_ld, lane, tf32);
          }
        }
      }
    }
    if constexpr (kStaged) __syncthreads();  // Bs is restaged by the next chunk
  }
  if (group < groups) {
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i) {
      const int tile = group + i * groups;
      if (tile < tiles) {
        const int row = (tile / n_tiles) * kTileM + g, col = (tile % n_tiles) * kTileN + 2 * q;
        A* out = acc_s + (static_cast<int64_t>(ksub) * tl.m_pad + row) * tl.n_pad + col;
        out[0] = c[i][0];
        out[1] = c[i][1];
        out[8 * tl.n_pad] = c[i][2];
        out[8 * tl.n_pad + 1] = c[i][3];
      }
    }
  }
}

//: Row m, column n of the last matmul_step (its K-split partial sums, added in a fixed order: deterministic).
//: Call after a __syncthreads that follows matmul_step.
template <class A>
__device__ __forceinline__ A sum_partials(const Tiling& tl, const A* acc_s, int m, int n) {
  A sum = A(0);
  for (int ks = 0; ks < tl.ksplit; ++ks) sum += acc_s[(static_cast<int64_t>(ks) * tl.m_pad + m) * tl.n_pad + n];
  return sum;
}

__device__ __forceinline__ unsigned long long load_acquire(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

//: Whether a barrier wait begun at `start` must give up: the error flag was set elsewhere, or this wait timed out
//: (then it sets the flag, so that every other CTA gives up too). Thread 0 only.
__device__ __forceinline__ bool wait_failed(const Barrier& barrier, unsigned long long start) {
  if (load_relaxed(barrier.words + 1) != 0) return true;
  if (global_timer_ns() - start > barrier.timeout_ns) {
    atomicExch(barrier.words + 1, 1ull);
    return true;
  }
  return false;
}

//: The grid-wide barrier ending a step: returns once all gridDim.x CTAs have arrived `round` times in total, or
//: false (in every thread of the CTA) when a wait timed out here or the error flag was set elsewhere; the kernel
//: must then return. Every CTA must be resident (cooperative launch), or the wait times out.
//: Ordering: __syncthreads makes the CTA's global writes of this step visible to thread 0 (bar.sync), whose
//: __threadfence + atomicAdd publishes them (release, cumulative); its ld.acquire.gpu of the counter and the second
//: __syncthreads order every thread's later loads after the other CTAs' writes (which are read with ld.global.cg).
__device__ __forceinline__ bool grid_barrier(const Barrier& barrier, unsigned long long round, int& abort_flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(barrier.words, 1ull);
    const unsigned long long target = round * gridDim.x;
    const unsigned long long start = global_timer_ns();
    int abort = 0;
    for (int spin = 1; load_acquire(barrier.words) < target; ++spin) {
      if (spin % kSpinsPerCheck == 0 && wait_failed(barrier, start)) {
        abort = 1;
        break;
      }
    }
    abort_flag = abort;
  }
  __syncthreads();
  return abort_flag == 0;
}

//: The cluster path's exchange and barrier (sm_90; the sm_80 build compiles them to a trap, and the planner never
//: picks the cluster path there).
//: *local_ptr in the shared memory of the cluster's CTA `rank` = v (distributed shared memory).
template <class S>
__device__ __forceinline__ void store_to_cluster_rank(S* local_ptr, S v, unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(local_ptr));
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  typename Bits<sizeof(S)>::type bits;
  memcpy(&bits, &v, sizeof(S));
  if constexpr (sizeof(S) == 2) {
    asm volatile("st.shared::cluster.b16 [%0], %1;" ::"r"(remote), "h"(bits) : "memory");
  } else if constexpr (sizeof(S) == 4) {
    asm volatile("st.shared::cluster.b32 [%0], %1;" ::"r"(remote), "r"(bits) : "memory");
  } else {
    asm volatile("st.shared::cluster.b64 [%0], %1;" ::"r"(remote), "l"(bits) : "memory");
  }
#else
  __trap();
#endif
}

//: Every thread of every CTA in the cluster: arrive (release: this thread's shared and distributed shared memory
//: writes) and wait (acquire). Also a full __syncthreads of the CTA. It has no bound, so the kernel uses it only once,
//: at the start (every CTA of a cluster is scheduled at once), and cluster_step_barrier between steps.
__device__ __forceinline__ void cluster_barrier() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // .aligned requires every thread of the warp to execute this same instruction: reconverge the warp first (the
  // caller may come from divergent code, and the compiler does not guarantee reconvergence before inline asm).
  __syncwarp();
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();
#endif
}

//: The cluster path's step barrier, bounded as grid_barrier is: mbarriers in every CTA's shared memory, on which
//: each CTA of the cluster arrives once per step; a CTA waits on its own. (barrier.cluster cannot be polled, so a
//: CTA that missed it would hang the launch until the process is killed.)
//: Two mbarriers per CTA, used by alternate steps: an arrival counts towards an mbarrier's current phase, and a CTA's
//: arrivals on different CTAs are unordered, so with one mbarrier a CTA that has passed step k could arrive for step
//: k + 1 on a third CTA before another CTA's step-k arrival lands there, completing that phase without it. An
//: arrival on mbarrier k % 2 for step k + 2 needs its sender to have passed step k + 1, which needs every CTA's
//: arrival for step k + 1, made after each passed step k: so every phase counts exactly its step's arrivals.
constexpr int kClusterStepBarriers = 2;

//: init: thread 0 of each CTA, before the kernel's first cluster_barrier(), which makes every CTA's mbarriers
//: initialised before any other CTA arrives on them. mbar: kClusterStepBarriers mbarriers.
__device__ __forceinline__ void cluster_step_barrier_init(unsigned long long* mbar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0) {
    for (int b = 0; b < kClusterStepBarriers; ++b) {
      const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(mbar + b));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(local), "r"(gridDim.x) : "memory");
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
#else
  __trap();
#endif
}

//: The barrier ending step `round` (0 for the first of the launch): returns once every CTA of the cluster has
//: arrived, or false (in every thread of the CTA) when the wait timed out here or the error flag was set elsewhere;
//: the kernel must then call cluster_barrier() and return (its results are invalid and the host raises). That final
//: hardware barrier keeps the CTA, and its shared memory, alive until every CTA of the cluster has stopped storing
//: into it: a CTA whose shared memory another CTA accesses after it exited is an illegal access, a sticky error
//: that would break every later CUDA call of the process. It cannot hang: CTAs that returned normally count as
//: arrived (exit), and every other CTA fails its next wait (the flag) and joins it.
//: Ordering: __syncthreads orders the CTA's stores of the step (into every CTA's buffers) and its reads of this step's
//: buffer before the arrivals; thread r's mbarrier.arrive.release.cluster on CTA r's mbarrier publishes them
//: (release, cumulative through bar.sync); thread 0's try_wait.acquire.cluster on its own, then __syncthreads,
//: orders every thread's later shared-memory reads after the other CTAs' stores. Phase `round` of each mbarrier
//: completes with the cluster's gridDim.x arrivals; a CTA cannot arrive for the next phase before its own wait of
//: this one ended, so no mbarrier runs more than one phase ahead of a waiter (parity is enough). mbar:
//: kClusterStepBarriers mbarriers (see there).
__device__ __forceinline__ bool cluster_step_barrier(unsigned long long* mbar, unsigned round, const Barrier& barrier,
                                                     int& abort_flag) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __syncthreads();
  const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(mbar + round % kClusterStepBarriers));
  const unsigned parity = (round / kClusterStepBarriers) & 1u;
  if (threadIdx.x < gridDim.x) {  // the cluster is the grid: thread r arrives on CTA r's mbarrier
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(threadIdx.x));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
  }
  if (threadIdx.x == 0) {
    const unsigned long long start = global_timer_ns();
    int abort = 0;
    for (int spin = 1;; ++spin) {
      unsigned done;
      // try_wait suspends the thread for up to a hardware-defined time when the phase is not complete yet.
      asm volatile(
          "{\n\t.reg .pred p;\n\t"
          "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
          "selp.u32 %0, 1, 0, p;\n\t}"
          : "=r"(done)
          : "r"(local), "r"(parity)
          : "memory");
      if (done) break;
      if (spin % kSpinsPerCheck == 0 && wait_failed(barrier, start)) {  // the flag and clock: slower than a poll
        abort = 1;
        break;
      }
    }
    abort_flag = abort;
  }
  __syncthreads();
  return abort_flag == 0;
#else
  __trap();
  return false;
#endif
}

//: The (batch row, hidden unit) of register state e of this thread: unit index fastest, so neighbouring threads
//: touch neighbouring columns of [N, H] tensors.
struct StateIndex {
  int n, u;
  bool active;
};

__device__ __forceinline__ StateIndex state_index(int e, int units_here, int units, int N) {
  const int i = threadIdx.x + e * blockDim.x;
  StateIndex s{i / units, i % units, false};
  s.active = s.n < N && s.u < units_here;
  return s;
}

}  // namespace fusedrnn::persistent
