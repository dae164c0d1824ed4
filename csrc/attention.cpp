#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace posert {
namespace {

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

// One (stream, joint, head), any head size D (scalar).
inline void head_any(const float* qh, const float* kh, const float* vh, const float* Kc, const float* Vc,
                     const int64_t* lg, const float* tb, float scale, int64_t M, int64_t D, float* s, float* q,
                     float* acc, float* o) {
  for (int64_t d = 0; d < D; ++d) q[d] = qh[d] * scale;
  s[0] = dot(q, kh, D) + tb[0];
  float mx = s[0];
  for (int64_t m = 0; m < M; ++m) {
    s[m + 1] = dot(q, Kc + m * D, D) + tb[lg[m]];
    mx = std::max(mx, s[m + 1]);
  }
  float sum = 0.0f;
  for (int64_t m = 0; m <= M; ++m) {
    s[m] = std::exp(s[m] - mx);
    sum += s[m];
  }
  const float inv = 1.0f / sum;
  const float p0 = s[0] * inv;
  for (int64_t d = 0; d < D; ++d) acc[d] = p0 * vh[d];
  for (int64_t m = 0; m < M; ++m) {
    const float pm = s[m + 1] * inv;
    for (int64_t d = 0; d < D; ++d) acc[d] += pm * Vc[m * D + d];
  }
  std::memcpy(o, acc, D * sizeof(float));
}

// D = 16 (the default models: 64 channels, 4 heads) with GCC/Clang vector extensions: four
// 4-lane vectors per row, SSE on x86-64 and NEON on Jetson's Arm cores, no intrinsics.
typedef float v4 __attribute__((vector_size(16)));

inline v4 load4(const float* p) {
  v4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline float dot16(const v4* q, const float* k) {
  const v4 a = (q[0] * load4(k) + q[2] * load4(k + 8)) + (q[1] * load4(k + 4) + q[3] * load4(k + 12));
  return (a[0] + a[2]) + (a[1] + a[3]);
}

inline float dot16_s(const float* q, const float* k) {
  const v4 q4[4] = {load4(q), load4(q + 4), load4(q + 8), load4(q + 12)};
  return dot16(q4, k);
}

inline void head16(const float* qh, const float* kh, const float* vh, const float* Kc, const float* Vc,
                   const int64_t* lg, const float* tb, float scale, int64_t M, float* s, float* o) {
  v4 q[4];
  for (int i = 0; i < 4; ++i) q[i] = load4(qh + 4 * i) * scale;
  s[0] = dot16(q, kh) + tb[0];
  float mx = s[0];
  for (int64_t m = 0; m < M; ++m) {
    s[m + 1] = dot16(q, Kc + m * 16) + tb[lg[m]];
    mx = std::max(mx, s[m + 1]);
  }
  float sum = 0.0f;
  for (int64_t m = 0; m <= M; ++m) {
    s[m] = std::exp(s[m] - mx);
    sum += s[m];
  }
  const float inv = 1.0f / sum;
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

}  // namespace

void spatial_attention_cpu(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D, float* out) {
  std::vector<float> q(D), s(J), acc(D);
  const int64_t row = 3 * H * D;  // one joint's q, k, v
  for (int64_t b = 0; b < B; ++b) {
    const float* f = qkv + b * J * row;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < J; ++i) {
        const float* qi = f + i * row + h * D;
        for (int64_t d = 0; d < D; ++d) q[d] = qi[d] * scale;
        float mx = -INFINITY;
        for (int64_t j = 0; j < J; ++j) {
          const float* kj = f + j * row + (H + h) * D;
          s[j] = D == 16 ? dot16_s(q.data(), kj) : dot(q.data(), kj, D);
          mx = std::max(mx, s[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < J; ++j) {
          s[j] = std::exp(s[j] - mx);
          sum += s[j];
        }
        const float inv = 1.0f / sum;
        float* o = out + ((b * J + i) * H + h) * D;
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
  std::vector<float> q(D), s(M + 1), acc(D);
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
