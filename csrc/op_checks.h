// Input checks shared by the ops' implementations (ops.cpp, slstm_ops.cpp): torch.nn-style messages for tensors of
// the wrong device, dtype, shape or layout.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>

namespace fusedrnn {

//: One tensor against the call's dtype, device, contiguity and expected shape.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                         std::initializer_list<c10::SymInt> shape) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device(),
              "; every tensor must be on the same device");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but x has ",
              x.scalar_type(), "; every tensor must have the same dtype");
  bool same = t.dim() == static_cast<int64_t>(shape.size());
  int64_t d = 0;
  for (const c10::SymInt& size : shape) same = same && t.sym_size(d++) == size;
  TORCH_CHECK(same, op, ": ", name, " has shape ", t.sym_sizes(), " but ", c10::SymIntArrayRef(shape),
              " was expected");
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first)");
}

//: Per-row lengths: [N] int64 on x's device (values are not read here: that would synchronise a GPU).
inline void check_lengths(const char* op, const c10::SymInt& N, const at::Tensor& x,
                          const std::optional<at::Tensor>& lengths) {
  if (!lengths.has_value()) return;
  TORCH_CHECK(lengths->scalar_type() == at::kLong, op, ": lengths must be int64, got ", lengths->scalar_type());
  TORCH_CHECK(lengths->device() == x.device(), op, ": lengths is on ", lengths->device(), " but x is on ",
              x.device(), "; every tensor must be on the same device");
  TORCH_CHECK(lengths->dim() == 1 && lengths->sym_size(0) == N, op, ": lengths must have shape [", N,
              "], got ", lengths->sym_sizes());
  TORCH_CHECK(lengths->is_contiguous(), op, ": lengths must be contiguous");
}

}  // namespace fusedrnn
