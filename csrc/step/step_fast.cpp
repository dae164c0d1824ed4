// Fast CPU body of the fused transformer step (transformer_step.h, transformer_step_fast): the
// same arithmetic as the plain-loop twin (transformer_step.cpp), organised for a CPU cache and
// its vector units instead of one stream at a time:
//   - the batch runs in tiles of up to kTile streams (kTile·J tokens), so every linear layer is
//     one matrix product over the tile's tokens and each weight panel is read once per tile;
//   - the products are register-blocked: 5 tokens × 2 vectors of outputs accumulate in 10
//     registers while the weight row [in][o0, o0 + 2W) streams from L1 (weights are stored
//     transposed, [in][out], by pack_step, so no packing is needed);
//   - bias, GELU and the residual add are fused into the product's epilogue;
//   - the attention cores are attention.h's (the ONNX Runtime backend's split step uses them too);
//   - GELU's erf is a rational approximation (|error| < 2e-7), not std::erf per value.
// Compiled for the baseline ISA (4 lanes: SSE2 on x86-64, NEON on Arm) and for AVX2 + FMA + F16C
// (8 lanes, chosen at run time); results agree with the twin to float rounding (tests/kernels/test_step.py).
// The caches may be float32 (transformer_step_fast) or half floats (transformer_step_fast_f16: keys
// and values rounded to binary16 when written, widened when read; all arithmetic in float32).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "attention/attention.h"
#include "cache/ddim.h"
#include "common/half.h"
#include "common/lanes.h"
#include "step/transformer_step.h"

