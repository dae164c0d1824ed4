// One incremental step of posert's spatio-temporal transformer (the lifter's or the denoiser's
// `step`, posert/models/blocks.py) as one fused kernel: every layer of one new frame of a stream,
// its key/value ring-cache write, and for the denoiser the DDIM update (D3PRefiner Eq. 9).
//
// Per batch row b (one stream; the CUDA kernel runs one thread block per row):
//   h   = embed(in) + joint_pos                 in = inp (lifter) or [x, inp] (denoiser), (J, in_ch)
//   per layer l:  h += cond (denoiser)
//                 h += proj(SpatialAttn(LN(h)));            h += MLP(LN(h))
//                 h += proj(CachedAttn(LN(h), cache_l));    h += MLP(LN(h))
//                 cache_l[b][:, :, pos] ← this frame's keys/values   (only if rows[b] ≥ 0)
//   pose = head(LN(h)), pelvis row 0             (J, 3) metres, root-relative
//   lifter:   x[b] ← pose, x_T[b] ← pose
//   denoiser: x[b] ← DDIM(x[b], ê = pose)        (a, b, ap, bp) as in ddim.h
// with MLP(z) = fc2(GELU_erf(fc1(z))), LayerNorm eps `eps`, attention scale `scale` = d^-1/2, the
// cached attention over the own frame and the M ring slots (lag of slot w from count[b]: (n − 1 − w)
// mod M + 1, M + 1 = empty → bias table[h][M + 1] = −1e4), and pos = count[b] mod M.
//
// Weights: one float32 vector in the order of `StepLayout` (linear weights transposed, [in][out]),
// written by posert.runtime.backends.cuda.pack_step. Caches: (2·depth, S, J, heads, M, d), k of
// layer l at 2l, v at 2l + 1; row b of the batch is stream b.
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace posert {

struct StepDims {
  int J, C, heads, depth, M, in_ch, hidden;  // hidden: MLP width
  float scale, eps;
  int root;      // joint whose output is pinned to 0 (the pelvis)
  int denoiser;  // 1: input [x, inp] + cond + DDIM epilogue; 0: lifter
};

// Offsets (in floats) of every tensor in the packed weight vector.
struct StepLayout {
  int64_t embed_w, embed_b, joint_pos, layers, layer_size, norm_w, norm_b, head_w, head_b, total;
  // within a layer (add layers + l * layer_size):
  int64_t s_ln1_w, s_ln1_b, s_qkv_w, s_qkv_b, s_proj_w, s_proj_b, s_ln2_w, s_ln2_b, s_fc1_w, s_fc1_b, s_fc2_w,
      s_fc2_b;
  int64_t t_ln1_w, t_ln1_b, t_qkv_w, t_qkv_b, t_proj_w, t_proj_b, t_table, t_ln2_w, t_ln2_b, t_fc1_w, t_fc1_b,
      t_fc2_w, t_fc2_b;
};

POSERT_HD inline StepLayout step_layout(const StepDims& d) {
  StepLayout L{};
  const int64_t C = d.C, J = d.J, Hd = d.hidden;
  int64_t o = 0;
  L.embed_w = o; o += d.in_ch * C;
  L.embed_b = o; o += C;
  L.joint_pos = o; o += J * C;
  L.layers = o;
  int64_t k = 0;
  L.s_ln1_w = k; k += C;  L.s_ln1_b = k; k += C;
  L.s_qkv_w = k; k += C * 3 * C;  L.s_qkv_b = k; k += 3 * C;
  L.s_proj_w = k; k += C * C;  L.s_proj_b = k; k += C;
  L.s_ln2_w = k; k += C;  L.s_ln2_b = k; k += C;
  L.s_fc1_w = k; k += C * Hd;  L.s_fc1_b = k; k += Hd;
  L.s_fc2_w = k; k += Hd * C;  L.s_fc2_b = k; k += C;
  L.t_ln1_w = k; k += C;  L.t_ln1_b = k; k += C;
  L.t_qkv_w = k; k += C * 3 * C;  L.t_qkv_b = k; k += 3 * C;
  L.t_proj_w = k; k += C * C;  L.t_proj_b = k; k += C;
  L.t_table = k; k += (int64_t)d.heads * (d.M + 2);
  L.t_ln2_w = k; k += C;  L.t_ln2_b = k; k += C;
  L.t_fc1_w = k; k += C * Hd;  L.t_fc1_b = k; k += Hd;
  L.t_fc2_w = k; k += Hd * C;  L.t_fc2_b = k; k += C;
  L.layer_size = k;
  o += d.depth * k;
  L.norm_w = o; o += C;
  L.norm_b = o; o += C;
  L.head_w = o; o += C * 3;
  L.head_b = o; o += 3;
  L.total = o;
  return L;
}

// Floats of the head of the shared memory both forms use: h and a (J, C), big (J, max(3C, hidden)),
// attention scores, the input frame and the lag table; each part a multiple of 4 floats.
POSERT_HD inline int64_t step_head_floats(const StepDims& d) {
  const int64_t JC = (int64_t)d.J * d.C, big = (int64_t)d.J * (3 * d.C > d.hidden ? 3 * d.C : d.hidden);
  const int64_t sp = (int64_t)d.heads * d.J * d.J, tp = (int64_t)d.J * d.heads * (d.M + 1);
  return 2 * JC + ((big + 3) & ~(int64_t)3) + (((sp > tp ? sp : tp) + 3) & ~(int64_t)3) +
         (((int64_t)d.J * 6 + d.M + 4 + 3) & ~(int64_t)3);
}

// Floats of scratch one batch row needs (the CUDA kernel's dynamic shared memory, one block per
// row): the head and the staged weights of one linear layer.
POSERT_HD inline int64_t step_scratch_floats(const StepDims& d) {
  int64_t w = (int64_t)d.C * 3 * d.C;  // the largest linear weight, staged in shared memory
  if ((int64_t)d.C * d.hidden > w) w = (int64_t)d.C * d.hidden;
  if ((int64_t)d.in_ch * d.C > w) w = (int64_t)d.in_ch * d.C;
  return step_head_floats(d) + w;
}

// Thread-block cluster form: the block of rank r of `cluster` holds, for every layer, the column
// slice [r·Cs, (r+1)·Cs), Cs = Cout / cluster, of each of the eight linear layers (k: spatial qkv,
// proj, fc1, fc2, then the temporal ones), in one contiguous per-rank vector
// (transformer_step_cluster_pack) that a single bulk copy moves into shared memory. The LayerNorm
// in front of qkv and fc1 (k = 0, 2, 4, 6) is folded into the slice: with LN(h) = (h − μ)·ρ·γ + β
// (Ba et al. 2016, "Layer Normalization"; ρ = (σ² + eps)^-1/2),
//   LN(h)·W + b = ρ·((h − μ)·W') + b',   W' = diag(γ)·W,   b' = b + β·W,
// so the kernel needs only the rows' (μ, ρ), not the normalised rows. Per layer and linear k: W'
// slice (Cin, Cs) row-major at w[k], b' slice (Cs) at b[k] (W and b for the linears without a
// LayerNorm); the lag table (heads, M + 2) at `table`. Every part starts at a multiple of 4 floats
// (16 bytes).
enum { kSQkv, kSProj, kSFc1, kSFc2, kTQkv, kTProj, kTFc1, kTFc2, kLinears };

struct ClusterLayout {
  int64_t w[kLinears], b[kLinears], table;
  int64_t layer;  // floats per layer
  int64_t rank;   // floats per rank: depth · layer
};

// (Cin, Cout) of the eight linears of a layer, in the order above.
POSERT_HD inline void step_linear_shapes(const StepDims& d, int* cin, int* cout) {
  const int C = d.C, Hd = d.hidden;
  const int ci[kLinears] = {C, C, C, Hd, C, C, C, Hd}, co[kLinears] = {3 * C, C, Hd, C, 3 * C, C, Hd, C};
  for (int k = 0; k < kLinears; ++k) {
    cin[k] = ci[k];
    cout[k] = co[k];
  }
}

POSERT_HD inline ClusterLayout cluster_layout(const StepDims& d, int cluster) {
  ClusterLayout L{};
  int cin[kLinears], cout[kLinears];
  step_linear_shapes(d, cin, cout);
  int64_t o = 0;
  for (int k = 0; k < kLinears; ++k) {
    const int64_t Cs = cout[k] / cluster;
    L.w[k] = o;
    o += ((int64_t)cin[k] * Cs + 3) & ~(int64_t)3;
    L.b[k] = o;
    o += (Cs + 3) & ~(int64_t)3;
  }
  L.table = o;
  o += ((int64_t)d.heads * (d.M + 2) + 3) & ~(int64_t)3;
  L.layer = o;
  L.rank = d.depth * o;
  return L;
}

// Floats of shared memory per block of the cluster form (transformer_step.cu): the head, the
// denoiser's timestep embedding (C, rounded to 4) and this rank's packed weights.
POSERT_HD inline int64_t step_cluster_floats(const StepDims& d, int cluster) {
  return step_head_floats(d) + ((d.C + 3) & ~(int64_t)3) + cluster_layout(d, cluster).rank;
}

// The per-rank vectors of the cluster form from the packed weights (step_layout): out (cluster,
// cluster_layout(d, cluster).rank) float32, the folding computed in double precision. Throws
// std::invalid_argument if cluster does not divide 3C, C and hidden.
void transformer_step_cluster_pack(const StepDims& d, const float* weights, int cluster, float* out);

// CPU twin: B rows, S streams in the caches. ddim: (a, b, ap, bp) for the denoiser, ignored for the
// lifter. x_T may be null. cond: (C,) for the denoiser.
void transformer_step_cpu(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                          float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                          int64_t S, const float* ddim);

// Fast CPU body (step_fast.cpp), the same contract and arithmetic as transformer_step_cpu: the rows
// in tiles of up to 8 streams, each linear layer one register-blocked product over a tile's
// tokens with bias, GELU (rational erf, |error| < 2e-7) and the residual add in its epilogue, and
// the attention cores of attention.h. AVX2 + FMA + F16C where attention_isa() says so, else 4 lanes.
// Results equal the twin's to float rounding. Single-threaded; calls on disjoint rows of the same
// cache may run concurrently (per-thread scratch, allocated once per thread).
void transformer_step_fast(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                           float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                           int64_t S, const float* ddim);

// The fast body with half-float caches (IEEE binary16 bits, half.h: round to nearest even on write,
// exact widening on read; all arithmetic float32): half the bytes a tick reads from its caches.
// Results differ from the float32-cache body by the rounding of the cached keys and values
// (≈ 0.05 mm on the default models; tests/kernels/test_step.py, tests/runtime/test_backends.py).
void transformer_step_fast_f16(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                               float* x_T, const float* cond, const int64_t* count, const int32_t* rows,
                               uint16_t* cache, int64_t S, const float* ddim);

// CUDA twin: device pointers; `stream` a cudaStream_t; `threads` per block: 256, 512 or 1024;
// `cluster` blocks (a thread-block cluster, sm_90+) per row: 1, 2, 4, 8 or 16 (see the .cu file);
// cluster > 1 also needs `packed`, the device copy of transformer_step_cluster_pack's output for
// the same weights and cluster (std::invalid_argument if null). pdl: launch as a programmatic
// dependent of the stream's previous kernel (sm_90+; ignored below): the kernel's prologue (the
// weight copy) overlaps that kernel's tail, and it waits for its completion before reading inputs.
// Throws std::runtime_error without a GPU, for a cluster on a GPU older than sm_90, or when the
// shared memory does not fit; std::invalid_argument for another `threads` or `cluster`.
void transformer_step_cuda(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                           float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                           int64_t S, float da, float db, float dap, float dbp, void* stream, int threads = 512,
                           int cluster = 1, const float* packed = nullptr, bool pdl = false);

}  // namespace posert
