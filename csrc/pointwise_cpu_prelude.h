// Headers every pointwise variant includes *before* its `#pragma GCC target`: inline functions defined in them are
// then compiled for the baseline instruction set, so the copy the linker keeps (one per program, from whichever
// object) runs on every CPU. Only what the variant file includes after the pragma gets the wider instructions:
// ATen's vector headers (their code lives in the capability's own namespace), pointwise_cpu_kernels.h, and step.h
// with cell_math.h, whose templates are instantiated on the capability's vector types. A template that handles
// vectors must not be defined before the pragma: compiled without the instruction set, it would pass and return
// them under a different calling convention (g++ warns: "AVX vector return without AVX enabled changes the ABI").
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "pointwise_cpu_dispatch.h"

//: Whether this compiler can build the AVX2/AVX-512 variants with `#pragma GCC target` (GCC on x86-64).
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
#define FUSEDRNN_X86_VARIANTS 1
#else
#define FUSEDRNN_X86_VARIANTS 0
#endif
