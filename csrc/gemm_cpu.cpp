// The CPU backend's GEMMs: oneDNN's matmul against weights prepared once per call (Pointwise::prepared_gemm), and the
// per-step BLAS GEMM (Pointwise::step_gemm) for what oneDNN does not run (float64, a torch built without it).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "cpu_buffers.h"
#include "gemm_cpu.h"

namespace fusedrnn {
namespace {

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

}  // namespace

bool step_gemm_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  // sgemm_/dgemm_ serve float and double; bfloat16 and float16 decline, and the host loop calls ATen's GEMM (oneDNN:
  // AVX512-BF16 or AMX where the CPU has them).
  if (c.scalar_type() != at::kFloat && c.scalar_type() != at::kDouble) return false;
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

void headwise_gemm_cpu(c10::ScalarType dtype, int64_t heads, int64_t gates, int64_t M, int64_t K, int64_t C,
                       HeadOperand a, HeadOperand b, HeadOperand c, bool accumulate) {
  TORCH_CHECK(!c.transposed, "fusedrnn: headwise_gemm_cpu writes c row-major");
  const int64_t products = heads * gates;
  if (products == 0 || M == 0 || C == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "fusedrnn_headwise_gemm_cpu", [&] {
    BlasGemm<scalar_t> gemm = nullptr;
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
      gemm = libtorch_blas_gemm<scalar_t>();
    }
    const bool blas = gemm != nullptr && K > 0 && fits_int({M, K, C, a.ld, b.ld, c.ld});
    auto block = [&](const HeadOperand& o, int64_t i) {  // product i = k * gates + g
      return const_cast<scalar_t*>(static_cast<const scalar_t*>(o.p)) + (i / gates) * o.head_stride +
             (i % gates) * o.gate_stride;
    };
    auto one_product = [&](int64_t i) {
      scalar_t* c_i = block(c, i);
      if (!blas) {  // ATen's GEMM on views of the same memory
        const auto options = at::TensorOptions().dtype(dtype);
        auto view = [&](const HeadOperand& o, int64_t rows, int64_t cols) {
          return o.transposed ? at::from_blob(block(o, i), {cols, rows}, {o.ld, 1}, options).t()
                              : at::from_blob(block(o, i), {rows, cols}, {o.ld, 1}, options);
        };
        at::Tensor out = at::from_blob(c_i, {M, C}, {c.ld, 1}, options);
        if (accumulate) {
          out.addmm_(view(a, M, K), view(b, K, C));
        } else {
          at::mm_out(out, view(a, M, K), view(b, K, C));
        }
        return;
      }
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        // Column-major BLAS on row-major data: c^T [C, M] = b^T [C, K] a^T [K, M]; a row-major operand's memory is
        // its transpose in column-major order ('N'), a transposed one's is the operand itself ('T').
        const char tb = b.transposed ? 'T' : 'N', ta = a.transposed ? 'T' : 'N';
        const int m = static_cast<int>(C), n = static_cast<int>(M), kk = static_cast<int>(K);
        const int ldb = static_cast<int>(b.ld), lda = static_cast<int>(a.ld), ldc = static_cast<int>(c.ld);
        const scalar_t alpha = 1, beta = accumulate ? 1 : 0;
        gemm(&tb, &ta, &m, &n, &kk, &alpha, block(b, i), &ldb, block(a, i), &lda, &beta, c_i, &ldc);
      }
    };
    // Products in parallel tasks of at least kMinMacsPerTask (one product per task at large batch); a single task
    // runs on the calling thread, outside any parallel region, where BLAS may use torch's threads itself.
    const int64_t grain = std::max<int64_t>(1, kMinMacsPerTask / std::max<int64_t>(1, M * K * C));
    at::parallel_for(0, products, grain, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) one_product(i);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// oneDNN. libtorch's BLAS is MKL, whose sgemm runs its AVX2 code on AMD CPUs: measured on a 2-core AMD EPYC (Zen 5,
// AVX-512), one thread, fp32, it reached 90-100 GFLOP/s on the LSTM's GEMMs where oneDNN's JIT kernels (what
// torch.nn's fused LSTM runs on) reached 190-235, and 140 vs 45 GFLOP/s for the GEMV-like [4, 512] x [512, 2048] step
// once W_hh^T is reordered into oneDNN's blocked layout. oneDNN's C API is not exported by libtorch; its linear
// operators are, through the dispatcher: mkldnn::_reorder_linear_weight (the one-time reorder, as oneDNN's LSTM does
// with its weights) and mkldnn::_linear_pointwise (x w^T + b, threaded by oneDNN over torch's OpenMP threads, so
// torch.set_num_threads holds and no thread pool of ours exists).

namespace {

//: The operators' C++ signatures (their schemas: `mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr,
//: Scalar?[] scalars, str? algorithm)`, `mkldnn::_reorder_linear_weight(Tensor self, int? batch_size)`).
using LinearFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, c10::string_view,
                            c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>);
using ReorderFn = at::Tensor(const at::Tensor&, std::optional<int64_t>);

//: The dispatcher's handle of a registered operator, or none (a torch built without oneDNN).
std::optional<c10::OperatorHandle> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchema({name, ""});
}

const std::optional<c10::OperatorHandle>& linear_op() {
  static const std::optional<c10::OperatorHandle> op = find_op("mkldnn::_linear_pointwise");
  return op;
}

const std::optional<c10::OperatorHandle>& reorder_op() {
  static const std::optional<c10::OperatorHandle> op = find_op("mkldnn::_reorder_linear_weight");
  return op;
}

//: Multiply-adds of a product below which BLAS stays faster: each oneDNN call through the dispatcher costs ~12 us
//: (measured, one thread: [1, 128] x [128, 512] 14 us vs MKL's 3 us, [1, 256] x [256, 1024] 27 vs 13, [2, 256] x
//: [256, 1024] 27 vs 25; from [4, 256] x [256, 1024] on, oneDNN's reordered weights won, 28 vs 58 us).
constexpr int64_t kMinPreparedMacs = 1 << 20;

//: Whether oneDNN runs bfloat16 natively here (AVX512-BF16; AMX CPUs have it too). Measured on the 2-core AMD EPYC
//: (Zen 5), 2 threads: the reordered [N, 512] x [512, 2048] bf16 product took 28 us at N=4 and 155 us at N=64, where
//: ATen's bf16 mm took 77-90 and 224-243 us. Without the instructions oneDNN would emulate them: ATen's mm stays.
//: oneDNN's own answer too (mkldnn::_is_mkldnn_bf16_supported): capped below AVX-512 (ONEDNN_MAX_CPU_ISA=AVX2, an
//: AVX2-only CPU approximated on this one) it has no bfloat16 path, and its weight reorder raises.
bool cpu_has_native_bf16() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) return false;
  const std::optional<c10::OperatorHandle> onednn = find_op("mkldnn::_is_mkldnn_bf16_supported");
  return onednn && onednn->typed<bool()>().call();
