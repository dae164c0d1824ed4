// CUDA twin of the fused transformer step (transformer_step.h). A tick of posert's CUDA-graph
// backend is three launches (lifter, K = 2 denoiser steps) instead of hundreds of framework kernels.
//
// Two launch forms of the same kernel:
// - cluster = 1: one thread block per batch row (stream), every activation of the row in shared
//   memory; each linear layer's weights are staged in shared memory before its FMA loop.
// - cluster = NC > 1 (sm_90+, thread-block clusters): NC blocks on NC SMs per row. Every block
//   keeps a full copy of the row's activations and computes the cheap parts (LayerNorm, attention)
//   redundantly; each linear layer is split by output columns, block r computing columns
//   [r·Cout/NC, (r+1)·Cout/NC) from its weight slice, which is loaded once per launch into shared
//   memory (cp.async) and stored into every block's copy through distributed shared memory, then
//   one cluster barrier. One row's step then runs on NC SMs instead of one (CUDA Programming Guide,
//   "Thread Block Clusters" and "Distributed Shared Memory").
#include <cooperative_groups.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <map>
#include <string>

#include "cuda_check.h"
#include "transformer_step.h"

namespace posert {
namespace {


// Copy n floats of weights into shared memory with every thread of the block, 16 bytes per load
// where the source is aligned (all loads of the block in flight at once, not one per FMA).
__device__ void stage(float* dst, const float* __restrict__ src, int n) {
  if (((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15) == 0 && (n & 3) == 0) {
    const float4* s4 = reinterpret_cast<const float4*>(src);
    float4* d4 = reinterpret_cast<float4*>(dst);
    for (int i = threadIdx.x; i < (n >> 2); i += blockDim.x) d4[i] = __ldg(s4 + i);
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = __ldg(src + i);
  }
  __syncthreads();
}

// out[t][o] (= or +=) b[o] + Σ_i in[t][i] · WT[i][o]; mode 0 store, 1 add, 2 GELU (erf) then store.
// WT is first staged into shared memory `ws`; each thread then computes the output o of up to 4
// tokens from shared memory only.
__device__ void linear(const float* in, int J, int Cin, const float* __restrict__ WT, const float* __restrict__ b,
                       int Cout, float* out, int mode, float* ws) {
  stage(ws, WT, Cin * Cout);
  const int groups = (J + 3) / 4;
  for (int idx = threadIdx.x; idx < groups * Cout; idx += blockDim.x) {
    const int g = idx / Cout, o = idx - g * Cout, t0 = g * 4;
    const int nt = J - t0 < 4 ? J - t0 : 4;
    const float bo = __ldg(b + o);
    float acc[4] = {bo, bo, bo, bo};
    if (nt == 4) {
      const float *r0 = in + t0 * Cin, *r1 = r0 + Cin, *r2 = r1 + Cin, *r3 = r2 + Cin;
#pragma unroll 8
      for (int i = 0; i < Cin; ++i) {
        const float w = ws[i * Cout + o];
        acc[0] = fmaf(r0[i], w, acc[0]);
        acc[1] = fmaf(r1[i], w, acc[1]);
        acc[2] = fmaf(r2[i], w, acc[2]);
        acc[3] = fmaf(r3[i], w, acc[3]);
      }
    } else {
      for (int i = 0; i < Cin; ++i) {
        const float w = ws[i * Cout + o];
        for (int u = 0; u < nt; ++u) acc[u] = fmaf(in[(t0 + u) * Cin + i], w, acc[u]);
      }
    }
    for (int u = 0; u < nt; ++u) {
      float y = acc[u];
      float* dst = out + (t0 + u) * Cout + o;
      if (mode == 2) y = y * (erff(y / 1.4142135623730951f) + 1.0f) * 0.5f;
      *dst = mode == 1 ? *dst + y : y;
    }
  }
  __syncthreads();
}

// ---- thread-block cluster helpers (sm_90+; never launched below, see transformer_step_cuda) ----
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define POSERT_CLUSTER 1
namespace cg = cooperative_groups;
#endif

__device__ __forceinline__ void cluster_sync() {
#ifdef POSERT_CLUSTER
  cg::this_cluster().sync();
#else
  __trap();
#endif
}

__device__ __forceinline__ float* peer_smem(float* p, int r) {
#ifdef POSERT_CLUSTER
  return cg::this_cluster().map_shared_rank(p, r);
#else
  __trap();
  return p;
#endif
}

// Asynchronously copy columns [o0, o0 + Cs) of the row-major (Cin, Cout) weight WT into dst
// (Cin, Cs), 16 bytes per copy where aligned. Completed by __pipeline_wait_prior(0).
__device__ void preload_slice(float* dst, const float* __restrict__ WT, int Cin, int Cout, int Cs, int o0) {
#ifdef POSERT_CLUSTER
  const bool v4 = (Cs & 3) == 0 && (Cout & 3) == 0 && (o0 & 3) == 0 &&
                  ((reinterpret_cast<uintptr_t>(WT) | reinterpret_cast<uintptr_t>(dst)) & 15) == 0;
  if (v4) {
    const int q = Cs >> 2;
    for (int k = threadIdx.x; k < Cin * q; k += blockDim.x) {
      const int i = k / q, c = (k - i * q) << 2;
      __pipeline_memcpy_async(dst + i * Cs + c, WT + (int64_t)i * Cout + o0 + c, 16);
    }
  } else {
    for (int k = threadIdx.x; k < Cin * Cs; k += blockDim.x) {
      const int i = k / Cs, c = k - i * Cs;
      __pipeline_memcpy_async(dst + i * Cs + c, WT + (int64_t)i * Cout + o0 + c, 4);
    }
  }
#else
  __trap();
#endif
}

// Cluster form of `linear`: this block (rank r of NC) computes the columns o in
// [r·Cs, (r+1)·Cs), Cs = Cout / NC, of every token from its weight slice ws (Cin, Cs) in shared
// memory, four threads per output (split over i, summed by warp shuffles), and stores each result
// into `out` of every block of the cluster; b (Cout,) in shared memory. Ends with a cluster barrier, after which every block's
// `out` holds all Cout columns. Modes as `linear`; mode 1 adds to the block's own copy (all copies
// are equal).
__device__ void linear_cluster(const float* in, int J, int Cin, const float* ws, const float* b,
                               int Cout, float* out, int mode, int rank, int NC) {
  const int Cs = Cout / NC, o0 = rank * Cs;
  const int work = J * Cs * 4;
  const int rounds = (work + blockDim.x - 1) / blockDim.x;  // every lane of a warp runs every round
  for (int rd = 0; rd < rounds; ++rd) {
    const int w = rd * blockDim.x + threadIdx.x;
    const bool valid = w < work;
    const int item = valid ? w >> 2 : 0, q = w & 3;
    const int t = item / Cs, oo = item - t * Cs;
    float acc = 0.0f;
    if (valid) {
      const float* r = in + t * Cin;
#pragma unroll 4
      for (int i = q; i < Cin; i += 4) acc = fmaf(r[i], ws[i * Cs + oo], acc);
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    acc += __shfl_xor_sync(0xffffffffu, acc, 2);
    float y = 0.0f;
    if (valid) {
      y = acc + b[o0 + oo];
      if (mode == 2) y = y * (erff(y / 1.4142135623730951f) + 1.0f) * 0.5f;
      if (mode == 1) y += out[t * Cout + o0 + oo];
    }
    __syncwarp();  // every lane has read out[t][o] before any lane of the quad overwrites it
    if (valid)
      for (int p = q; p < NC; p += 4) peer_smem(out, p)[t * Cout + o0 + oo] = y;
  }
  cluster_sync();
}

// out[t][o] (= or +=) b[o] + Σ_i in[t][i] · WT[i][o] with WT read from global memory: for the tiny
// embedding and head layers of the cluster form.
__device__ void linear_direct(const float* in, int J, int Cin, const float* __restrict__ WT,
                              const float* __restrict__ b, int Cout, float* out) {
  for (int idx = threadIdx.x; idx < J * Cout; idx += blockDim.x) {
    const int t = idx / Cout, o = idx - t * Cout;
    float acc = __ldg(b + o);
    for (int i = 0; i < Cin; ++i) acc = fmaf(in[t * Cin + i], __ldg(WT + (int64_t)i * Cout + o), acc);
    out[idx] = acc;
  }
  __syncthreads();
}

// Sixteen threads per token, two-pass mean/variance over C, biased variance as torch.nn.LayerNorm.
// w and b may be in global or shared memory.
__device__ void layernorm(const float* x, int J, int C, const float* w, const float* b, float eps, float* out) {
  const int lane = threadIdx.x & 15, grp = threadIdx.x >> 4, ng = blockDim.x >> 4;
  const int rounds = (J + ng - 1) / ng;  // every lane runs every round (full-warp shuffles)
  for (int rd = 0; rd < rounds; ++rd) {
    const int t = rd * ng + grp;
    const bool valid = t < J;
    const float* r = x + (valid ? t : 0) * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 16) s += r[c];
    for (int k = 8; k > 0; k >>= 1) s += __shfl_xor_sync(0xffffffffu, s, k, 16);
    const float mean = s / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 16) v += (r[c] - mean) * (r[c] - mean);
    for (int k = 8; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k, 16);
    const float inv = rsqrtf(v / C + eps);
    if (valid)
      for (int c = lane; c < C; c += 16) out[t * C + c] = (r[c] - mean) * inv * w[c] + b[c];
  }
  __syncthreads();
}

// Softmax of `rows` rows of length n (stride n), one thread per row.
__device__ void softmax_rows(float* s, int rows, int n) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    float* p = s + r * n;
    float m = p[0];
    for (int i = 1; i < n; ++i) m = fmaxf(m, p[i]);
    float z = 0.0f;
    for (int i = 0; i < n; ++i) z += (p[i] = __expf(p[i] - m));
    const float inv = 1.0f / z;
    for (int i = 0; i < n; ++i) p[i] *= inv;
  }
  __syncthreads();
}

