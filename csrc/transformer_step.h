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

#include "hd.h"

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

// Floats of scratch one batch row needs (the CUDA kernel's dynamic shared memory): activations,
// scores, and the staged weights of one linear layer.
POSERT_HD inline int64_t step_scratch_floats(const StepDims& d) {
  const int64_t JC = (int64_t)d.J * d.C, big = (int64_t)d.J * (3 * d.C > d.hidden ? 3 * d.C : d.hidden);
  const int64_t sp = (int64_t)d.heads * d.J * d.J, tp = (int64_t)d.J * d.heads * (d.M + 1);
  const int64_t head = 2 * JC + big + (sp > tp ? sp : tp);
  int64_t w = (int64_t)d.C * 3 * d.C;  // the largest linear weight, staged in shared memory
  if ((int64_t)d.C * d.hidden > w) w = (int64_t)d.C * d.hidden;
  if ((int64_t)d.in_ch * d.C > w) w = (int64_t)d.in_ch * d.C;
  return head + (((int64_t)d.J * 6 + d.M + 4 + 3) & ~(int64_t)3) + w;
}

// The small tensors of a layer (LayerNorm weights, biases, the temporal lag table) that the cluster
// form keeps in shared memory: their offsets within the layer and lengths. Returns the floats they
// take per layer (each rounded up to 4).
enum { kSLn1W, kSLn1B, kSQkvB, kSProjB, kSLn2W, kSLn2B, kSFc1B, kSFc2B,
       kTLn1W, kTLn1B, kTQkvB, kTProjB, kTTable, kTLn2W, kTLn2B, kTFc1B, kTFc2B, kSmall };
POSERT_HD inline int64_t step_small_params(const StepDims& d, const StepLayout& L, int64_t* off, int64_t* len) {
  const int64_t C = d.C, Hd = d.hidden;
  const int64_t o[kSmall] = {L.s_ln1_w, L.s_ln1_b, L.s_qkv_b, L.s_proj_b, L.s_ln2_w, L.s_ln2_b, L.s_fc1_b, L.s_fc2_b,
                             L.t_ln1_w, L.t_ln1_b, L.t_qkv_b, L.t_proj_b, L.t_table, L.t_ln2_w, L.t_ln2_b, L.t_fc1_b,
                             L.t_fc2_b};
  const int64_t n[kSmall] = {C, C, 3 * C, C, C, C, Hd, C, C, C, 3 * C, C, (int64_t)d.heads * (d.M + 2), C, C, Hd, C};
  int64_t total = 0;
  for (int k = 0; k < kSmall; ++k) {
    off[k] = o[k];
    len[k] = n[k];
    total += (n[k] + 3) & ~(int64_t)3;
  }
  return total;
}

// Floats of shared memory per block of the cluster form (transformer_step.cu) with `cluster` blocks
// per row: the activations, this frame's keys/values, and the block's slices (Cout / cluster
// columns) of every spatial/temporal linear weight of every layer, the small tensors of every
// layer and the denoiser's timestep embedding.
POSERT_HD inline int64_t step_cluster_floats(const StepDims& d, int cluster) {
  const int64_t JC = (int64_t)d.J * d.C, big = (int64_t)d.J * (3 * d.C > d.hidden ? 3 * d.C : d.hidden);
  const int64_t sp = (int64_t)d.heads * d.J * d.J, tp = (int64_t)d.J * d.heads * (d.M + 1);
  const int64_t head = 2 * JC + big + (sp > tp ? sp : tp) + (((int64_t)d.J * 6 + d.M + 4 + 3) & ~(int64_t)3);
  const int64_t C = d.C, Hd = d.hidden;
  auto slice = [&](int64_t cin, int64_t cout) { return (cin * (cout / cluster) + 3) & ~(int64_t)3; };
  const int64_t layer = 2 * (slice(C, 3 * C) + slice(C, C) + slice(C, Hd) + slice(Hd, C));
  int64_t off[kSmall], len[kSmall];
  const int64_t small = step_small_params(d, step_layout(d), off, len);
  return head + 2 * JC + ((C + 3) & ~(int64_t)3) + d.depth * (layer + small);
}

// CPU twin: B rows, S streams in the caches. ddim: (a, b, ap, bp) for the denoiser, ignored for the
// lifter. x_T may be null. cond: (C,) for the denoiser.
void transformer_step_cpu(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                          float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                          int64_t S, const float* ddim);

// CUDA twin: device pointers; `stream` a cudaStream_t; `threads` per block: 256, 512 or 1024;
// `cluster` blocks (a thread-block cluster, sm_90+) per row: 1, 2, 4, 8 or 16 (see the .cu file).
// Throws std::runtime_error without a GPU, for a cluster on a GPU older than sm_90, or when the
// shared memory does not fit; std::invalid_argument for another `threads` or `cluster`.
void transformer_step_cuda(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                           float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                           int64_t S, float da, float db, float dap, float dbp, void* stream, int threads = 512,
                           int cluster = 1);

}  // namespace posert
