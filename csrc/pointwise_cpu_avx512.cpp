// The pointwise pass for AVX-512 (ATen's AVX512 capability: F, BW, VL, DQ and FMA; its compile flags, as target
// options). Vectorized<float> has 16 lanes here.
#include "pointwise_cpu_prelude.h"

#if FUSEDRNN_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#include "pointwise_cpu_avx512_macros.h"
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "pointwise_cpu_kernels.h"
#pragma GCC pop_options
#else
const fusedrnn::PointwiseKernels* fusedrnn::AVX512::pointwise_kernels() {
  return nullptr;
}
#endif
