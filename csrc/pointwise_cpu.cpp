// CPU pointwise pass: at::parallel_for over batch rows, at::vec::Vectorized lanes over hidden units; and the per-step
// recurrent GEMM, split by output columns over the threads, each part a single-threaded BLAS call.
//
// On x86-64 the extension is compiled with -mavx2 -mfma (setup.py, fusedrnn/_extension.py); ATen's vector types
// then live in their at::vec::AVX2 namespace, so nothing here collides with default-capability copies in libtorch.
// The loader refuses to import the extension on a CPU without AVX2. Elsewhere the portable vector fallback is used.
#if defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "pointwise.h"

namespace fusedrnn {
namespace {

//: rational_tanh's fitted range and the |x| below which it returns x (tanh(x) = x in float there).
constexpr float kRationalTanhClamp = 7.90531110763549805f;
constexpr float kRationalTanhTiny = 0.0004f;

//: Vectorized primitives with the same names as ScalarMath (cell_math.h).
struct VecMath {
  //: exp_u20: ATen's polynomial exp (about 20 ulp in float, 3x cheaper than SLEEF's; float64 keeps the exact exp).
  //: The sigmoids were the largest part of the LSTM step at small batch.
  template <class V>
  static V sigmoid(V x) {
    return V(1) / (V(1) + x.neg().exp_u20());
  }
  //: float: a [13/6] rational approximation (Eigen's fast tanh, max error 6 ulp), a few FMAs and one division;
  //: SLEEF's expm1 below was the largest single cost of the LSTM step in float (perf: as much as each GEMM).
  //: double: tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1], the sign put back. One exp: SLEEF's
  //: double expm1 (used here before) cost ~4x its exp and was the largest single cost of the float64 LSTM step
  //: (perf, N=97 H=51). The absolute error stays within a few ulp of 1; near 0 the relative error grows
  //: (1 - e cancels), as it does not matter next to the O(1) states it is added to.
  template <class V>
  static V tanh(V x) {
    if constexpr (std::is_same_v<typename V::value_type, float>) {
      return rational_tanh(x);
    } else {
      const V e = (x.abs() * V(-2)).exp();
      const V magnitude = (V(1) - e) / (V(1) + e);
      return V::blendv(magnitude, magnitude.neg(), x < V(0));
    }
  }
  template <class V>
  static V rational_tanh(V x) {
    // Odd numerator and even denominator coefficients, fitted on [-kRationalTanhClamp, kRationalTanhClamp]; beyond
    // the clamp the quotient is 1 to float precision. Below kRationalTanhTiny, tanh(x) = x in float.
    const V clamped = at::vec::clamp(x, V(-kRationalTanhClamp), V(kRationalTanhClamp));
    const V x2 = clamped * clamped;
    V p = V(-2.76076847742355e-16f);
    for (float a : {2.00018790482477e-13f, -8.60467152213735e-11f, 5.12229709037114e-08f, 1.48572235717979e-05f,
                    6.37261928875436e-04f, 4.89352455891786e-03f}) {
      p = at::vec::fmadd(p, x2, V(a));
    }
    V q = V(1.19825839466702e-06f);
    for (float b : {1.18534705686654e-04f, 2.26843463243900e-03f, 4.89352518554385e-03f}) {
      q = at::vec::fmadd(q, x2, V(b));
    }
    return V::blendv(clamped * p / q, x, x.abs() < V(kRationalTanhTiny));
  }
  template <class V>
  static V relu(V x) {
    return at::vec::maximum(x, V(0));  // propagates NaN, as torch.relu
  }
  template <class V>
  static V relu_backward(V y, V dy) {
    return V::blendv(V(0), dy, y > V(0));
  }
};

//: `count` consecutive elements (count <= V::size()); the tail of a row is a partial lane.
template <class S>
struct VecLane {
  using V = at::vec::Vectorized<S>;
  int64_t count;
  V load(const S* p) const { return V::loadu(p, count); }
  void store(S* p, const V& v) const { v.store(p, count); }
  V zero() const { return V(S(0)); }
};

//: Rows of one input-projection / weight-gradient GEMM: BLAS reaches its large-GEMM speed well below this, and the
//: chunk's buffers (rows x G*H) stay small enough to be reused from cache.
constexpr int64_t kGemmRows = 1024;

//: Rows per parallel task: enough elements that a task outweighs the thread hand-off (~a few microseconds).
constexpr int64_t kElementsPerTask = 16384;

template <class S, class Step, class Body>
void for_each_lane(const Step& s, Body body) {
  using V = at::vec::Vectorized<S>;
  // max(1, ...): a hidden size of 0 (torch.nn allows it for cells) must not divide by zero.
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, s.H * gates_of(s.mode)));
  at::parallel_for(0, s.N, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t j = 0; j < s.H; j += V::size()) {
        body(VecLane<S>{std::min<int64_t>(V::size(), s.H - j)}, n, j);
      }
    }
  });
}

void forward_cpu(const ForwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_forward_cpu", [&] {
    for_each_lane<scalar_t>(s, [&](const auto& lane, int64_t n, int64_t j) {
      forward_element<VecMath, scalar_t>(s, lane, n, j);
    });
  });
}

