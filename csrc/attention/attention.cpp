#include "attention/attention.h"
#include "common/half.h"
#include "common/lanes.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace posert {
namespace {

// Everything below is inlined into the two entry points' per-ISA bodies (see the end of the
// file), so that the same source compiles once for the baseline ISA and once for AVX2 + FMA.
using lanes::Lanes;
using lanes::load;
using lanes::store;
using lanes::vexp;

constexpr float kPad = -3.0e38f;  // score of a padding lane: its exp is ~0 (exp clamps at -87.3)

// A cache element (float, or half bits: half.h) as float, and W of them as lanes; kF16C: the body
// is compiled with F16C (the AVX2 one).
POSERT_INLINE float kv_float(float v) { return v; }
POSERT_INLINE float kv_float(uint16_t h) { return half_to_float(h); }

template <int W, bool kF16C, typename KV>
POSERT_INLINE typename Lanes<W>::f load_kv(const KV* p) {
  if constexpr (std::is_same_v<KV, float>)
    return load<W>(p);
  else
    return load_half<W, kF16C>(p);
}

template <int W>
POSERT_INLINE float hsum(typename Lanes<W>::f v) {
  if constexpr (W == 8)
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
  else
    return (v[0] + v[2]) + (v[1] + v[3]);
}

template <int W>
POSERT_INLINE float hmax(typename Lanes<W>::f v) {
  float m = v[0];
  for (int l = 1; l < W; ++l) m = std::max(m, v[l]);
  return m;
}

// In place: s[0 … n) → exp(s − max s), padding lanes [n, ⌈n/W⌉·W) → ~0 (masked in registers,
// so that s written by vector stores is read back without a store-forwarding stall); returns
// 1 / Σ. `s` has room for n rounded up to W.
template <int W>
POSERT_INLINE float softmax_exp(float* s, int64_t n) {
  typedef typename Lanes<W>::f vf;
  typedef typename Lanes<W>::i vi;
  const int64_t nv = (n + W - 1) / W;
  vi lane;
  for (int l = 0; l < W; ++l) lane[l] = l;
  const vf last = load<W>(s + (nv - 1) * W);
  const vf tail = lane < static_cast<int32_t>(n - (nv - 1) * W) ? last : vf{} + kPad;
  store<W>(s + (nv - 1) * W, tail);
  vf mx = tail;
  for (int64_t v = 0; v + 1 < nv; ++v) {
    const vf x = load<W>(s + v * W);
    mx = x > mx ? x : mx;
  }
  const float m = hmax<W>(mx);
  vf sum = {};
  for (int64_t v = 0; v < nv; ++v) {
    const vf e = vexp<W>((v + 1 < nv ? load<W>(s + v * W) : tail) - m);
    store<W>(s + v * W, e);
    sum += e;
  }
  return 1.0f / hsum<W>(sum);
}

// Four dot products at once: p[r] holds key r's 4-lane partial sums; returns the 4 sums.
POSERT_INLINE Lanes<4>::f reduce4(Lanes<4>::f p0, Lanes<4>::f p1, Lanes<4>::f p2, Lanes<4>::f p3) {
  const Lanes<4>::f a = __builtin_shufflevector(p0, p1, 0, 4, 1, 5) + __builtin_shufflevector(p0, p1, 2, 6, 3, 7);
  const Lanes<4>::f b = __builtin_shufflevector(p2, p3, 0, 4, 1, 5) + __builtin_shufflevector(p2, p3, 2, 6, 3, 7);
  return __builtin_shufflevector(a, b, 0, 1, 4, 5) + __builtin_shufflevector(a, b, 2, 3, 6, 7);
}

// q · k over D values with 8 independent partial sums, then a fixed-order reduction (any D).
template <typename KV>
POSERT_INLINE float dot(const float* q, const KV* k, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int l = 0; l < 8; ++l) acc[l] += q[d + l] * kv_float(k[d + l]);
  for (int64_t l = 0; d < n; ++d, ++l) acc[l] += q[d] * kv_float(k[d]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// One (stream, joint, head) of the cached temporal attention, any head size D.
template <typename KV>
POSERT_INLINE void head_any(const float* qh, const float* kh, const float* vh, const KV* Kc, const KV* Vc,
                            const int64_t* lg, const float* tb, float scale, int64_t M, int64_t D, float* s, float* q,
                            float* acc, float* o) {
  for (int64_t d = 0; d < D; ++d) q[d] = qh[d] * scale;
  s[0] = dot(q, kh, D) + tb[0];
  for (int64_t m = 0; m < M; ++m) s[m + 1] = dot(q, Kc + m * D, D) + tb[lg[m]];
  const float inv = softmax_exp<4>(s, M + 1);
  const float p0 = s[0] * inv;
  for (int64_t d = 0; d < D; ++d) acc[d] = p0 * vh[d];
  for (int64_t m = 0; m < M; ++m) {
    const float pm = s[m + 1] * inv;
    for (int64_t d = 0; d < D; ++d) acc[d] += pm * kv_float(Vc[m * D + d]);
  }
  std::memcpy(o, acc, D * sizeof(float));
}

// The same for D = 16. Scores four keys at a time from 4-lane products (a key row is 4 vectors)
// plus `bias` (the n = M + 1 biases of this stream and head by slot, own frame first, padded
// with kPad to a multiple of 4); the softmax on 4 lanes; the value sum on W lanes (two
// accumulators, even and odd slots).
template <int W, bool kF16C, typename KV>
POSERT_INLINE void head16(const float* qh, const float* kh, const float* vh, const KV* Kc, const KV* Vc,
                          const float* bias, float scale, int64_t M, float* s, float* o) {
  typedef Lanes<4>::f v4;
  typedef typename Lanes<W>::f vf;
  constexpr int DV = 16 / W;
  v4 q[4];
  for (int i = 0; i < 4; ++i) q[i] = load<4>(qh + 4 * i) * scale;
  const int64_t n = M + 1;
  const auto partial = [&](int64_t k) {  // key k: the own frame, then cache slot k − 1
    if (k >= n) return v4{};
    if (k == 0)
      return (q[0] * load<4>(kh) + q[2] * load<4>(kh + 8)) + (q[1] * load<4>(kh + 4) + q[3] * load<4>(kh + 12));
    const KV* key = Kc + (k - 1) * 16;
    return (q[0] * load_kv<4, kF16C>(key) + q[2] * load_kv<4, kF16C>(key + 8)) +
           (q[1] * load_kv<4, kF16C>(key + 4) + q[3] * load_kv<4, kF16C>(key + 12));
  };
  for (int64_t g = 0; g < n; g += 4)
    store<4>(s + g, reduce4(partial(g), partial(g + 1), partial(g + 2), partial(g + 3)) + load<4>(bias + g));
  const float inv = softmax_exp<4>(s, n);
  vf acc[DV], acc1[DV] = {};
  const float p0 = s[0] * inv;
  for (int i = 0; i < DV; ++i) acc[i] = load<W>(vh + W * i) * p0;
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) {
    const float pm = s[m + 1] * inv, pm1 = s[m + 2] * inv;
    const KV* vm = Vc + m * 16;
    for (int i = 0; i < DV; ++i) {
      acc[i] += load_kv<W, kF16C>(vm + W * i) * pm;
      acc1[i] += load_kv<W, kF16C>(vm + 16 + W * i) * pm1;
    }
  }
  if (m < M)
    for (int i = 0; i < DV; ++i) acc[i] += load_kv<W, kF16C>(Vc + m * 16 + W * i) * (s[m + 1] * inv);
  for (int i = 0; i < DV; ++i) store<W>(o + W * i, acc[i] + acc1[i]);
}

// One query's scores against JV·W transposed keys kt[d][j]: 2·JV accumulators in registers
// (even and odd channels apart, so that the multiply-add chains overlap).
template <int W, int JV>
POSERT_INLINE void scores_t(const float* kt, const float* q, int64_t D, float* s) {
  typename Lanes<W>::f sc[JV] = {}, sc1[JV] = {};
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) {
    const float* kd = kt + d * W * JV;
    for (int c = 0; c < JV; ++c) {
      sc[c] += load<W>(kd + W * c) * q[d];
      sc1[c] += load<W>(kd + W * (JV + c)) * q[d + 1];
    }
  }
  for (; d < D; ++d)
    for (int c = 0; c < JV; ++c) sc[c] += load<W>(kt + d * W * JV + W * c) * q[d];
  for (int c = 0; c < JV; ++c) store<W>(s + W * c, sc[c] + sc1[c]);  // vector stores keep sc in registers
}

