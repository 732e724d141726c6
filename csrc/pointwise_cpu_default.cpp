// The pointwise pass for the baseline instruction set (ATen's DEFAULT capability): runs on every CPU.
#include "pointwise_cpu_prelude.h"

#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "pointwise_cpu_kernels.h"