// Phase timing for kernel work (build with CMAKE_CUDA_FLAGS=-DPOSERT_STEP_PROFILE): thread 0 of
// block 0 records clock64() after every phase and prints the cycles of each phase for the call
// whose count[0] is 30. Off by default (no cost).
#ifdef POSERT_STEP_PROFILE
#define PROF_INIT        \
  long long _pt[200];    \
  const char* _pl[200];  \
  int _pn = 0;
#define PROF(lbl)                                  \
  if (threadIdx.x == 0 && _pn < 200) {             \
    _pt[_pn] = clock64();                          \
    _pl[_pn++] = lbl;                              \
  }
#define PROF_DUMP                                                                                   \
  if (threadIdx.x == 0 && blockIdx.x == 0 && count[0] == 30) {                                       \
    for (int _i = 1; _i < _pn; ++_i)                                                                \
      printf("PROF den=%d nc=%d %s %lld\n", d.denoiser, NC, _pl[_i], _pt[_i] - _pt[_i - 1]);        \
    printf("PROF den=%d nc=%d total %lld\n", d.denoiser, NC, _pt[_pn - 1] - _pt[0]);                \
  }
#else
#define PROF_INIT
#define PROF(lbl)
#define PROF_DUMP
#endif

// Linear layers of a block in the order their weight slices are preloaded (cluster form).
enum { kSQkv, kSProj, kSFc1, kSFc2, kTQkv, kTProj, kTFc1, kTFc2, kLinears };

