// The seam between the device-agnostic host loop (rnn_loop.cpp) and a device's pointwise pass.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>

#include "slstm_step.h"
#include "step.h"

namespace at {
class Tensor;
}

namespace fusedrnn {

struct PreparedGemm;

//: One operand of a headwise product, row-major in the call's dtype: the matrix of head k and gate g starts
//: k * head_stride + g * gate_stride elements in; element (i, j) is at p[i * ld + j], or at p[j * ld + i] when
//: `transposed` (the memory holds the operand's transpose, e.g. a row-major weight [C, K] used as its [K, C]
//: transpose).
struct HeadOperand {
  const void* p;
  int64_t ld, head_stride;
  bool transposed = false;
  int64_t gate_stride = 0;
};


//: One device's pointwise pass (one step for all N*H elements, asynchronously on the current stream), and how the
//: host loop should size that device's GEMMs.
struct Pointwise {
  void (*forward)(const ForwardStep&, c10::ScalarType);
  void (*backward)(const BackwardStep&, c10::ScalarType);
  //: Rows (steps x batch) per input-projection / weight-gradient GEMM; 0: the whole sequence in one GEMM.
  int64_t gemm_rows;
  //: Optional per-step recurrent GEMM c = a b (c += a b when accumulate) on 2-D tensors (a [M, K], b [K, C] or a
  //: transposed view, c [M, C]); returns false where it does not apply, and the host loop calls ATen instead.
  bool (*step_gemm)(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) = nullptr;
  //: Optional products against a weight prepared once per call and reused by every step and chunk (e.g. reordered
  //: into the GEMM library's blocked layout, as oneDNN's fused LSTM does). The host loop uses them where
  //: prepare_weight returns a defined tensor, and step_gemm / ATen otherwise.
  const PreparedGemm* prepared_gemm = nullptr;
  //: Optional block-diagonal products of multi-head recurrences (multi-head LSTM/GRU/RNN, sLSTM): for every head
  //: k < heads and gate g < gates, c_kg = a_kg b_kg (c_kg += a_kg b_kg when accumulate), a_kg [M, K], b_kg [K, C],
  //: c_kg [M, C] (c never transposed, no two products write the same c); null on a device without them.
  void (*headwise_gemm)(c10::ScalarType dtype, int64_t heads, int64_t gates, int64_t M, int64_t K, int64_t C,
                        HeadOperand a, HeadOperand b, HeadOperand c, bool accumulate) = nullptr;
  //: xLSTM's sLSTM step (slstm_step.h), float and double; null on a device without it (the op refuses there).
  void (*slstm_forward)(const SlstmForwardStep&, c10::ScalarType) = nullptr;
  void (*slstm_backward)(const SlstmBackwardStep&, c10::ScalarType) = nullptr;
};

struct PreparedGemm {
  //: w [C, K] (any strides) in the form `linear` multiplies fastest for `uses` products of about `rows` rows each
  //: (reordered for many, merely contiguous for one); undefined where this dtype or build has no such path.
  at::Tensor (*prepare_weight)(const at::Tensor& w, int64_t rows, int64_t uses);
  //: x [M, K] (any strides) times w^T, plus bias [C] if given: a new [M, C] tensor. w is a prepare_weight result of
  //: the same dtype, or a plain [C, K] tensor (any strides: the weight gradients multiply two activations).
  at::Tensor (*linear)(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias);
};

const Pointwise& cpu_pointwise();
//: The CPU capability whose pointwise variant cpu_pointwise() runs: "DEFAULT", "AVX2" or "AVX512" (ATen's names).
const char* cpu_pointwise_capability();
#ifdef FUSEDRNN_WITH_CUDA
const Pointwise& cuda_pointwise();
#endif

}  // namespace fusedrnn
