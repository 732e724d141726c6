// The instruction-set macros of ATen's AVX512 capability (F, BW, VL, DQ), for a file that has switched those
// instructions on with `#pragma GCC target` (as pointwise_cpu_avx2_macros.h, whose macros it needs too): g++ does not
// update the macros for a target pragma, and ATen's vector headers test them. Included by the AVX-512 variant files.
#pragma once

#include "pointwise_cpu_avx2_macros.h"

#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