template <int kThreads, bool kCluster>
__global__ void __launch_bounds__(kThreads) step_kernel(StepDims d, const float* __restrict__ W, const float* inp,
                                                        float* x, float* x_T, const float* __restrict__ cond,
                                                        const int64_t* count, const int32_t* rows, float* cache,
                                                        int64_t S, float da, float db, float dap, float dbp) {
  extern __shared__ __align__(16) float smem[];
  const StepLayout L = step_layout(d);
  const int J = d.J, C = d.C, H = d.heads, D = C / H, M = d.M, Hd = d.hidden;
  int rank = 0, NC = 1;
#ifdef POSERT_CLUSTER
  if (kCluster) {
    rank = (int)cg::this_cluster().block_rank();
    NC = (int)cg::this_cluster().num_blocks();
  }
#endif
  PROF_INIT
  PROF("start")
  const int64_t b = blockIdx.x / NC;
  const int tid = threadIdx.x, nt = blockDim.x;
  float* h = smem;                                   // (J, C) residual stream
  float* a = h + J * C;                              // (J, C) normalised input / attention output
  float* big = a + J * C;                            // (J, 3C) qkv or (J, hidden) MLP
  const int bigsz = J * (3 * C > Hd ? 3 * C : Hd);
  float* sc = big + bigsz;                           // attention scores
  const int sp = H * J * J, tp = J * H * (M + 1);
  float* in = sc + (sp > tp ? sp : tp);              // (J, in_ch)
  int* lag = reinterpret_cast<int*>(in + J * 6);     // (M,)
  float* ws = in + ((J * 6 + M + 4 + 3) & ~3);       // cluster 1: staged weights of the current linear
  float* kv = ws;                                    // cluster NC: this frame's keys/values (2, J, C)
  float* wsl = kv + 2 * J * C;                       // cluster NC: this block's weight slices, all layers

  // cluster form: the (Cin, Cout) shape of every linear of a layer and its slice offset in wsl
  const int cin[kLinears] = {C, C, C, Hd, C, C, C, Hd}, cout[kLinears] = {3 * C, C, Hd, C, 3 * C, C, Hd, C};
  const int64_t woff[kLinears] = {L.s_qkv_w, L.s_proj_w, L.s_fc1_w, L.s_fc2_w,
                                  L.t_qkv_w, L.t_proj_w, L.t_fc1_w, L.t_fc2_w};
  int64_t so[kLinears + 1];
  so[0] = 0;
  for (int k = 0; k < kLinears; ++k) so[k + 1] = so[k] + (((int64_t)cin[k] * (cout[k] / NC) + 3) & ~(int64_t)3);
  // cluster form: the small tensors of every layer (LayerNorm, biases, lag table) in shared memory too
  int64_t poff[kSmall], plen[kSmall], pso[kSmall];
  const int64_t PS = step_small_params(d, L, poff, plen);
  for (int k = 0, o = 0; k < kSmall; o += (int)((plen[k] + 3) & ~3), ++k) pso[k] = o;
  float* prm = wsl + d.depth * so[kLinears];  // (depth, PS)
  float* cnd = prm + d.depth * PS;            // (C,) the denoiser's timestep embedding
  if (kCluster) {
    for (int l = 0; l < d.depth; ++l) {
      for (int k = 0; k < kLinears; ++k)
        preload_slice(wsl + l * so[kLinears] + so[k], W + L.layers + l * L.layer_size + woff[k], cin[k], cout[k],
                      cout[k] / NC, rank * (cout[k] / NC));
      for (int k = 0; k < kSmall; ++k)  // (Cin, Cout) = (1, len): a plain copy
        preload_slice(prm + l * PS + pso[k], W + L.layers + l * L.layer_size + poff[k], 1, (int)plen[k],
                      (int)plen[k], 0);
    }
#ifdef POSERT_CLUSTER
    __pipeline_commit();
#endif
    if (d.denoiser)
      for (int i = tid; i < C; i += nt) cnd[i] = cond[i];
  }
  // a small tensor of layer l: from shared memory (cluster form) or global memory
  auto par = [&](int l, int k) -> const float* {
    return kCluster ? prm + l * PS + pso[k] : W + L.layers + l * L.layer_size + poff[k];
  };
  // one linear of layer l (P = its weights): staged (cluster 1) or split over the cluster
  auto lin = [&](int l, const float* P, int k, const float* src, const float* bias, float* dst, int mode) {
    (void)P;
    if (kCluster)
      linear_cluster(src, J, cin[k], wsl + l * so[kLinears] + so[k], bias, cout[k], dst, mode, rank, NC);
    else
      linear(src, J, cin[k], P + woff[k], bias, cout[k], dst, mode, ws);
  };

  const int64_t n = count[b];
  const bool write = rows[b] >= 0;
  const int pos = (int)(n % M);
  for (int w = tid; w < M; w += nt) {
    const int64_t l = ((n - 1 - w) % M + M) % M + 1;
    lag[w] = (int)(l > n ? M + 1 : l);
  }
  for (int i = tid; i < J * d.in_ch; i += nt) {
    const int j = i / d.in_ch, c = i - j * d.in_ch;
    in[i] = d.denoiser ? (c < 3 ? x[(b * J + j) * 3 + c] : inp[(b * J + j) * 3 + c - 3]) : inp[(b * J + j) * 3 + c];
  }
  __syncthreads();
  PROF("input")
  if (kCluster)
    linear_direct(in, J, d.in_ch, W + L.embed_w, W + L.embed_b, C, h);
  else
    linear(in, J, d.in_ch, W + L.embed_w, W + L.embed_b, C, h, 0, ws);
  for (int i = tid; i < J * C; i += nt) h[i] += __ldg(W + L.joint_pos + i);
  if (kCluster) {
#ifdef POSERT_CLUSTER
    __pipeline_wait_prior(0);
#endif
    PROF("embed")
    cluster_sync();  // every block runs (distributed shared memory is live), slices loaded, x read
#ifdef POSERT_STEP_PROFILE
    PROF("barrier0")
    for (int r = 0; r < 10; ++r) cluster_sync();
    PROF("10 cluster barriers")
    for (int r = 0; r < 10; ++r) __syncthreads();
    PROF("10 block barriers")
#endif
  } else {
    __syncthreads();
    PROF("embed")
  }

  for (int l = 0; l < d.depth; ++l) {
    const float* P = W + L.layers + l * L.layer_size;
    if (d.denoiser) {
      const float* cv_ = kCluster ? cnd : cond;
      for (int i = tid; i < J * C; i += nt) h[i] += cv_[i % C];
      __syncthreads();
    }
    PROF("cond")
    // spatial attention over the J joints of this frame
    layernorm(h, J, C, par(l, kSLn1W), par(l, kSLn1B), d.eps, a);
    PROF("ln")
    lin(l, P, kSQkv, a, par(l, kSQkvB), big, 0);
    PROF("s_qkv")
    for (int idx = tid; idx < H * J * J; idx += nt) {
      const int hh = idx / (J * J), i = (idx / J) % J, j = idx % J;
      const float* q = big + i * 3 * C + hh * D;
      const float* k = big + j * 3 * C + C + hh * D;
      // start at e = j mod D: the keys of consecutive j are 3C floats apart (one bank when 3C is a
      // multiple of 32), so a common e would serialise the warp's loads
      float s = 0.0f;
      for (int e0 = 0, e = j % D; e0 < D; ++e0, e = e + 1 == D ? 0 : e + 1) s = fmaf(q[e], k[e], s);
      sc[idx] = s * d.scale;
    }
    __syncthreads();
    PROF("s_scores")
    softmax_rows(sc, H * J, J);
    PROF("s_softmax")
    for (int idx = tid; idx < J * C; idx += nt) {
      const int i = idx / C, c = idx - i * C, hh = c / D;
      const float* p = sc + (hh * J + i) * J;
      float o = 0.0f;
      for (int j = 0; j < J; ++j) o = fmaf(p[j], big[j * 3 * C + 2 * C + c], o);
      a[idx] = o;
    }
    __syncthreads();
    PROF("s_av")
    lin(l, P, kSProj, a, par(l, kSProjB), h, 1);
    PROF("s_proj")
    layernorm(h, J, C, par(l, kSLn2W), par(l, kSLn2B), d.eps, a);
    PROF("ln")
    lin(l, P, kSFc1, a, par(l, kSFc1B), big, 2);
    PROF("s_fc1")
    lin(l, P, kSFc2, big, par(l, kSFc2B), h, 1);
    PROF("s_fc2")

    // temporal attention: the new frame over its cached past, per joint and head
    layernorm(h, J, C, par(l, kTLn1W), par(l, kTLn1B), d.eps, a);
    PROF("ln")
    lin(l, P, kTQkv, a, par(l, kTQkvB), big, 0);
    PROF("t_qkv")
    const float* table = par(l, kTTable);
    float* ck = cache + ((int64_t)(2 * l) * S + b) * J * H * M * D;
    float* cv = cache + ((int64_t)(2 * l + 1) * S + b) * J * H * M * D;
    for (int idx = tid; idx < J * H * (M + 1); idx += nt) {
      const int w = idx % (M + 1), jh = idx / (M + 1), j = jh / H, hh = jh - j * H;
      const float* q = big + j * 3 * C + hh * D;
      const float* k = w == 0 ? q + C : ck + ((int64_t)jh * M + (w - 1)) * D;
      float s = 0.0f;
#pragma unroll 8
      for (int e = 0; e < D; ++e) s = fmaf(q[e], k[e], s);
      sc[idx] = s * d.scale + table[hh * (M + 2) + (w == 0 ? 0 : lag[w - 1])];
    }
    __syncthreads();
    PROF("t_scores")
    softmax_rows(sc, J * H, M + 1);
    PROF("t_softmax")
    for (int idx = tid; idx < J * C; idx += nt) {
      const int j = idx / C, c = idx - j * C, hh = c / D, e = c - hh * D, jh = j * H + hh;
      const float* p = sc + jh * (M + 1);
      const float* V = cv + (int64_t)jh * M * D + e;
      float o = p[0] * big[j * 3 * C + 2 * C + c];
#pragma unroll 8
      for (int w = 0; w < M; ++w) o = fmaf(p[w + 1], V[w * D], o);
      a[idx] = o;
      if (kCluster && write) {  // kept for the write after the next cluster barrier
        kv[idx] = big[j * 3 * C + C + c];
        kv[J * C + idx] = big[j * 3 * C + 2 * C + c];
      }
    }
    __syncthreads();  // every read of ring slot pos in this block is done
    PROF("t_av")
    if (!kCluster && write)
      for (int idx = tid; idx < J * C; idx += nt) {
        const int j = idx / C, c = idx - j * C, hh = c / D, e = c - hh * D;
        const int64_t at = (((int64_t)j * H + hh) * M + pos) * D + e;
        ck[at] = big[j * 3 * C + C + c];
        cv[at] = big[j * 3 * C + 2 * C + c];
      }
    lin(l, P, kTProj, a, par(l, kTProjB), h, 1);
    PROF("t_proj")
    if (kCluster && write)  // after the barrier of kTProj: no block of the cluster still reads slot pos
      for (int idx = rank * nt + tid; idx < J * C; idx += NC * nt) {
        const int j = idx / C, c = idx - j * C, hh = c / D, e = c - hh * D;
        const int64_t at = (((int64_t)j * H + hh) * M + pos) * D + e;
        ck[at] = kv[idx];
        cv[at] = kv[J * C + idx];
      }
    layernorm(h, J, C, par(l, kTLn2W), par(l, kTLn2B), d.eps, a);
    PROF("ln+kvwrite")
    lin(l, P, kTFc1, a, par(l, kTFc1B), big, 2);
    PROF("t_fc1")
    lin(l, P, kTFc2, big, par(l, kTFc2B), h, 1);
    PROF("t_fc2")
  }
  layernorm(h, J, C, W + L.norm_w, W + L.norm_b, d.eps, a);
  PROF("ln")
  if (kCluster)
    linear_direct(a, J, C, W + L.head_w, W + L.head_b, 3, big);
  else
    linear(a, J, C, W + L.head_w, W + L.head_b, 3, big, 0, ws);
  PROF("head")
  PROF_DUMP
  if (rank != 0) return;  // cluster form: rank 0 writes the row's outputs
  float* xb = x + b * J * 3;
  for (int i = tid; i < J * 3; i += nt) {
    const float e = i / 3 == d.root ? 0.0f : big[i];
    if (d.denoiser) {
      const float x0 = (xb[i] - db * e) / (da + db);
      xb[i] = (dap + dbp) * x0 + dbp * e;
    } else {
      xb[i] = e;
      if (x_T) x_T[b * J * 3 + i] = e;
    }
  }
}

}  // namespace

