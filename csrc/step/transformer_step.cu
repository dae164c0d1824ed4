// CUDA twin of the fused transformer step (transformer_step.h). A tick of posert's CUDA-graph
// backend is three launches (lifter, K = 2 denoiser steps) instead of hundreds of framework kernels.
//
// Two launch forms of the same kernel:
// - cluster = 1: one thread block per batch row (stream), every activation of the row in shared
//   memory; each linear layer's weights are staged in shared memory before its FMA loop.
// - cluster = NC > 1 (sm_90+, thread-block clusters): NC blocks on NC SMs per row, each holding a
//   full copy of the row's activations (CUDA Programming Guide, "Thread Block Clusters" and
//   "Distributed Shared Memory"):
//   - at launch one thread of each block moves that rank's packed weights (every layer's column
//     slices, LayerNorms folded in: transformer_step_cluster_pack) into shared memory with one
//     bulk copy (cp.async.bulk, completed on an mbarrier) while the block embeds the input;
//   - each linear layer is split by output columns, block r computing [r·Cout/NC, (r+1)·Cout/NC)
//     for all tokens and storing them into every block's copy, then one cluster barrier; the
//     LayerNorm before qkv and fc1 is only per-token statistics in front of the split linear;
//   - attention is split by (query, head) pair, one warp per pair spread over the cluster, the
//     outputs stored into every block's copy, then one cluster barrier; the warp that reads a
//     pair's ring-cache rows also writes this frame's key/value into them.
//   So a layer is ten cluster barriers: qkv, attention, proj, fc1, fc2, spatial then temporal.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <map>
#include <string>

#include "common/cuda_check.h"
#include "step/transformer_step.h"

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

// Bulk copy (the Tensor Memory Accelerator, sm_90+) of `bytes` (a multiple of 16; both addresses
// 16-byte aligned) from global memory into this block's shared memory, completing on the mbarrier
// `bar`, which this call initialises (one arrival: its own, expecting `bytes`). One thread calls it;
// every thread then waits with bulk_wait before reading dst. Issued in pieces of at most 32 KB.
__device__ void bulk_load(float* dst, const float* __restrict__ src, uint32_t bytes, unsigned long long* bar) {
#ifdef POSERT_CLUSTER
  const uint32_t b = (uint32_t)__cvta_generic_to_shared(bar);
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes) : "memory");
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  for (uint32_t off = 0; off < bytes; off += 32768u) {
    const uint32_t n = bytes - off < 32768u ? bytes - off : 32768u;
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(d + off),
                 "l"(reinterpret_cast<const char*>(src) + off), "r"(n), "r"(b)
                 : "memory");
  }
#else
  __trap();
#endif
}

// Wait until the bulk copy on `bar` (phase 0) has landed; its bytes are then visible to the caller.
__device__ void bulk_wait(unsigned long long* bar) {
#ifdef POSERT_CLUSTER
  const uint32_t b = (uint32_t)__cvta_generic_to_shared(bar);
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(b)
        : "memory");
#else
  __trap();
#endif
}

// LayerNorm statistics of the J rows of x (J, C): st[2t] = μ_t, st[2t + 1] = ρ_t = (σ_t² + eps)^-1/2
// with the biased variance of torch.nn.LayerNorm; sixteen threads per token, sums of (x − x_t0)
// (shifted by the row's first value, against cancellation). Ends with a block barrier.
__device__ void ln_stats(const float* x, int J, int C, float eps, float* st) {
  const int lane = threadIdx.x & 15, grp = threadIdx.x >> 4, ng = blockDim.x >> 4;
  const int rounds = (J + ng - 1) / ng;  // every lane runs every round (full-warp shuffles)
  for (int rd = 0; rd < rounds; ++rd) {
    const int t = rd * ng + grp;
    const float* r = x + (t < J ? t : 0) * C;
    const float x0 = r[0];
    float s1 = 0.0f, s2 = 0.0f;
    for (int c = lane; c < C; c += 16) {
      const float v = r[c] - x0;
      s1 += v;
      s2 = fmaf(v, v, s2);
    }
    for (int k = 8; k > 0; k >>= 1) {
      s1 += __shfl_xor_sync(0xffffffffu, s1, k, 16);
      s2 += __shfl_xor_sync(0xffffffffu, s2, k, 16);
    }
    if (t < J && lane == 0) {
      const float m = s1 / C;
      st[2 * t] = x0 + m;
      st[2 * t + 1] = rsqrtf(fmaxf(s2 / C - m * m, 0.0f) + eps);
    }
  }
  __syncthreads();
}

// Cluster form of `linear`: this block (rank r of NC) computes the columns o in
// [r·Cs, (r+1)·Cs), Cs = Cout / NC, of every token from its weight slice ws (Cin, Cs) and bias
// slice bs (Cs) in shared memory, and stores each result into `out` of every block of the cluster.
// A work item is one column of a group of four tokens (one weight load feeds four FMAs), its Cin
// split over kS lanes (strided i, summed by warp shuffles), so a layer of 17 tokens is one round of
// the block. kLN: `in` is the raw residual stream h, the slice holds the LayerNorm-folded W' and
// b' (transformer_step.h, cluster_layout), st the rows' (μ, ρ) from ln_stats, and
// y = ρ·((h − μ)·W') + b' = LayerNorm(h)·W + b. Ends with a cluster barrier, after which every
// block's `out` holds all Cout columns. Modes as `linear`; mode 1 adds to the block's own copy (all
// copies are equal).
template <int kS, bool kLN>
__device__ void linear_cluster_split(const float* in, int J, int Cin, const float* ws, const float* bs,
                                     const float* st, int Cout, float* out, int mode, int rank, int NC) {
  const int Cs = Cout / NC, o0 = rank * Cs, G = (J + 3) >> 2;
  const int work = G * Cs * kS;
  const int rounds = (work + blockDim.x - 1) / blockDim.x;  // every lane of a warp runs every round
  for (int rd = 0; rd < rounds; ++rd) {
    const int w = rd * blockDim.x + threadIdx.x;
    const bool valid = w < work;  // whole groups of kS lanes are valid or not (work is a multiple of kS)
    const int item = valid ? w / kS : 0, q = w % kS;
    const int g = item / Cs, oo = item - g * Cs, t0 = g * 4;
    const int nt = J - t0 < 4 ? J - t0 : 4;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (valid) {
      const float* r[4];
      float mu[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int t = t0 + (u < nt ? u : 0);  // rows past J repeat row t0
        r[u] = in + t * Cin;
        mu[u] = kLN ? st[2 * t] : 0.0f;
      }
      const float* wc = ws + oo;
#pragma unroll 4
      for (int i = q; i < Cin; i += kS) {
        const float wv = wc[i * Cs];
#pragma unroll
        for (int u = 0; u < 4; ++u) acc[u] = fmaf(kLN ? r[u][i] - mu[u] : r[u][i], wv, acc[u]);
      }
    }
#pragma unroll
    for (int k = 1; k < kS; k <<= 1)
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], k);
    float y[4];
    if (valid) {
      const float bo = bs[oo];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        y[u] = kLN ? fmaf(st[2 * (t0 + (u < nt ? u : 0)) + 1], acc[u], bo) : acc[u] + bo;
        if (mode == 2) y[u] = y[u] * (erff(y[u] / 1.4142135623730951f) + 1.0f) * 0.5f;
        if (mode == 1 && u < nt) y[u] += out[(t0 + u) * Cout + o0 + oo];
      }
    }
    __syncwarp();  // every lane has read out[t][o] before any lane of the group overwrites it
    if (valid)
      for (int p = q; p < NC; p += kS) {
        float* dst = peer_smem(out, p) + t0 * Cout + o0 + oo;
        for (int u = 0; u < nt; ++u) dst[u * Cout] = y[u];
      }
  }
  cluster_sync();
}