void backward_cpu(const BackwardStep& s, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES(dtype, "fusedrnn_backward_cpu", [&] {
    for_each_lane<scalar_t>(s, [&](const auto& lane, int64_t n, int64_t j) {
      backward_element<VecMath, scalar_t>(s, lane, n, j);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The per-step recurrent GEMM. Through at::mm a step paid the dispatcher and tensor bookkeeping (microseconds, when a
// whole step at N <= 16 is ~10 us), and MKL's own two-thread split of these small GEMMs reached 53-229 GFLOP/s where
// two single-threaded halves reach 2x its one-thread 46-153 (measured, N=1..64, H=128..512). So the columns of c are
// split over at::parallel_for and each part is one call to the BLAS that libtorch itself uses.

//: Fortran BLAS ?gemm_ with 32-bit integers (MKL's LP64 interface, the one libtorch links).
template <class S>
using BlasGemm = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                          const S* alpha, const S* a, const int* lda, const S* b, const int* ldb, const S* beta, S* c,
                          const int* ldc);

//: sgemm_/dgemm_ as exported by the libtorch_cpu this process loaded, or null (a torch built without MKL). Looked up
//: in that library only, so another BLAS in the process (e.g. one with 64-bit integers) is never picked up.
template <class S>
BlasGemm<S> libtorch_blas_gemm() {
  static const BlasGemm<S> gemm = []() -> BlasGemm<S> {
    if (!at::hasMKL()) return nullptr;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&at::Context::hasMKL), &info) == 0 || info.dli_fname == nullptr) return nullptr;
    void* library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (library == nullptr) return nullptr;
    void* symbol = dlsym(library, std::is_same_v<S, float> ? "sgemm_" : "dgemm_");
    dlclose(library);  // RTLD_NOLOAD only took a reference; libtorch stays loaded
    return reinterpret_cast<BlasGemm<S>>(symbol);
  }();
  return gemm;
}

//: Multiply-adds per parallel task (~10 us on one core) below which the GEMM stays one BLAS call with BLAS's own
//: threading: splitting the batch-1..16 GEMMs (~0.25M multiply-adds) measured no faster.
constexpr int64_t kMinMacsPerTask = 1 << 20;
//: Column blocks are multiples of this (a 64-byte cache line of float), so no two threads write one line.
constexpr int64_t kColumnAlign = 16;

bool fits_int(std::initializer_list<int64_t> values) {
  return std::all_of(values.begin(), values.end(), [](int64_t v) { return v >= 0 && v <= INT_MAX; });
}

bool step_gemm_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  const int64_t M = a.size(0), K = a.size(1), C = b.size(1);
  // Column-major BLAS on row-major data: c^T [C, M] = op(b)^T [C, K] a^T [K, M]. b is either row-major (its
  // memory is b^T, column-major) or a transposed view of a row-major [C, K] matrix (its memory is b, column-major).
  const bool b_transposed = b.stride(1) != 1;
  const int64_t ldb = b_transposed ? b.stride(1) : b.stride(0);
  const bool layout_ok = a.stride(1) == 1 && c.stride(1) == 1 && (!b_transposed || b.stride(0) == 1) &&
                         a.stride(0) >= std::max<int64_t>(1, K) && c.stride(0) >= std::max<int64_t>(1, C) &&
                         ldb >= std::max<int64_t>(1, b_transposed ? K : C);
  if (!layout_ok || M == 0 || C == 0 || K == 0 || !fits_int({M, K, C, a.stride(0), ldb, c.stride(0)})) return false;
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "fusedrnn_step_gemm_cpu", [&] {
    const BlasGemm<scalar_t> gemm = libtorch_blas_gemm<scalar_t>();
    if (gemm == nullptr) return;
    const int64_t threads = at::get_num_threads();
    const int64_t per_thread = std::max((C + threads - 1) / threads, kMinMacsPerTask / (M * K));
    const int64_t block = std::min((per_thread + kColumnAlign - 1) / kColumnAlign * kColumnAlign, C);
    const int64_t blocks = (C + block - 1) / block;
    const scalar_t* a_ptr = a.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.const_data_ptr<scalar_t>();
    scalar_t* c_ptr = c.mutable_data_ptr<scalar_t>();
    const scalar_t alpha = 1, beta = accumulate ? 1 : 0;
    const char ta = b_transposed ? 'T' : 'N', tb = 'N';
    const int n = static_cast<int>(M), k = static_cast<int>(K), lda = static_cast<int>(ldb);
    const int ldb_a = static_cast<int>(a.stride(0)), ldc = static_cast<int>(c.stride(0));
    // Inside an at::parallel_for task BLAS runs single-threaded (it does not nest into an active OpenMP region).
    at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
      const int64_t begin = first * block, end = std::min(last * block, C);
      const int m = static_cast<int>(end - begin);
      const scalar_t* b_part = b_ptr + begin * (b_transposed ? ldb : 1);
      gemm(&ta, &tb, &m, &n, &k, &alpha, b_part, &lda, a_ptr, &ldb_a, &beta, c_ptr + begin, &ldc);
    });
    done = true;
  });
  return done;
}

}  // namespace

const Pointwise& cpu_pointwise() {
  static const Pointwise pointwise{forward_cpu, backward_cpu, kGemmRows, step_gemm_cpu};
  return pointwise;
}

}  // namespace fusedrnn
