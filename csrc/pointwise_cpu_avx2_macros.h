// The instruction-set macros of ATen's AVX2 capability (AVX2, FMA, F16C, BMI, BMI2), for a file that has switched
// those instructions on with `#pragma GCC target`: g++ does not update the macros for a target pragma, and the
// headers (SLEEF's, ATen's) test them. Included by the AVX2 and AVX-512 variant files, after their pragma.
#pragma once

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
