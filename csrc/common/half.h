// IEEE 754 binary16 ("half", numpy's float16) keys and values for the CPU attention caches: the
// native backend stores its key/value ring caches as half floats (half the bytes a tick reads;
// docs/kernels.md) and computes in float32.
//
// - float_to_half: round to nearest, ties to even (numpy's astype(float16), F16C's vcvtps2ph with
//   rounding mode 0), saturating at ±65504 instead of overflowing to ±inf; NaN stays NaN.
// - half_to_float: exact (every half is a float), scalar.
// - load_half<W>: W halves → W floats. Hardware conversion (F16C's vcvtph2ps) where the caller is
//   compiled for it (kF16C), else integer lanes: (h & 0x7fff) << 13 read as a float and scaled by
//   2^112 rebiases the exponent of normal and subnormal halves alike (exact unless the CPU flushes
//   subnormal inputs to zero), and the sign bit is put back. Stored values are finite by
//   construction (float_to_half saturates; NaN input never reaches the caches: the pipeline
//   rejects it), so inf/NaN need no lane handling.
// The trick follows F. Giesen, "half to float done quick" (2012) and his float_to_half_fast3_rtne.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/lanes.h"

namespace posert {

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (x > 0x477fe000u) x = 0x477fe000u;                                // |f| > 65504: saturate
  if (x < 0x38800000u) {  // |f| < 2^-14: a subnormal half (or 0); the FPU rounds f + 0.5 to 2^-24
    float a, t;
    std::memcpy(&a, &x, 4);
    t = a + 0.5f;
    uint32_t tb;
    std::memcpy(&tb, &t, 4);
    return static_cast<uint16_t>(sign | (tb - 0x3f000000u));
  }
  const uint32_t odd = (x >> 13) & 1u;  // ties to even
  x += 0xc8000fffu + odd;               // exponent −112 (127 → 15) and the rounding bias
  return static_cast<uint16_t>(sign | (x >> 13));
}

inline float half_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu, sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t bits;
  if (em >= 0x7c00u) {
    bits = sign | 0x7f800000u | ((em & 0x3ffu) << 13);  // inf / NaN
  } else {
    const uint32_t b = em << 13;
    float v;
    std::memcpy(&v, &b, 4);
    v *= 5.192296858534828e33f;  // 2^112
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// W halves at p → W floats. kF16C: the caller is compiled with F16C (x86-64 only).
template <int W, bool kF16C>
POSERT_INLINE typename lanes::Lanes<W>::f load_half(const uint16_t* p) {
  typedef typename lanes::Lanes<W>::f vf;
  typedef typename lanes::Lanes<W>::i vi;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (kF16C) {  // inline asm: an F16C intrinsic cannot inline through these untargeted helpers
    typedef int64_t q2 __attribute__((vector_size(16)));
    vf r;
    if constexpr (W == 8)
      asm("vcvtph2ps %1, %0" : "=x"(r) : "m"(*reinterpret_cast<const q2*>(p)));
    else
      asm("vcvtph2ps %1, %0" : "=x"(r) : "m"(*reinterpret_cast<const int64_t*>(p)));
    return r;
  }
#endif
  typedef uint16_t vh __attribute__((vector_size(2 * W)));
  vh h;
  std::memcpy(&h, p, sizeof(h));
  const vi w = __builtin_convertvector(h, vi);
  const vi em = (w & 0x7fff) << 13;
  vf v;
  std::memcpy(&v, &em, sizeof(v));
  v *= 5.192296858534828e33f;  // 2^112
  vi bits;
  std::memcpy(&bits, &v, sizeof(v));
  bits |= (w & 0x8000) << 16;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

}  // namespace posert