template <bool kLN>
__device__ void linear_cluster(const float* in, int J, int Cin, const float* ws, const float* bs, const float* st,
                               int Cout, float* out, int mode, int rank, int NC) {
  if (((J + 3) >> 2) * (Cout / NC) * 8 <= (int)blockDim.x)  // eight lanes per item still fit one round
    linear_cluster_split<8, kLN>(in, J, Cin, ws, bs, st, Cout, out, mode, rank, NC);
  else
    linear_cluster_split<4, kLN>(in, J, Cin, ws, bs, st, Cout, out, mode, rank, NC);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, k));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
  return v;
}

// Store v at base[idx] of the blocks first, first + stride, … < NC of the cluster (kCluster), or of
// this block (first == 0) without one.
template <bool kCluster>
__device__ __forceinline__ void store_peers(float* base, int idx, float v, int first, int stride, int NC) {
  if (kCluster) {
    for (int r = first; r < NC; r += stride) peer_smem(base, r)[idx] = v;
  } else if (first == 0) {
    base[idx] = v;
  }
}

// o = Σ_w p[w] · V_w[e] over the n rows of one (query, head) pair with one warp, the weights p
// (n,) in shared memory (already normalised by 1/z = inv); V_w = vrow(w), a (D,) row. With D
// dividing 32 the lanes form 32 / D parts, part π summing the rows w ≡ π (mod parts) of output e =
// lane mod D, combined by shuffles; otherwise each lane loops over outputs e = lane, lane + 32, ….
// The result of output e goes to out_row[e] of every block (part π storing to blocks π, π + parts, …).
template <bool kCluster, typename VRow>
__device__ __forceinline__ void attend_values(const float* p, int n, int D, float inv, VRow vrow, float* out,
                                              int out_off, int NC) {
  const int lane = threadIdx.x & 31;
  if (D <= 32 && (32 % D) == 0) {
    const int parts = 32 / D, e = lane % D, part = lane / D;
    float o = 0.0f;
#pragma unroll 4
    for (int w = part; w < n; w += parts) o = fmaf(p[w], vrow(w)[e], o);
    for (int k = D; k < 32; k <<= 1) o += __shfl_xor_sync(0xffffffffu, o, k);
    store_peers<kCluster>(out, out_off + e, o * inv, part, parts, NC);
  } else {
    for (int e = lane; e < D; e += 32) {
      float o = 0.0f;
      for (int w = 0; w < n; ++w) o = fmaf(p[w], vrow(w)[e], o);
      store_peers<kCluster>(out, out_off + e, o * inv, 0, 1, NC);
    }
  }
}

// Spatial attention over the J joints of this frame, one warp per (head hh, query i) pair, the
// pairs p = hh·J + i spread over the cluster (block p mod NC, warp p / NC of it; NC = 1: one
// block): out[i][hh·D + e] = Σ_j softmax_j(scale · q_i·k_j) v_j[e], stored into every block's out.
// qkv (J, 3C) and sc (H·J·J) scratch in shared memory. No barrier at the end.
template <bool kCluster>
__device__ void spatial_attention(const float* qkv, int J, int C, int H, float scale, float* sc, float* out,
                                  int rank, int NC) {
  const int D = C / H, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int pr = rank + warp * NC; pr < H * J; pr += nw * NC) {  // uniform per warp
    const int hh = pr / J, i = pr - hh * J;
    const float* q = qkv + i * 3 * C + hh * D;
    float* row = sc + pr * J;
    float m = -INFINITY;
    for (int j = lane; j < J; j += 32) {
      const float* k = qkv + j * 3 * C + C + hh * D;
      // start at e = j mod D: keys of consecutive j are 3C floats apart (one bank when 3C is a
      // multiple of 32), so a common e would serialise the warp's loads
      float s = 0.0f;
      for (int e0 = 0, e = j % D; e0 < D; ++e0, e = e + 1 == D ? 0 : e + 1) s = fmaf(q[e], k[e], s);
      s *= scale;
      row[j] = s;
      m = fmaxf(m, s);
    }
    m = warp_max(m);
    float z = 0.0f;
    for (int j = lane; j < J; j += 32) {
      const float e = __expf(row[j] - m);
      row[j] = e;
      z += e;
    }
    z = warp_sum(z);
    __syncwarp();
    attend_values<kCluster>(row, J, D, 1.0f / z, [&](int j) { return qkv + j * 3 * C + 2 * C + hh * D; }, out,
                            i * C + hh * D, NC);
    __syncwarp();
  }
}

