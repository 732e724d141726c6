// The pointwise pass for AVX2 + FMA (ATen's AVX2 capability; its compile flags, as target options).
#include "pointwise_cpu_prelude.h"

#if FUSEDRNN_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#include "pointwise_cpu_avx2_macros.h"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "pointwise_cpu_kernels.h"
#pragma GCC pop_options
#else
const fusedrnn::PointwiseKernels* fusedrnn::AVX2::pointwise_kernels() {
  return nullptr;
}
#endif
