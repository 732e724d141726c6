// The pointwise pass for AVX2 + FMA (ATen's AVX2 capability; its compile flags, as target options).
#include "pointwise_cpu_prelude.h"

#if FUSEDRNN_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
// g++ does not update the instruction-set macros for a target pragma; the headers (SLEEF's, ATen's) test them.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __BMI__
#define __BMI__ 1
#endif
#ifndef __BMI2__
#define __BMI2__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "pointwise_cpu_kernels.h"
#pragma GCC pop_options
#else
const fusedrnn::PointwiseKernels* fusedrnn::AVX2::pointwise_kernels() {
  return nullptr;
}
#endif