// Cached temporal attention of the new frame, one warp per (joint j, head hh) pair, pairs p = j·H +
// hh spread over the cluster as in spatial_attention: scores of the own key (w = 0) and the M ring
// slots (w ≥ 1, keys ck (J·H, M, D) in global memory) plus the lag bias table[hh][lag], softmax,
// values likewise; stored into every block's out[j][hh·D + e]. The warp that reads a pair's ring
// rows is the only reader in the launch, so it then writes this frame's key/value into slot pos
// itself (write: rows[b] ≥ 0). sc (J·H·(M + 1)) scratch in shared memory. No barrier at the end.
template <bool kCluster>
__device__ void temporal_attention(const float* qkv, int J, int C, int H, int M, float scale, const float* table,
                                   const int* lag, float* ck, float* cv, bool write, int pos, float* sc, float* out,
                                   int rank, int NC) {
  const int D = C / H, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const bool v4 = (D & 3) == 0 && ((reinterpret_cast<uintptr_t>(ck) | reinterpret_cast<uintptr_t>(qkv)) & 15) == 0;
  for (int pr = rank + warp * NC; pr < J * H; pr += nw * NC) {  // uniform per warp
    const int j = pr / H, hh = pr - j * H;
    const float* q = qkv + j * 3 * C + hh * D;
    const float* knew = q + C;
    const float* vnew = q + 2 * C;
    float* krow = ck + (int64_t)pr * M * D;  // pr = j·H + hh: the pair's ring rows (M, D)
    float* vrow = cv + (int64_t)pr * M * D;
    float* row = sc + pr * (M + 1);
    const float* tb = table + hh * (M + 2);
    float m = -INFINITY;
    for (int w = lane; w <= M; w += 32) {
      const float* k = w == 0 ? knew : krow + (int64_t)(w - 1) * D;
      float s = 0.0f;
      if (v4) {
        const float4* k4 = reinterpret_cast<const float4*>(k);
        const float4* q4 = reinterpret_cast<const float4*>(q);
#pragma unroll 4
        for (int e = 0; e < (D >> 2); ++e) {
          const float4 kk = k4[e], qq = q4[e];
          s = fmaf(qq.x, kk.x, fmaf(qq.y, kk.y, fmaf(qq.z, kk.z, fmaf(qq.w, kk.w, s))));
        }
      } else {
        for (int e = 0; e < D; ++e) s = fmaf(q[e], k[e], s);
      }
      s = s * scale + tb[w == 0 ? 0 : lag[w - 1]];
      row[w] = s;
      m = fmaxf(m, s);
    }
    m = warp_max(m);
    float z = 0.0f;
    for (int w = lane; w <= M; w += 32) {
      const float e = __expf(row[w] - m);
      row[w] = e;
      z += e;
    }
    z = warp_sum(z);
    __syncwarp();
    attend_values<kCluster>(row, M + 1, D, 1.0f / z,
                            [&](int w) { return w == 0 ? vnew : vrow + (int64_t)(w - 1) * D; }, out, j * C + hh * D,
                            NC);
    __syncwarp();  // every lane's reads of slot pos are done
    if (write)
      for (int e = lane; e < D; e += 32) {
        krow[(int64_t)pos * D + e] = knew[e];
        vrow[(int64_t)pos * D + e] = vnew[e];
      }
  }
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

template <int kThreads, bool kCluster>
__global__ void __launch_bounds__(kThreads) step_kernel(StepDims d, const float* __restrict__ W,
                                                        const float* __restrict__ packed, const float* inp, float* x,
                                                        float* x_T, const float* __restrict__ cond,
                                                        const int64_t* count, const int32_t* rows, float* cache,
                                                        int64_t S, float da, float db, float dap, float dbp) {
  extern __shared__ __align__(16) float smem[];
  __shared__ __align__(8) unsigned long long wbar;  // cluster form: the weight copy's mbarrier
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
  // shared memory: step_head_floats(d), then the staged weights (cluster 1) or cnd and this rank's
  // packed weights (cluster form); every part starts at a multiple of 4 floats
  float* h = smem;                                   // (J, C) residual stream
  float* a = h + J * C;                              // (J, C) normalised input / attention output
  float* big = a + J * C;                            // (J, 3C) qkv or (J, hidden) MLP
  const int bigsz = J * (3 * C > Hd ? 3 * C : Hd);
  float* sc = big + ((bigsz + 3) & ~3);              // attention scores
  const int sp = H * J * J, tp = J * H * (M + 1);
  float* in = sc + (((sp > tp ? sp : tp) + 3) & ~3);  // (J, in_ch)
  int* lag = reinterpret_cast<int*>(in + J * 6);     // (M,)
  float* ws = in + ((J * 6 + M + 4 + 3) & ~3);       // cluster 1: staged weights of the current linear
  float* cnd = ws;                                   // cluster form: (C,) the denoiser's timestep embedding
  float* wsl = cnd + ((C + 3) & ~3);                 // cluster form: this rank's packed weights, all layers
  const ClusterLayout K = cluster_layout(d, NC);
  int cin[kLinears], cout[kLinears];
  step_linear_shapes(d, cin, cout);
  const int64_t woff[kLinears] = {L.s_qkv_w, L.s_proj_w, L.s_fc1_w, L.s_fc2_w,
                                  L.t_qkv_w, L.t_proj_w, L.t_fc1_w, L.t_fc2_w};
  const int64_t boff[kLinears] = {L.s_qkv_b, L.s_proj_b, L.s_fc1_b, L.s_fc2_b,
                                  L.t_qkv_b, L.t_proj_b, L.t_fc1_b, L.t_fc2_b};
  if (kCluster) {
    if (tid == 0) bulk_load(wsl, packed + rank * K.rank, (uint32_t)(K.rank * sizeof(float)), &wbar);
    if (d.denoiser)
      for (int i = tid; i < C; i += nt) cnd[i] = cond[i];
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Programmatic dependent launch (launched with pdl): everything above reads only constants, so it
  // may overlap the end of the previous kernel of the stream; what follows reads its outputs (x,
  // inp, count). Then let the next kernel start its own prologue. Both are no-ops otherwise.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  // the lag table of layer l: in this rank's packed weights (cluster form) or global memory
  auto table = [&](int l) -> const float* {
    return kCluster ? wsl + l * K.layer + K.table : W + L.layers + l * L.layer_size + L.t_table;
  };
  // linear k of layer l: staged (cluster 1, after a LayerNorm into `a`) or split over the cluster
  // (the LayerNorm of k = 0, 2, 4, 6 fused: src is then h itself)
  auto lin = [&](int l, int k, const float* src, float* dst, int mode) {
    if (kCluster) {
      const float* Q = wsl + l * K.layer;
      if (k == kSQkv || k == kSFc1 || k == kTQkv || k == kTFc1) {
        ln_stats(src, J, C, d.eps, sc);  // (μ, ρ) per token into the score scratch, free between attentions
        linear_cluster<true>(src, J, cin[k], Q + K.w[k], Q + K.b[k], sc, cout[k], dst, mode, rank, NC);
      } else {
        linear_cluster<false>(src, J, cin[k], Q + K.w[k], Q + K.b[k], nullptr, cout[k], dst, mode, rank, NC);
      }
    } else {
      const float* P = W + L.layers + l * L.layer_size;
      linear(src, J, cin[k], P + woff[k], P + boff[k], cout[k], dst, mode, ws);
    }
  };
  // LayerNorm (γ at gw, β at gb within a layer) into `a` and the linear after it: fused in the cluster form
  auto ln_lin = [&](int l, int64_t gw, int64_t gb, int k, float* dst, int mode) {
    if (kCluster) {
      lin(l, k, h, dst, mode);
    } else {
      const float* P = W + L.layers + l * L.layer_size;
      layernorm(h, J, C, P + gw, P + gb, d.eps, a);
      PROF("ln")
      lin(l, k, a, dst, mode);
    }
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
    bulk_wait(&wbar);
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
    if (d.denoiser) {
      const float* cv_ = kCluster ? cnd : cond;
      for (int i = tid; i < J * C; i += nt) h[i] += cv_[i % C];
      __syncthreads();
    }
    PROF("cond")
    // spatial attention over the J joints of this frame
    ln_lin(l, L.s_ln1_w, L.s_ln1_b, kSQkv, big, 0);
    PROF("s_qkv")
    spatial_attention<kCluster>(big, J, C, H, d.scale, sc, a, rank, NC);
    if (kCluster)
      cluster_sync();  // every block's `a` holds every pair's output
    else
      __syncthreads();
    PROF("s_attn")
    lin(l, kSProj, a, h, 1);
    PROF("s_proj")
    ln_lin(l, L.s_ln2_w, L.s_ln2_b, kSFc1, big, 2);
    PROF("s_fc1")
    lin(l, kSFc2, big, h, 1);
    PROF("s_fc2")

    // temporal attention: the new frame over its cached past, per joint and head
    ln_lin(l, L.t_ln1_w, L.t_ln1_b, kTQkv, big, 0);
    PROF("t_qkv")
    float* ck = cache + ((int64_t)(2 * l) * S + b) * J * H * M * D;
    float* cv = cache + ((int64_t)(2 * l + 1) * S + b) * J * H * M * D;
    temporal_attention<kCluster>(big, J, C, H, M, d.scale, table(l), lag, ck, cv, write, pos, sc, a, rank, NC);
    if (kCluster)
      cluster_sync();
    else
      __syncthreads();
    PROF("t_attn")
    lin(l, kTProj, a, h, 1);
    PROF("t_proj")
    ln_lin(l, L.t_ln2_w, L.t_ln2_b, kTFc1, big, 2);
    PROF("t_fc1")
    lin(l, kTFc2, big, h, 1);
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
                           int cluster, const float* packed, bool pdl) {
  require_cuda_device();
  if (threads != 256 && threads != 512 && threads != 1024)
    throw std::invalid_argument("transformer_step_cuda: threads must be 256, 512 or 1024");
  if (cluster != 1 && cluster != 2 && cluster != 4 && cluster != 8 && cluster != 16)
    throw std::invalid_argument("transformer_step_cuda: cluster must be 1, 2, 4, 8 or 16");
  if (cluster > 1 && (d.C % cluster || (3 * d.C) % cluster || d.hidden % cluster))
    throw std::invalid_argument("transformer_step_cuda: cluster " + std::to_string(cluster) +
                                " does not divide the layer widths");
  if (cluster > 1 && packed == nullptr)
    throw std::invalid_argument("transformer_step_cuda: cluster " + std::to_string(cluster) +
                                " needs `packed` (the device copy of transformer_step_cluster_pack for this cluster)");
  if (cluster > 1 && (reinterpret_cast<uintptr_t>(packed) & 15))
    throw std::invalid_argument("transformer_step_cuda: `packed` must be 16-byte aligned");
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
    cudaLaunchAttribute attr[2];
    unsigned n_attr = 0;
    if (cluster > 1) {
      attr[n_attr].id = cudaLaunchAttributeClusterDimension;
      attr[n_attr].val.clusterDim.x = (unsigned)cluster;
      attr[n_attr].val.clusterDim.y = 1;
      attr[n_attr].val.clusterDim.z = 1;
      ++n_attr;
    }
    if (pdl && major >= 9) {  // programmatic dependent launch (sm_90+): overlap the previous kernel's tail
      attr[n_attr].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[n_attr].val.programmaticStreamSerializationAllowed = 1;
      ++n_attr;
    }
    cfg.attrs = attr;
    cfg.numAttrs = n_attr;
    err = cudaLaunchKernelEx(&cfg, kernel, d, weights, packed, inp, x, x_T, cond, count, rows, cache, S, da, db, dap,
                             dbp);
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