#else
  return false;
#endif
}

//: The storage dtypes that take oneDNN's path: float, and bfloat16 where the CPU computes it natively. float64 (and
//: float16, which this CPU family has no native instructions for) stay on BLAS / ATen.
bool prepared_dtype(at::ScalarType dtype) {
  static const bool bf16 = cpu_has_native_bf16();
  return dtype == at::kFloat || (dtype == at::kBFloat16 && bf16);
}

//: Side of the square tiles of transposed(): a 32 x 32 tile of floats is 32 source and 32 destination cache lines,
//: which stay in L1 while the tile is copied.
constexpr int64_t kTransposeTile = 32;

//: w [R, C], the transpose of a contiguous [C, R] matrix (the backward's W^T), as a contiguous copy. ATen's strided
//: copy (w.contiguous()) took 1.4-5.7 ms for a float W_ih^T [512, 2048] on the 2-core AMD EPYC (Zen 4), longer than
//: the reorder after it (0.7 ms); these tiles took 1.3-2.3 ms in the LSTM backward, oneDNN's reorder from the
//: strided view 4-6.
template <class Element>
at::Tensor transposed(const at::Tensor& w) {
  const int64_t R = w.size(0), C = w.size(1);
  at::Tensor out = recycled_empty({R, C}, w.options());  // a temporary: reordered, or multiplied and dropped
  const auto* src = static_cast<const Element*>(w.const_data_ptr());  // src[c * R + r] = w[r, c]
  auto* dst = static_cast<Element*>(out.mutable_data_ptr());
  const int64_t row_tiles = (R + kTransposeTile - 1) / kTransposeTile;
  at::parallel_for(0, row_tiles, 1, [&](int64_t first, int64_t last) {
    for (int64_t r0 = first * kTransposeTile; r0 < std::min(R, last * kTransposeTile); r0 += kTransposeTile) {
      const int64_t r1 = std::min(R, r0 + kTransposeTile);
      for (int64_t c0 = 0; c0 < C; c0 += kTransposeTile) {
        const int64_t c1 = std::min(C, c0 + kTransposeTile);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = c0; c < c1; ++c) dst[r * C + c] = src[c * R + r];
        }
      }
    }
  });
  return out;
}