void transformer_step_cuda(const StepDims& d, const float* weights, int64_t B, const float* inp, float* x,
                           float* x_T, const float* cond, const int64_t* count, const int32_t* rows, float* cache,
                           int64_t S, float da, float db, float dap, float dbp, void* stream, int threads,
                           int cluster) {
  require_cuda_device();
  if (threads != 256 && threads != 512 && threads != 1024)
    throw std::invalid_argument("transformer_step_cuda: threads must be 256, 512 or 1024");
  if (cluster != 1 && cluster != 2 && cluster != 4 && cluster != 8 && cluster != 16)
    throw std::invalid_argument("transformer_step_cuda: cluster must be 1, 2, 4, 8 or 16");
  if (cluster > 1 && (d.C % cluster || (3 * d.C) % cluster || d.hidden % cluster))
    throw std::invalid_argument("transformer_step_cuda: cluster " + std::to_string(cluster) +
                                " does not divide the layer widths");
  if (B == 0) return;
  const size_t bytes = sizeof(float) * (size_t)(cluster > 1 ? step_cluster_floats(d, cluster) : step_scratch_floats(d));
  int dev = 0, major = 0, smem_max = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("posert._C: transformer_step_cuda: " + why);
  };
  if (cluster > 1 && major < 9)
    fail("thread-block clusters need compute capability 9.0 or newer (this GPU: " + std::to_string(major) +
         ".x); use cluster=1");
  if (bytes > (size_t)smem_max)
    fail("needs " + std::to_string(bytes) + " bytes of shared memory per block, the GPU allows " +
         std::to_string(smem_max) + (cluster > 1 ? "; use a larger cluster" : ""));
  auto st = static_cast<cudaStream_t>(stream);
  // Kernel attributes are set once per kernel and size, before any graph capture (the backend
  // captures only after warm-up launches of the same configuration).
  static std::map<const void*, size_t> granted;      // dynamic shared memory already allowed per kernel
  static std::map<const void*, bool> non_portable;   // cluster sizes above 8 already allowed per kernel
  auto launch = [&](auto kernel) {
    const void* key = reinterpret_cast<const void*>(kernel);
    cudaError_t err = cudaSuccess;
    if (granted[key] < bytes) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
      if (err != cudaSuccess) {
        cudaGetLastError();
        fail(std::string(cudaGetErrorString(err)) + " (shared memory " + std::to_string(bytes) + " bytes)");
      }
      granted[key] = bytes;
    }
    if (cluster > 8 && !non_portable[key]) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) {
        cudaGetLastError();
        fail(std::string(cudaGetErrorString(err)) + " (cluster " + std::to_string(cluster) + ")");
      }
      non_portable[key] = true;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(B * cluster));
    cfg.blockDim = dim3((unsigned)threads);
    cfg.dynamicSmemBytes = bytes;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)cluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = cluster > 1 ? 1 : 0;
    err = cudaLaunchKernelEx(&cfg, kernel, d, weights, inp, x, x_T, cond, count, rows, cache, S, da, db, dap, dbp);
    if (err != cudaSuccess) {
      cudaGetLastError();  // a launch-configuration error is not sticky: clear it for the next caller
      fail(std::string(cudaGetErrorString(err)) + " (cluster " + std::to_string(cluster) + ", " +
           std::to_string(bytes) + " bytes of shared memory per block)");
    }
  };
  if (cluster > 1) {
    switch (threads) {
      case 256: launch(step_kernel<256, true>); break;
      case 512: launch(step_kernel<512, true>); break;
      default: launch(step_kernel<1024, true>); break;
    }
  } else {
    switch (threads) {
      case 256: launch(step_kernel<256, false>); break;
      case 512: launch(step_kernel<512, false>); break;
      default: launch(step_kernel<1024, false>); break;
    }
  }
  check_launch("transformer_step_cuda");
}

}  // namespace posert
