// CUDA twin of the fused transformer step (transformer_step.h): one thread block per batch row
// (stream), every activation of the row in shared memory, weights read through the read-only cache
// (the whole model is ~1 MB and stays in L2). A tick of posert's CUDA-graph backend is then three
// launches (lifter, K = 2 denoiser steps) instead of hundreds of framework kernels.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "transformer_step.h"

namespace posert {
namespace {


// out[t][o] (= or +=) b[o] + Σ_i in[t][i] · WT[i][o]; mode 0 store, 1 add, 2 GELU (erf) then store.
// Each thread keeps the weight column o in flight for up to 4 tokens at once and has four weight
// loads in flight per iteration (one block per SM: the latency must be hidden inside the block).
__device__ void linear(const float* in, int J, int Cin, const float* __restrict__ WT, const float* __restrict__ b,
                       int Cout, float* out, int mode) {
  const int groups = (J + 3) / 4;
  for (int idx = threadIdx.x; idx < groups * Cout; idx += blockDim.x) {
    const int g = idx / Cout, o = idx - g * Cout, t0 = g * 4;
    const int nt = J - t0 < 4 ? J - t0 : 4;
    const float bo = __ldg(b + o);
    float acc[4] = {bo, bo, bo, bo};
    const float* wc = WT + o;
    int i = 0;
    for (; i + 4 <= Cin; i += 4) {
      const float w0 = __ldg(wc + (int64_t)i * Cout), w1 = __ldg(wc + (int64_t)(i + 1) * Cout),
                  w2 = __ldg(wc + (int64_t)(i + 2) * Cout), w3 = __ldg(wc + (int64_t)(i + 3) * Cout);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        if (u < nt) {
          const float* r = in + (t0 + u) * Cin + i;
          acc[u] = fmaf(r[3], w3, fmaf(r[2], w2, fmaf(r[1], w1, fmaf(r[0], w0, acc[u]))));
        }
      }
    }
    for (; i < Cin; ++i) {
      const float w = __ldg(wc + (int64_t)i * Cout);
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (u < nt) acc[u] = fmaf(in[(t0 + u) * Cin + i], w, acc[u]);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (u >= nt) break;
      float y = acc[u];
      float* dst = out + (t0 + u) * Cout + o;
      if (mode == 2) y = y * (erff(y / 1.4142135623730951f) + 1.0f) * 0.5f;
      *dst = mode == 1 ? *dst + y : y;
    }
  }
  __syncthreads();
}

// One warp per token: two-pass mean/variance over C, biased variance as torch.nn.LayerNorm.
__device__ void layernorm(const float* x, int J, int C, const float* __restrict__ w, const float* __restrict__ b,
                          float eps, float* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int t = warp; t < J; t += nw) {
    const float* r = x + t * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += r[c];
    for (int k = 16; k > 0; k >>= 1) s += __shfl_xor_sync(0xffffffffu, s, k);
    const float mean = s / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) v += (r[c] - mean) * (r[c] - mean);
    for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
    const float inv = rsqrtf(v / C + eps);
    for (int c = lane; c < C; c += 32) out[t * C + c] = (r[c] - mean) * inv * __ldg(w + c) + __ldg(b + c);
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

template <int kThreads>
__global__ void __launch_bounds__(kThreads) step_kernel(StepDims d, const float* __restrict__ W, const float* inp,
                                                        float* x, float* x_T, const float* __restrict__ cond,
                                                        const int64_t* count, const int32_t* rows, float* cache,
                                                        int64_t S, float da, float db, float dap, float dbp) {
  extern __shared__ float smem[];
  const StepLayout L = step_layout(d);
  const int J = d.J, C = d.C, H = d.heads, D = C / H, M = d.M, Hd = d.hidden;
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, nt = blockDim.x;
  float* h = smem;                                   // (J, C) residual stream
  float* a = h + J * C;                              // (J, C) normalised input / attention output
  float* big = a + J * C;                            // (J, 3C) qkv or (J, hidden) MLP
  const int bigsz = J * (3 * C > Hd ? 3 * C : Hd);
  float* sc = big + bigsz;                           // attention scores
  const int sp = H * J * J, tp = J * H * (M + 1);
  float* in = sc + (sp > tp ? sp : tp);              // (J, in_ch)
  int* lag = reinterpret_cast<int*>(in + J * 6);     // (M,)

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
  linear(in, J, d.in_ch, W + L.embed_w, W + L.embed_b, C, h, 0);
  for (int i = tid; i < J * C; i += nt) h[i] += __ldg(W + L.joint_pos + i);
  __syncthreads();

  for (int l = 0; l < d.depth; ++l) {
    const float* P = W + L.layers + l * L.layer_size;
    if (d.denoiser) {
      for (int i = tid; i < J * C; i += nt) h[i] += __ldg(cond + i % C);
      __syncthreads();
    }
    // spatial attention over the J joints of this frame
    layernorm(h, J, C, P + L.s_ln1_w, P + L.s_ln1_b, d.eps, a);
    linear(a, J, C, P + L.s_qkv_w, P + L.s_qkv_b, 3 * C, big, 0);
    for (int idx = tid; idx < H * J * J; idx += nt) {
      const int hh = idx / (J * J), i = (idx / J) % J, j = idx % J;
      const float* q = big + i * 3 * C + hh * D;
      const float* k = big + j * 3 * C + C + hh * D;
      float s = 0.0f;
      for (int e = 0; e < D; ++e) s = fmaf(q[e], k[e], s);
      sc[idx] = s * d.scale;
    }
    __syncthreads();
    softmax_rows(sc, H * J, J);
    for (int idx = tid; idx < J * C; idx += nt) {
      const int i = idx / C, c = idx - i * C, hh = c / D;
      const float* p = sc + (hh * J + i) * J;
      float o = 0.0f;
      for (int j = 0; j < J; ++j) o = fmaf(p[j], big[j * 3 * C + 2 * C + c], o);
      a[idx] = o;
    }
    __syncthreads();
    linear(a, J, C, P + L.s_proj_w, P + L.s_proj_b, C, h, 1);
    layernorm(h, J, C, P + L.s_ln2_w, P + L.s_ln2_b, d.eps, a);
    linear(a, J, C, P + L.s_fc1_w, P + L.s_fc1_b, Hd, big, 2);
    linear(big, J, Hd, P + L.s_fc2_w, P + L.s_fc2_b, C, h, 1);

    // temporal attention: the new frame over its cached past, per joint and head
    layernorm(h, J, C, P + L.t_ln1_w, P + L.t_ln1_b, d.eps, a);
    linear(a, J, C, P + L.t_qkv_w, P + L.t_qkv_b, 3 * C, big, 0);
    const float* table = P + L.t_table;
    float* ck = cache + ((int64_t)(2 * l) * S + b) * J * H * M * D;
    float* cv = cache + ((int64_t)(2 * l + 1) * S + b) * J * H * M * D;
    for (int idx = tid; idx < J * H * (M + 1); idx += nt) {
      const int w = idx % (M + 1), jh = idx / (M + 1), j = jh / H, hh = jh - j * H;
      const float* q = big + j * 3 * C + hh * D;
      const float* k = w == 0 ? q + C : ck + ((int64_t)jh * M + (w - 1)) * D;
      float s = 0.0f;
      for (int e = 0; e < D; ++e) s = fmaf(q[e], k[e], s);
      sc[idx] = s * d.scale + __ldg(table + hh * (M + 2) + (w == 0 ? 0 : lag[w - 1]));
    }
    __syncthreads();
    softmax_rows(sc, J * H, M + 1);
    for (int idx = tid; idx < J * C; idx += nt) {
      const int j = idx / C, c = idx - j * C, hh = c / D, e = c - hh * D, jh = j * H + hh;
      const float* p = sc + jh * (M + 1);
      const float* V = cv + (int64_t)jh * M * D + e;
      float o = p[0] * big[j * 3 * C + 2 * C + c];
      for (int w = 0; w < M; ++w) o = fmaf(p[w + 1], V[w * D], o);
      a[idx] = o;
    }
    __syncthreads();  // every read of ring slot pos is done
    if (write)
      for (int idx = tid; idx < J * C; idx += nt) {
        const int j = idx / C, c = idx - j * C, hh = c / D, e = c - hh * D;
        const int64_t at = (((int64_t)j * H + hh) * M + pos) * D + e;
        ck[at] = big[j * 3 * C + C + c];
        cv[at] = big[j * 3 * C + 2 * C + c];
      }
    linear(a, J, C, P + L.t_proj_w, P + L.t_proj_b, C, h, 1);
    layernorm(h, J, C, P + L.t_ln2_w, P + L.t_ln2_b, d.eps, a);
    linear(a, J, C, P + L.t_fc1_w, P + L.t_fc1_b, Hd, big, 2);
    linear(big, J, Hd, P + L.t_fc2_w, P + L.t_fc2_b, C, h, 1);
  }
  layernorm(h, J, C, W + L.norm_w, W + L.norm_b, d.eps, a);
  linear(a, J, C, W + L.head_w, W + L.head_b, 3, big, 0);
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
                           int64_t S, float da, float db, float dap, float dbp, void* stream, int threads) {
  require_cuda_device();
  if (B == 0) return;
  const size_t bytes = sizeof(float) * (size_t)step_scratch_floats(d);
  auto st = static_cast<cudaStream_t>(stream);
  auto launch = [&](auto kernel, int nthreads) {
    if (bytes > 48 * 1024) {
      cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
      if (err != cudaSuccess)
        throw std::runtime_error(std::string("posert._C: transformer_step_cuda: ") + cudaGetErrorString(err) +
                                 " (shared memory " + std::to_string(bytes) + " bytes)");
    }
    kernel<<<(unsigned)B, nthreads, bytes, st>>>(d, weights, inp, x, x_T, cond, count, rows, cache, S, da, db, dap,
                                                 dbp);
  };
  switch (threads) {
    case 256: launch(step_kernel<256>, 256); break;
    case 512: launch(step_kernel<512>, 512); break;
    case 1024: launch(step_kernel<1024>, 1024); break;
    default: throw std::invalid_argument("transformer_step_cuda: threads must be 256, 512 or 1024");
  }
  check_launch("transformer_step_cuda");
}

}  // namespace posert
