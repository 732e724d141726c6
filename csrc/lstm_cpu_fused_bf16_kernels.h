// The bfloat16 fused LSTM and GRU forwards (lstm_cpu_fused.h: FusedLstmBf16Kernel): the float32 forward's step loop
// and epilogues (lstm_cpu_fused_kernels.h: run_forward_thread, tile) on a storage policy whose micro-kernel
// multiplies with AVX512-BF16's vdpbf16ps: each float32 lane of the product adds two bfloat16 products,
// w[k] h[k] + w[k+1] h[k+1], so a panel holds the weight's columns in (k, k+1) pairs and a row of h (or x) is
// broadcast two elements at a time. Sums, cell math and the LSTM's cell state stay float32; h and the gates' input
// projection are bfloat16, as the layer's storage.
//
// Compiled only by lstm_cpu_fused_bf16.cpp, under the AVX-512 target plus avx512bf16 and CPU_CAPABILITY AVX512_BF16.
#pragma once

#ifndef CPU_CAPABILITY_AVX512
#error "lstm_cpu_fused_bf16_kernels.h needs the AVX-512 variant's vectors"
#endif

#include <immintrin.h>

#include "lstm_cpu_fused_kernels.h"

namespace fusedrnn {
namespace CPU_CAPABILITY {
namespace {

//: Columns of W_hh per 32-bit lane of a packed panel: vdpbf16ps multiplies bfloat16 pairs.
constexpr int64_t kPairK = 2;

//: The lanes [0, count) of a 16-lane vector.
__mmask16 lanes(int count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}

struct Bfloat16Storage {
  using T = c10::BFloat16;

  //: bfloat16 elements per panel of a G-gate cell's weight [G*H, K]: per pair of columns, G gates x kPanelUnits
  //: units x 2.
  template <int G>
  static int64_t panel_size(int64_t K) {
    return blocks_of(K, kPairK) * G * kPanelUnits * kPairK;
  }

  //: acc[r][g] += rows[r] . panel's gate g columns, over K columns (rows ld apart; pairs, an odd K's last column
  //: alone, its pair's second element zero, so nothing past the row is read).
  template <int G, int R>
  static void accumulate_panel(const T* panel, int64_t K, const T* rows, int64_t ld, RawVec (&acc)[R][G]) {
    const int64_t pairs = K / kPairK;
    const auto* words = reinterpret_cast<const __m512i*>(panel);
    for (int64_t p = 0; p < pairs; ++p) {
      __m512bh w[G];
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) w[g] = (__m512bh)_mm512_loadu_si512(words + p * G + g);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        std::memcpy(&pair, rows + r * ld + p * kPairK, sizeof(pair));
        multiply_add<G>(acc[r], (__m512bh)_mm512_set1_epi32(pair), w);
      }
    }
    if (K % kPairK != 0) {
      __m512bh w[G];
      for (int g = 0; g < G; ++g) w[g] = (__m512bh)_mm512_loadu_si512(words + pairs * G + g);
      for (int r = 0; r < R; ++r) {
        const int32_t pair = rows[r * ld + K - 1].x;  // (row[K-1], 0)
        multiply_add<G>(acc[r], (__m512bh)_mm512_set1_epi32(pair), w);
      }
    }
  }

  //: `count` bfloat16 as float32 lanes (a bfloat16 is a float32's upper half).
  static FusedVec load(const T* p, int count) {
    const __m256i halves = _mm256_maskz_loadu_epi16(lanes(count), p);
    return FusedVec(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16)));
  }

  //: Lanes [0, count) rounded to bfloat16: to nearest even, as c10::BFloat16, except that the instruction flushes
  //: float32 denormals (below ~1.2e-38) to zero, as vdpbf16ps does with its inputs.
  static void store(const FusedVec& v, T* p, int count) {
    _mm256_mask_storeu_epi16(p, lanes(count), (__m256i)_mm512_cvtneps_pbh(__m512(v)));
  }

 private:
  template <int G>
  __attribute__((always_inline)) static void multiply_add(RawVec (&acc)[G], __m512bh h, const __m512bh (&w)[G]) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) acc[g] = (RawVec)_mm512_dpbf16_ps((__m512)acc[g], h, w[g]);
  }
};

template <int G>
int64_t bf16_packed_size(int64_t K, int64_t H) {
  return blocks_of(H, kPanelUnits) * Bfloat16Storage::panel_size<G>(K);
}

//: Panels [first, last) of a G-gate cell's w [G*H, K] in vdpbf16ps' pairs (FusedForwardOf::pack).
template <int G>
void bf16_pack(const c10::BFloat16* w, int64_t K, int64_t H, int64_t first, int64_t last, c10::BFloat16* packed) {
  const int64_t pairs = blocks_of(K, kPairK);
  for (int64_t b = first; b < last; ++b) {
    c10::BFloat16* panel = packed + b * Bfloat16Storage::panel_size<G>(K);
    const int64_t units = std::min(kPanelUnits, H - b * kPanelUnits);
    for (int64_t p = 0; p < pairs; ++p) {
      for (int g = 0; g < G; ++g) {
        c10::BFloat16* out = panel + (p * G + g) * kPanelUnits * kPairK;
        std::fill(out, out + kPanelUnits * kPairK, c10::BFloat16(0.f));
        for (int64_t u = 0; u < units; ++u) {
          const c10::BFloat16* row = w + (g * H + b * kPanelUnits + u) * K;  // w[g*H + unit, :]
          for (int64_t e = 0; e < kPairK && p * kPairK + e < K; ++e) out[u * kPairK + e] = row[p * kPairK + e];
        }
      }
    }
  }
}

template <class Cell>
void bf16_run_thread(const FusedLstmArgsOf<c10::BFloat16>& a, int thread, int threads, SpinBarrier& barrier) {
  run_forward_thread<Cell, Bfloat16Storage>(a, thread, threads, barrier);
}

}  // namespace

const FusedLstmBf16Kernel* fused_lstm_bf16_kernel() {
  static const FusedLstmBf16Kernel kernel{
      {kPanelUnits, bf16_packed_size<LstmCell::kGates>, bf16_pack<LstmCell::kGates>, bf16_run_thread<LstmCell>},
      {kPanelUnits, bf16_packed_size<GruCell::kGates>, bf16_pack<GruCell::kGates>, bf16_run_thread<GruCell>}};
  return &kernel;
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn
