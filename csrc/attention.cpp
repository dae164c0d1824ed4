#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace posert {
namespace {

// 4-lane float/int vectors (GCC/Clang vector extensions): SSE on x86-64, NEON on Jetson's Arm
// cores, no intrinsics.
typedef float v4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

inline v4 load4(const float* p) {
  v4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// e^x on 4 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial
// (relative error < 2e-7, 1–2 ulp), 2^n from the exponent bits. x is clamped to [-87.3, 88.3],
// so a masked score (MASK_VALUE) weighs ~1e-38 instead of 0: negligible against the own frame.
inline v4 exp4(v4 x) {
  const v4 lo = {-87.3f, -87.3f, -87.3f, -87.3f}, hi = {88.3f, 88.3f, 88.3f, 88.3f};
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v4 t = x * 1.44269504f;
  const i4 n = __builtin_convertvector(t + (t >= 0.0f ? 0.5f : -0.5f), i4);  // round half away from 0
  const v4 nf = __builtin_convertvector(n, v4);
  const v4 r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // ln 2 in two parts (Cody–Waite)
  v4 p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const i4 bits = (n + 127) << 23;
  v4 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// In place: s[0 … n) → exp(s − max s); returns 1 / Σ. `s` has room for n rounded up to 4.
inline float softmax_exp(float* s, int64_t n) {
  float mx = s[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, s[i]);
  for (int64_t i = 0; i < n; i += 4) {
    const v4 e = exp4(load4(s + i) - mx);
    std::memcpy(s + i, &e, sizeof(e));
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += s[i];
  return 1.0f / sum;
}

// q · k over D values with 8 independent partial sums (vectorisable without reassociating a
// single chain, so the result does not depend on compiler flags), then a fixed-order reduction.
inline float dot(const float* q, const float* k, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int l = 0; l < 8; ++l) acc[l] += q[d + l] * k[d + l];
  for (int64_t l = 0; d < n; ++d, ++l) acc[l] += q[d] * k[d];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// q · k for D = 16 (the default models: 64 channels, 4 heads), q already in four vectors.
inline float dot16(const v4* q, const float* k) {
  const v4 a = (q[0] * load4(k) + q[2] * load4(k + 8)) + (q[1] * load4(k + 4) + q[3] * load4(k + 12));
  return (a[0] + a[2]) + (a[1] + a[3]);
}

// One (stream, joint, head) of the cached temporal attention, any head size D.
inline void head_any(const float* qh, const float* kh, const float* vh, const float* Kc, const float* Vc,
                     const int64_t* lg, const float* tb, float scale, int64_t M, int64_t D, float* s, float* q,
                     float* acc, float* o) {
  for (int64_t d = 0; d < D; ++d) q[d] = qh[d] * scale;
  s[0] = dot(q, kh, D) + tb[0];
  for (int64_t m = 0; m < M; ++m) s[m + 1] = dot(q, Kc + m * D, D) + tb[lg[m]];
  const float inv = softmax_exp(s, M + 1);
  const float p0 = s[0] * inv;
  for (int64_t d = 0; d < D; ++d) acc[d] = p0 * vh[d];
  for (int64_t m = 0; m < M; ++m) {
    const float pm = s[m + 1] * inv;
    for (int64_t d = 0; d < D; ++d) acc[d] += pm * Vc[m * D + d];
  }
  std::memcpy(o, acc, D * sizeof(float));
}

// The same for D = 16.
inline void head16(const float* qh, const float* kh, const float* vh, const float* Kc, const float* Vc,
                   const int64_t* lg, const float* tb, float scale, int64_t M, float* s, float* o) {
  v4 q[4];
  for (int i = 0; i < 4; ++i) q[i] = load4(qh + 4 * i) * scale;
  s[0] = dot16(q, kh) + tb[0];
  for (int64_t m = 0; m < M; ++m) s[m + 1] = dot16(q, Kc + m * 16) + tb[lg[m]];
  const float inv = softmax_exp(s, M + 1);
  v4 acc[4];
  const float p0 = s[0] * inv;
  for (int i = 0; i < 4; ++i) acc[i] = load4(vh + 4 * i) * p0;
  for (int64_t m = 0; m < M; ++m) {
    const float pm = s[m + 1] * inv;
    const float* vm = Vc + m * 16;
    for (int i = 0; i < 4; ++i) acc[i] += load4(vm + 4 * i) * pm;
  }
  std::memcpy(o, acc, sizeof(acc));
}

// One query's scores against JV·4 transposed keys kt[d][j]: JV accumulators in registers.
template <int JV>
inline void scores_t(const float* kt, const float* q, int64_t D, float* s) {
  v4 sc[JV] = {};
  for (int64_t d = 0; d < D; ++d) {
    const float* kd = kt + d * 4 * JV;
    for (int c = 0; c < JV; ++c) sc[c] += load4(kd + 4 * c) * q[d];
  }
  std::memcpy(s, sc, sizeof(sc));
}

inline void scores_t_any(const float* kt, const float* q, int64_t D, int64_t Jv, float* s) {
  for (int64_t j = 0; j < 4 * Jv; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = 0; j < 4 * Jv; ++j) s[j] += kt[d * 4 * Jv + j] * q[d];
}

}  // namespace

void spatial_attention_cpu(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D, float* out) {
  const int64_t row = 3 * H * D;  // one joint's q, k, v
  const int64_t Jv = (J + 3) / 4;  // score vectors per query
  std::vector<float> q(D), s(4 * Jv), acc(D), kt(D * 4 * Jv, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    const float* f = qkv + b * J * row;
    for (int64_t h = 0; h < H; ++h) {
      // Keys transposed to kt[d][j] (j padded to 4·Jv with zeros), so that one query's J scores
      // are Jv vector multiply-adds per channel, with no horizontal sums.
      for (int64_t j = 0; j < J; ++j) {
        const float* kj = f + j * row + (H + h) * D;
        for (int64_t d = 0; d < D; ++d) kt[d * 4 * Jv + j] = kj[d];
      }
      for (int64_t i = 0; i < J; ++i) {
        const float* qi = f + i * row + h * D;
        float* o = out + ((b * J + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) q[d] = qi[d] * scale;
        if (Jv == 5)  // 17 joints (H36M-17)
          scores_t<5>(kt.data(), q.data(), D, s.data());
        else
          scores_t_any(kt.data(), q.data(), D, Jv, s.data());
        const float inv = softmax_exp(s.data(), J);
        if (D == 16) {
          v4 a[4] = {};
          for (int64_t j = 0; j < J; ++j) {
            const float p = s[j] * inv;
            const float* vj = f + j * row + (2 * H + h) * D;
            for (int k = 0; k < 4; ++k) a[k] += load4(vj + 4 * k) * p;
          }
          std::memcpy(o, a, sizeof(a));
        } else {
          for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
          for (int64_t j = 0; j < J; ++j) {
            const float p = s[j] * inv;
            const float* vj = f + j * row + (2 * H + h) * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += p * vj[d];
          }
          std::memcpy(o, acc.data(), D * sizeof(float));
        }
      }
    }
  }
}

void cached_attention_cpu(const float* qkv, const float* cache_k, const float* cache_v, const int64_t* lag,
                          const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                          float* out, float* k_new, float* v_new) {
  std::vector<float> q(D), s(M + 4), acc(D);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* lg = lag + b * M;
    for (int64_t j = 0; j < J; ++j) {
      const int64_t bj = b * J + j;
      const float* row = qkv + bj * 3 * H * D;
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = row + h * D;
        const float* kh = row + (H + h) * D;
        const float* vh = row + (2 * H + h) * D;
        const int64_t cache = (bj * H + h) * M * D;
        float* o = out + (bj * H + h) * D;
        if (D == 16)
          head16(qh, kh, vh, cache_k + cache, cache_v + cache, lg, table + h * (M + 2), scale, M, s.data(), o);
        else
          head_any(qh, kh, vh, cache_k + cache, cache_v + cache, lg, table + h * (M + 2), scale, M, D, s.data(),
                   q.data(), acc.data(), o);
      }
      // The new frame's keys and values, for the ring cache: rows [H, 2H) and [2H, 3H) of qkv.
      std::memcpy(k_new + bj * H * D, row + H * D, H * D * sizeof(float));
      std::memcpy(v_new + bj * H * D, row + 2 * H * D, H * D * sizeof(float));
    }
  }
}

}  // namespace posert