namespace posert {
namespace {

using lanes::Lanes;
using lanes::load;
using lanes::store;

constexpr int kTile = 8;  // streams per tile: 136 tokens, whose activations (≈ 140 KB) stay in L2
constexpr int kRows = 5;  // tokens per register block: 10 accumulators, no spills (6 spills one)

// GELU(x) = x/2 · (1 + erf(x/√2)) (Hendrycks & Gimpel 2016; torch's exact form). erf(z) for
// z clamped to [-4, 4] (erf(4) = 1 − 1.5e-8) as z·P(z²)/Q(z²), the rational approximation of
// Eigen's generic_fast_erf_float: |error| < 7e-8 in exact arithmetic, ≈ 2e-7 in float.
template <int W>
POSERT_INLINE typename Lanes<W>::f vgelu(typename Lanes<W>::f x) {
  typedef typename Lanes<W>::f vf;
  const vf lo = vf{} - 4.0f, hi = vf{} + 4.0f;
  vf z = x * 0.70710678118654752f;
  z = z < lo ? lo : z;
  z = z > hi ? hi : z;
  const vf z2 = z * z;
  vf p = z2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = p * z2 + -2.10102402082508e-06f;
  p = p * z2 + -5.69250639462346e-05f;
  p = p * z2 + -7.34990630326855e-04f;
  p = p * z2 + -2.95459980854025e-03f;
  p = p * z2 + -1.60960333262415e-02f;
  vf q = z2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = q * z2 + -1.68282697438203e-03f;
  q = q * z2 + -7.37332916720468e-03f;
  q = q * z2 + -1.42647390514189e-02f;
  return x * 0.5f * (1.0f + z * p / q);
}

// Rows [0, MR) of out (row stride Cout), columns [o0, o0 + 2W):
//   out[r][o] (= or +=) epi(b[o] + Σ_i X[r][i] · WT[i][o])   (epi: GELU or identity)
template <int W, int MR, bool ADD, bool GELU>
POSERT_INLINE void block(const float* X, int Cin, const float* WT, const float* b, int Cout, int o0, float* out) {
  typedef typename Lanes<W>::f vf;
  vf acc[MR][2];
  const vf b0 = load<W>(b + o0), b1 = load<W>(b + o0 + W);
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = b0;
    acc[r][1] = b1;
  }
  const float* w = WT + o0;
  for (int i = 0; i < Cin; ++i, w += Cout) {
    const vf w0 = load<W>(w), w1 = load<W>(w + W);
    for (int r = 0; r < MR; ++r) {
      const float xv = X[r * Cin + i];
      acc[r][0] += xv * w0;
      acc[r][1] += xv * w1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* o = out + r * Cout + o0;
    vf y0 = acc[r][0], y1 = acc[r][1];
    if constexpr (GELU) {
      y0 = vgelu<W>(y0);
      y1 = vgelu<W>(y1);
    }
    if constexpr (ADD) {
      y0 += load<W>(o);
      y1 += load<W>(o + W);
    }
    store<W>(o, y0);
    store<W>(o + W, y1);
  }
}

// out (N, Cout) (= or +=) epi(X (N, Cin) · WT (Cin, Cout) + b): column blocks of 2W outermost,
// so a block's weight panel (Cin × 2W) stays in L1 while the tokens stream past it; the columns
// beyond the last full block (the pose head's 3) in plain loops.
template <int W, bool ADD, bool GELU>
POSERT_INLINE void linear(const float* X, int N, int Cin, const float* WT, const float* b, int Cout, float* out) {
  int o0 = 0;
  for (; o0 + 2 * W <= Cout; o0 += 2 * W) {
    int n = 0;
    for (; n + kRows <= N; n += kRows) block<W, kRows, ADD, GELU>(X + n * Cin, Cin, WT, b, Cout, o0, out + n * Cout);
    const float* Xn = X + n * Cin;
    float* On = out + n * Cout;
    switch (N - n) {
      case 4: block<W, 4, ADD, GELU>(Xn, Cin, WT, b, Cout, o0, On); break;
      case 3: block<W, 3, ADD, GELU>(Xn, Cin, WT, b, Cout, o0, On); break;
      case 2: block<W, 2, ADD, GELU>(Xn, Cin, WT, b, Cout, o0, On); break;
      case 1: block<W, 1, ADD, GELU>(Xn, Cin, WT, b, Cout, o0, On); break;
      default: break;
    }
  }
  for (; o0 < Cout; ++o0)
    for (int n = 0; n < N; ++n) {
      float y = b[o0];
      for (int i = 0; i < Cin; ++i) y += X[n * Cin + i] * WT[(int64_t)i * Cout + o0];
      if constexpr (GELU) y = y * (std::erf(y * 0.70710678118654752f) + 1.0f) * 0.5f;
      out[n * Cout + o0] = ADD ? out[n * Cout + o0] + y : y;
    }
}

// out (N, C) = LayerNorm(x (N, C)) with weight g, bias be (two-pass mean and variance).
template <int W>
POSERT_INLINE void layernorm(const float* x, int N, int C, const float* g, const float* be, float eps, float* out) {
  typedef typename Lanes<W>::f vf;
  for (int n = 0; n < N; ++n) {
    const float* r = x + n * C;
    float* o = out + n * C;
    int c = 0;
    vf s = {};
    for (; c + W <= C; c += W) s += load<W>(r + c);
    float mean = 0.0f;
    for (int l = 0; l < W; ++l) mean += s[l];
    for (; c < C; ++c) mean += r[c];
    mean /= C;
    vf v = {};
    for (c = 0; c + W <= C; c += W) {
      const vf dv = load<W>(r + c) - mean;
      v += dv * dv;
    }
    float var = 0.0f;
    for (int l = 0; l < W; ++l) var += v[l];
    for (; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
    const float inv = 1.0f / std::sqrt(var / C + eps);
    for (c = 0; c + W <= C; c += W) store<W>(o + c, (load<W>(r + c) - mean) * inv * load<W>(g + c) + load<W>(be + c));
    for (; c < C; ++c) o[c] = (r[c] - mean) * inv * g[c] + be[c];
  }
}

// Per-thread scratch of one tile, grown once and reused (no allocation on later calls).
struct Scratch {
  std::vector<float> h, a, big, in, kn, vn, pose;
  std::vector<int64_t> lag;
};

// The cached attention core for the cache's element type: float, or half bits (half.h).
POSERT_INLINE void cached_attention(const float* qkv, const float* ck, const float* cv, const int64_t* lag,
                                    const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M,
                                    int64_t D, float* out, float* k_new, float* v_new) {
  cached_attention_cpu(qkv, ck, cv, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}
POSERT_INLINE void cached_attention(const float* qkv, const uint16_t* ck, const uint16_t* cv, const int64_t* lag,
                                    const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M,
                                    int64_t D, float* out, float* k_new, float* v_new) {
  cached_attention_f16_cpu(qkv, ck, cv, lag, table, scale, B, J, H, M, D, out, k_new, v_new);
}

// D floats → D cache elements (copies, or half rounded to nearest even).
POSERT_INLINE void put_kv(const float* src, int D, float* dst) { std::copy(src, src + D, dst); }
POSERT_INLINE void put_kv(const float* src, int D, uint16_t* dst) {
  for (int e = 0; e < D; ++e) dst[e] = float_to_half(src[e]);
}

template <int W, typename KV>
POSERT_INLINE void step_impl(const StepDims& d, const float* Wt, int64_t B, const float* inp, float* x, float* x_T,
                             const float* cond, const int64_t* count, const int32_t* rows, KV* cache, int64_t S,
                             const float* ddim) {
  const StepLayout L = step_layout(d);
  const int J = d.J, C = d.C, H = d.heads, D = C / H, M = d.M, Hd = d.hidden, cin = d.in_ch;
  const int64_t JHMD = (int64_t)J * H * M * D;
  thread_local Scratch s;
  const size_t T = (size_t)kTile * J;
  s.h.resize(T * C);
  s.a.resize(T * C);
  s.big.resize(T * std::max(3 * C, Hd));
  s.in.resize(T * cin);
  s.kn.resize(T * C);
  s.vn.resize(T * C);
  s.pose.resize(T * 3);
  s.lag.resize((size_t)kTile * M);
  float *h = s.h.data(), *a = s.a.data(), *big = s.big.data(), *pose = s.pose.data();
  for (int64_t b0 = 0; b0 < B; b0 += kTile) {
    const int R = (int)std::min<int64_t>(kTile, B - b0), N = R * J;
    // input → embedding + joint position
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < J; ++j) {
        const int64_t t = (b0 + r) * J + j;
        float* o = s.in.data() + (r * J + j) * cin;
        for (int c = 0; c < cin; ++c)
          o[c] = d.denoiser ? (c < 3 ? x[t * 3 + c] : inp[t * 3 + c - 3]) : inp[t * 3 + c];
      }
    linear<W, false, false>(s.in.data(), N, cin, Wt + L.embed_w, Wt + L.embed_b, C, h);
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < J * C; ++i) h[r * J * C + i] += Wt[L.joint_pos + i];
    for (int r = 0; r < R; ++r) {  // lag of ring slot w: (n − 1 − w) mod M + 1, M + 1 when empty
      const int64_t n = count[b0 + r];
      for (int w = 0; w < M; ++w) {
        const int64_t l = ((n - 1 - w) % M + M) % M + 1;
        s.lag[r * M + w] = l > n ? M + 1 : l;
      }
    }
    for (int l = 0; l < d.depth; ++l) {
      const float* P = Wt + L.layers + l * L.layer_size;
      if (d.denoiser)
        for (int n = 0; n < N; ++n)
          for (int c = 0; c < C; ++c) h[n * C + c] += cond[c];
      // spatial attention over the J joints of each frame
      layernorm<W>(h, N, C, P + L.s_ln1_w, P + L.s_ln1_b, d.eps, a);
      linear<W, false, false>(a, N, C, P + L.s_qkv_w, P + L.s_qkv_b, 3 * C, big);
      spatial_attention_cpu(big, d.scale, R, J, H, D, a);
      linear<W, true, false>(a, N, C, P + L.s_proj_w, P + L.s_proj_b, C, h);
      layernorm<W>(h, N, C, P + L.s_ln2_w, P + L.s_ln2_b, d.eps, a);
      linear<W, false, true>(a, N, C, P + L.s_fc1_w, P + L.s_fc1_b, Hd, big);
      linear<W, true, false>(big, N, Hd, P + L.s_fc2_w, P + L.s_fc2_b, C, h);
      // temporal attention: each new frame over its cached past, per joint and head
      layernorm<W>(h, N, C, P + L.t_ln1_w, P + L.t_ln1_b, d.eps, a);
      linear<W, false, false>(a, N, C, P + L.t_qkv_w, P + L.t_qkv_b, 3 * C, big);
      KV* ck = cache + ((int64_t)(2 * l) * S + b0) * JHMD;
      KV* cv = cache + ((int64_t)(2 * l + 1) * S + b0) * JHMD;
      cached_attention(big, ck, cv, s.lag.data(), P + L.t_table, d.scale, R, J, H, M, D, a, s.kn.data(), s.vn.data());
      for (int r = 0; r < R; ++r) {  // this frame's keys/values into ring slot n mod M (after every read)
        if (rows[b0 + r] < 0) continue;
        const int pos = (int)(count[b0 + r] % M);
        for (int jh = 0; jh < J * H; ++jh) {
          const int64_t dst = r * JHMD + ((int64_t)jh * M + pos) * D, src = ((int64_t)r * J * H + jh) * D;
          put_kv(s.kn.data() + src, D, ck + dst);
          put_kv(s.vn.data() + src, D, cv + dst);
        }
      }
      linear<W, true, false>(a, N, C, P + L.t_proj_w, P + L.t_proj_b, C, h);
      layernorm<W>(h, N, C, P + L.t_ln2_w, P + L.t_ln2_b, d.eps, a);
      linear<W, false, true>(a, N, C, P + L.t_fc1_w, P + L.t_fc1_b, Hd, big);
      linear<W, true, false>(big, N, Hd, P + L.t_fc2_w, P + L.t_fc2_b, C, h);
    }
    layernorm<W>(h, N, C, Wt + L.norm_w, Wt + L.norm_b, d.eps, a);
    linear<W, false, false>(a, N, C, Wt + L.head_w, Wt + L.head_b, 3, pose);
    for (int r = 0; r < R; ++r) {
      float* pr = pose + r * J * 3;
      for (int c = 0; c < 3; ++c) pr[d.root * 3 + c] = 0.0f;
      float* xb = x + (b0 + r) * J * 3;
      if (d.denoiser) {  // DDIM update (ddim.h), ê = pose
        ddim_update_cpu(xb, pr, xb, J * 3, ddim[0], ddim[1], ddim[2], ddim[3]);
      } else {
        std::copy(pr, pr + J * 3, xb);
        if (x_T) std::copy(pr, pr + J * 3, x_T + (b0 + r) * J * 3);
      }
    }
  }
}

template <typename KV>
void step_base(const StepDims& d, const float* W, int64_t B, const float* inp, float* x, float* x_T,
               const float* cond, const int64_t* count, const int32_t* rows, KV* cache, int64_t S,
               const float* ddim) {
  step_impl<4>(d, W, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSERT_STEP_AVX2 1
template <typename KV>
__attribute__((target("avx2,fma,f16c"))) void step_avx2(const StepDims& d, const float* W, int64_t B,
                                                        const float* inp, float* x, float* x_T, const float* cond,
                                                        const int64_t* count, const int32_t* rows, KV* cache,
                                                        int64_t S, const float* ddim) {
  step_impl<8>(d, W, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
}
#endif

template <typename KV>
void step_dispatch(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x, float* x_T,
                   const float* cond, const int64_t* count, const int32_t* rows, KV* cache, int64_t S,
                   const float* ddim) {
#ifdef POSERT_STEP_AVX2
  if (std::strcmp(attention_isa(), "avx2+fma") == 0)  // follows set_attention_isa
    return step_avx2(d, weights, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
#endif
  step_base(d, weights, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
}

}  // namespace

void transformer_step_fast(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                           float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                           int64_t S, const float* ddim) {
  step_dispatch(d, weights, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
}

void transformer_step_fast_f16(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                               float* x_T, const float* cond, const int64_t* count, const int32_t* rows,
                               uint16_t* cache, int64_t S, const float* ddim) {
  step_dispatch(d, weights, B, inp, x, x_T, cond, count, rows, cache, S, ddim);
}

}  // namespace posert