POSERT_INLINE void scores_t_any(const float* kt, const float* q, int64_t D, int64_t n, float* s) {
  for (int64_t j = 0; j < n; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = 0; j < n; ++j) s[j] += kt[d * n + j] * q[d];
}

// Σ_j p_j · v_j over J value rows (stride `row`) of DV·W channels, p = s · inv; even and odd
// rows in separate accumulators.
template <int W, int DV>
POSERT_INLINE void weighted_values(const float* s, float inv, const float* v, int64_t row, int64_t J, float* o) {
  typename Lanes<W>::f a[DV] = {}, a1[DV] = {};
  int64_t j = 0;
  for (; j + 2 <= J; j += 2) {
    const float p = s[j] * inv, p1 = s[j + 1] * inv;
    const float* vj = v + j * row;
    for (int k = 0; k < DV; ++k) {
      a[k] += load<W>(vj + W * k) * p;
      a1[k] += load<W>(vj + row + W * k) * p1;
    }
  }
  if (j < J) {
    const float p = s[j] * inv;
    for (int k = 0; k < DV; ++k) a[k] += load<W>(v + j * row + W * k) * p;
  }
  for (int k = 0; k < DV; ++k) store<W>(o + W * k, a[k] + a1[k]);
}

template <int W>
POSERT_INLINE void spatial_impl(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D,
                                float* out) {
  const int64_t row = 3 * H * D;  // one joint's q, k, v
  const int64_t n = (J + W - 1) / W * W;  // scores per query, padded to whole vectors
  std::vector<float> q(D), s(n), acc(D), kt(D * n, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    const float* f = qkv + b * J * row;
    for (int64_t h = 0; h < H; ++h) {
      // Keys transposed to kt[d][j] (j padded with zeros), so that one query's J scores are
      // n / W vector multiply-adds per channel, with no horizontal sums.
      for (int64_t j = 0; j < J; ++j) {
        const float* kj = f + j * row + (H + h) * D;
        for (int64_t d = 0; d < D; ++d) kt[d * n + j] = kj[d];
      }
      const float* v = f + (2 * H + h) * D;
      for (int64_t i = 0; i < J; ++i) {
        const float* qi = f + i * row + h * D;
        float* o = out + ((b * J + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) q[d] = qi[d] * scale;
        constexpr int kJV = (17 + W - 1) / W;  // vectors per query for 17 joints (H36M-17)
        if (n == kJV * W)
          scores_t<W, kJV>(kt.data(), q.data(), D, s.data());
        else
          scores_t_any(kt.data(), q.data(), D, n, s.data());
        const float inv = softmax_exp<W>(s.data(), J);
        if (D == 16)  // the default models: 64 channels, 4 heads
          weighted_values<W, 16 / W>(s.data(), inv, v, row, J, o);
        else {
          for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
          for (int64_t j = 0; j < J; ++j) {
            const float p = s[j] * inv;
            const float* vj = v + j * row;
            for (int64_t d = 0; d < D; ++d) acc[d] += p * vj[d];
          }
          std::memcpy(o, acc.data(), D * sizeof(float));
        }
      }
    }
  }
}

template <int W, bool kF16C, typename KV>
POSERT_INLINE void cached_impl(const float* qkv, const KV* cache_k, const KV* cache_v, const int64_t* lag,
                               const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                               float* out, float* k_new, float* v_new) {
  const int64_t nr = (M + 1 + 3) / 4 * 4;  // scores per head, padded to whole 4-lane vectors
  std::vector<float> q(D), s(M + 8), acc(D), bias(H * nr);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* lg = lag + b * M;
    if (D == 16)  // this stream's bias by slot, the same for every joint
      for (int64_t h = 0; h < H; ++h) {
        const float* tb = table + h * (M + 2);
        float* bh = bias.data() + h * nr;
        bh[0] = tb[0];
        for (int64_t m = 0; m < M; ++m) bh[m + 1] = tb[lg[m]];
        for (int64_t m = M + 1; m < nr; ++m) bh[m] = kPad;
      }
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
          head16<W, kF16C>(qh, kh, vh, cache_k + cache, cache_v + cache, bias.data() + h * nr, scale, M, s.data(), o);
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

void spatial_base(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D, float* out) {
  spatial_impl<4>(qkv, scale, B, J, H, D, out);
}

template <typename KV>
void cached_base(const float* qkv, const KV* cache_k, const KV* cache_v, const int64_t* lag, const float* table,
                 float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D, float* out, float* k_new,
                 float* v_new) {
  cached_impl<4, false>(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSERT_AVX2 1
// The same code compiled for AVX2 + FMA + F16C (8-lane spatial scores, fused multiply-adds, half
// loads by vcvtph2ps), chosen at run time; float results differ from the baseline body only by rounding (< 1e-6 relative).
__attribute__((target("avx2,fma,f16c"))) void spatial_avx2(const float* qkv, float scale, int64_t B, int64_t J, int64_t H,
                                                      int64_t D, float* out) {
  spatial_impl<8>(qkv, scale, B, J, H, D, out);
}

template <typename KV>
__attribute__((target("avx2,fma,f16c"))) void cached_avx2(const float* qkv, const KV* cache_k, const KV* cache_v,
                                                          const int64_t* lag, const float* table, float scale,
                                                          int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                                                          float* out, float* k_new, float* v_new) {
  cached_impl<8, true>(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}

bool cpu_has_avx2() {
  static const bool yes =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

std::atomic<bool> g_force_baseline{false};  // set_attention_isa("baseline"): tests run both bodies

#ifdef POSERT_AVX2
bool has_avx2() { return cpu_has_avx2() && !g_force_baseline.load(std::memory_order_relaxed); }
#endif

}  // namespace

void set_attention_isa(bool baseline) { g_force_baseline.store(baseline); }

void spatial_attention_cpu(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D, float* out) {
#ifdef POSERT_AVX2
  if (has_avx2()) return spatial_avx2(qkv, scale, B, J, H, D, out);
#endif
  spatial_base(qkv, scale, B, J, H, D, out);
}

namespace {
template <typename KV>
void cached_dispatch(const float* qkv, const KV* cache_k, const KV* cache_v, const int64_t* lag, const float* table,
                     float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D, float* out, float* k_new,
                     float* v_new) {
#ifdef POSERT_AVX2
  if (has_avx2()) return cached_avx2(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
#endif
  cached_base(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}
}  // namespace

void cached_attention_cpu(const float* qkv, const float* cache_k, const float* cache_v, const int64_t* lag,
                          const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                          float* out, float* k_new, float* v_new) {
  cached_dispatch(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}

void cached_attention_f16_cpu(const float* qkv, const uint16_t* cache_k, const uint16_t* cache_v, const int64_t* lag,
                              const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                              float* out, float* k_new, float* v_new) {
  cached_dispatch(qkv, cache_k, cache_v, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}

const char* attention_isa() {
#ifdef POSERT_AVX2
  if (has_avx2()) return "avx2+fma";
#endif
#if defined(__aarch64__)
  return "neon";
#else
  return "baseline";
#endif
}

}  // namespace posert
