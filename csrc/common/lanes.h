// SIMD helpers shared by the CPU kernels (attention.cpp, step_fast.cpp): W-lane vectors, loads,
// stores and e^x. Every helper is always inlined, so a kernel compiled once for the baseline ISA
// and once under __attribute__((target("avx2,fma"))) gets the instructions of each.
#pragma once
#include <cstdint>
#include <cstring>

#define POSERT_INLINE inline __attribute__((always_inline))

namespace posert {
namespace lanes {

// W-lane float/int vectors (GCC/Clang vector extensions, no intrinsics): 4 lanes are SSE on
// x86-64 and NEON on Jetson's Arm cores; 8 lanes are AVX2 where the CPU has it.
template <int W>
struct Lanes;
template <>
struct Lanes<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef int32_t i __attribute__((vector_size(16)));
};
template <>
struct Lanes<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef int32_t i __attribute__((vector_size(32)));
};

template <int W>
POSERT_INLINE typename Lanes<W>::f load(const float* p) {
  typename Lanes<W>::f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int W>
POSERT_INLINE void store(float* p, typename Lanes<W>::f v) {
  std::memcpy(p, &v, sizeof(v));
}

// e^x on W lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial
// (relative error < 2e-7, 1–2 ulp), 2^n from the exponent bits. x is clamped to [-87.3, 88.3],
// so a masked score (MASK_VALUE) weighs ~1e-38 instead of 0: negligible against the own frame.
template <int W>
POSERT_INLINE typename Lanes<W>::f vexp(typename Lanes<W>::f x) {
  typedef typename Lanes<W>::f vf;
  typedef typename Lanes<W>::i vi;
  const vf lo = vf{} - 87.3f, hi = vf{} + 88.3f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const vf t = x * 1.44269504f;
  const vi n = __builtin_convertvector(t + (t >= 0.0f ? 0.5f : -0.5f), vi);  // round half away from 0
  const vf nf = __builtin_convertvector(n, vf);
  const vf r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // ln 2 in two parts (Cody–Waite)
  vf p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi bits = (n + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace lanes
}  // namespace posert
