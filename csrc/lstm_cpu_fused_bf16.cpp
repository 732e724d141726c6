// The bfloat16 fused LSTM forward (lstm_cpu_fused_bf16_kernels.h), compiled for AVX-512 with AVX512-BF16 in a
// capability namespace of its own (fusedrnn::AVX512_BF16, at::vec::AVX512_BF16), so none of its code, ATen's vector
// templates included, is shared with the AVX-512 variant, which runs on CPUs without the bfloat16 instructions.
#include "pointwise_cpu_prelude.h"

//: GCC names the avx512bf16 target and CPU feature from version 12 on (as gemm_cpu.cpp's check); older compilers
//: build no bfloat16 kernel, and bfloat16 LSTMs take the loop.
#if FUSEDRNN_X86_VARIANTS && __GNUC__ >= 12
#define FUSEDRNN_BF16_KERNEL 1
#else
#define FUSEDRNN_BF16_KERNEL 0
#endif

#if FUSEDRNN_BF16_KERNEL
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#include "pointwise_cpu_avx512_macros.h"
#define CPU_CAPABILITY AVX512_BF16
#define CPU_CAPABILITY_AVX512
#include "lstm_cpu_fused_bf16_kernels.h"
#pragma GCC pop_options
#endif

namespace fusedrnn {

const FusedLstmBf16Kernel* cpu_fused_lstm_bf16_kernel() {
#if FUSEDRNN_BF16_KERNEL
  static const bool cpu_has_it = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  if (cpu_has_it) return AVX512_BF16::fused_lstm_bf16_kernel();
#endif
  return nullptr;
}

}  // namespace fusedrnn
