// The attention cores of the streaming step (one new frame), for the ONNX Runtime CPU backend's
// split step: the step graphs run the dense layers, these kernels run what sits between a qkv
// projection and its output projection.
//
// Cached causal temporal attention of one new frame (the attention core of
// posert.models.blocks.TemporalAttention.step), for the ONNX Runtime CPU backend's split step:
// the step graphs run the dense layers, this kernel runs what sits between the qkv and the output
// projection, so ~1,000 tiny per-(stream, joint, head) products are one loop instead of a batched
// MatMul that ONNX Runtime dispatches item by item.
//
// Layout (row-major, float32 unless noted):
//   qkv     [B][J][3][H][D]   the qkv projection of the new frame (q, k, v; unscaled)
//   cache_k [B][J][H][M][D]   keys of the past frames in ring slots (any slot order)
//   cache_v [B][J][H][M][D]   values, same slots
//   lag     [B][M] int64      lag 1…M of each slot's frame, M + 1 for an empty slot
//   table   [H][M + 2]        bias by lag: rel[h][0…M] (learned), then MASK_VALUE for lag M + 1
//   out     [B][J][H][D]      attention output (before the output projection)
//   k_new, v_new [B][J][H][D] the new frame's key and value (copies, for the ring cache)
// For each (b, j, h), with q = scale · qkv[b][j][0][h]:
//   s_0 = q · k + table[h][0],   s_m = q · cache_k[b][j][h][m] + table[h][lag[b][m]]   (m = 1 … M)
//   p = softmax(s),   out = p_0 · v + Σ_m p_m · cache_v[b][j][h][m]
// (sliding-window attention with a learned relative-position bias; docs/design.md).
#pragma once
#include <cstdint>

namespace posert {

// Spatial attention of one frame: full softmax attention over its J joints, per stream and head.
//   qkv [B][J][3][H][D] → out [B][J][H][D];  out_i = Σ_j softmax_j(scale · q_i · k_j) · v_j
// (the attention core of posert.models.blocks.Attention.forward_flat, MixSTE's spatial layer).
void spatial_attention_cpu(const float* qkv, float scale, int64_t B, int64_t J, int64_t H, int64_t D, float* out);

void cached_attention_cpu(const float* qkv, const float* cache_k, const float* cache_v, const int64_t* lag,
                          const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                          float* out, float* k_new, float* v_new);

// The same with half-float caches (IEEE binary16 bits, half.h): keys and values are widened to
// float32 as they are read, and everything else is float32. The native backend's default caches.
void cached_attention_f16_cpu(const float* qkv, const uint16_t* cache_k, const uint16_t* cache_v, const int64_t* lag,
                              const float* table, float scale, int64_t B, int64_t J, int64_t H, int64_t M, int64_t D,
                              float* out, float* k_new, float* v_new);

// Which body the cores above run on this CPU: "avx2+fma" (x86-64 with AVX2, FMA and F16C: 8-lane
// spatial scores, fused multiply-adds, hardware half loads), "neon" (Arm) or "baseline" (SSE2). Results differ between
// bodies by float rounding only (< 1e-6 relative).
const char* attention_isa();

// true: run the baseline body even where AVX2 is present (so that tests check both bodies on one
// machine); false: choose by CPU (the default).
void set_attention_isa(bool baseline);

}  // namespace posert