//: Whether w is the transpose of a contiguous matrix.
bool is_transposed_matrix(const at::Tensor& w) {
  return w.dim() == 2 && w.stride(0) == 1 && w.stride(1) == w.size(0) && w.size(0) > 1 && w.size(1) > 1;
}

//: w as a contiguous tensor: a transposed matrix through transposed(), anything else through ATen.
at::Tensor contiguous(const at::Tensor& w) {
  if (!is_transposed_matrix(w)) return w.contiguous();
  switch (w.element_size()) {
    case 4: return transposed<uint32_t>(w);  // bits are copied, not values: one instance per element size
    case 2: return transposed<uint16_t>(w);
    default: return w.contiguous();
  }
}

//: Products below which a weight is multiplied plain: the reorder (0.7-1.6 ms for a float [2048, 512] on the 2-core
//: AMD EPYC, Zen 4) saved 0.1 ms per [4, 512] x [512, 2048] step but only 0.2 ms for a [400, ...] chunk, where
//: oneDNN packs a plain weight as it goes (linear on the plain weight, 4.39 ms; reordered 4.16; MKL's addmm 5.8).
constexpr int64_t kMinUsesToReorder = 2;

//: Multiply-adds below which a single product against a transposed weight stays with BLAS on the view: oneDNN's
//: linear gains ~20% on MKL's at [6400, 2048] x [2048, 512] (62 ms against 77, same CPU) but only ~10% at 1600 rows
//: (16.1 against 17.5), where the transposed copy it needs (~2 ms for 4 MB, fresh pages included) takes it back.
constexpr int64_t kMinMacsToTransposeForOneUse = int64_t{1} << 31;

at::Tensor prepare_weight_cpu(const at::Tensor& w, int64_t rows, int64_t uses) {
  // oneDNN's path for prepared_dtype; the rest (and a build without oneDNN) stays on BLAS / ATen, and so do products
  // too small to pay for a oneDNN call (a small-batch step of a narrow layer).
  if (!prepared_dtype(w.scalar_type()) || !at::hasMKLDNN() || !linear_op() || !reorder_op()) return {};
  if (rows * w.size(0) * w.size(1) < kMinPreparedMacs) return {};
  if (uses < kMinUsesToReorder) {
    const bool copy_pays = !is_transposed_matrix(w) || rows * w.size(0) * w.size(1) >= kMinMacsToTransposeForOneUse;
    return copy_pays ? contiguous(w) : at::Tensor();
  }
  return reorder_op()->typed<ReorderFn>().call(contiguous(w), std::max<int64_t>(rows, 1));
}

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias) {
  return linear_op()->typed<LinearFn>().call(x, w, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

}  // namespace

const PreparedGemm& cpu_prepared_gemm() {
  static const PreparedGemm gemm{prepare_weight_cpu, linear_cpu};
  return gemm;
}

}  // namespace fusedrnn
