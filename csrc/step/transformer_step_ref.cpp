// CPU twin of the fused transformer step (transformer_step.h): plain loops, one batch row at a time.
#include "step/transformer_step.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace posert {
namespace {

// out[t][o] (= or +=) b[o] + Σ_i in[t][i] · WT[i][o]   for t < J.
void linear(const float* in, int J, int Cin, const float* WT, const float* b, int Cout, float* out, bool add,
            bool gelu) {
  std::vector<float> acc(Cout);
  for (int t = 0; t < J; ++t) {
    for (int o = 0; o < Cout; ++o) acc[o] = b[o];
    for (int i = 0; i < Cin; ++i) {
      const float v = in[t * Cin + i];
      const float* w = WT + (int64_t)i * Cout;
      for (int o = 0; o < Cout; ++o) acc[o] += v * w[o];
    }
    for (int o = 0; o < Cout; ++o) {
      float y = acc[o];
      if (gelu) y = y * (std::erf(y / 1.4142135623730951f) + 1.0f) * 0.5f;
      out[t * Cout + o] = add ? out[t * Cout + o] + y : y;
    }
  }
}

void layernorm(const float* x, int J, int C, const float* w, const float* b, float eps, float* out) {
  for (int t = 0; t < J; ++t) {
    const float* r = x + t * C;
    float mean = 0.0f;
    for (int c = 0; c < C; ++c) mean += r[c];
    mean /= C;
    float var = 0.0f;
    for (int c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
    const float inv = 1.0f / std::sqrt(var / C + eps);
    for (int c = 0; c < C; ++c) out[t * C + c] = (r[c] - mean) * inv * w[c] + b[c];
  }
}

void softmax_row(float* s, int n) {
  float m = s[0];
  for (int i = 1; i < n; ++i) m = std::max(m, s[i]);
  float z = 0.0f;
  for (int i = 0; i < n; ++i) z += (s[i] = std::exp(s[i] - m));
  for (int i = 0; i < n; ++i) s[i] /= z;
}

}  // namespace

void transformer_step_cpu(const StepDims& d, const float* W, int64_t B, const float* inp, float* x, float* x_T,
                          const float* cond, const int64_t* count, const int32_t* rows, float* cache, int64_t S,
                          const float* ddim) {
  const StepLayout L = step_layout(d);
  const int J = d.J, C = d.C, H = d.heads, D = C / H, M = d.M, Hd = d.hidden;
  std::vector<float> h(J * C), a(J * C), big(J * std::max(3 * C, Hd)), sc(M + 1), in(J * d.in_ch), pose(J * 3);
  std::vector<int> lag(M);
  for (int64_t b = 0; b < B; ++b) {
    // input → embedding
    for (int j = 0; j < J; ++j)
      for (int c = 0; c < d.in_ch; ++c)
        in[j * d.in_ch + c] = d.denoiser ? (c < 3 ? x[(b * J + j) * 3 + c] : inp[(b * J + j) * 3 + c - 3])
                                         : inp[(b * J + j) * 3 + c];
    linear(in.data(), J, d.in_ch, W + L.embed_w, W + L.embed_b, C, h.data(), false, false);
    for (int i = 0; i < J * C; ++i) h[i] += W[L.joint_pos + i];
    const int64_t n = count[b];
    for (int w = 0; w < M; ++w) {
      const int64_t l = ((n - 1 - w) % M + M) % M + 1;
      lag[w] = (int)(l > n ? M + 1 : l);
    }
    const int pos = (int)(n % M);
    for (int l = 0; l < d.depth; ++l) {
      const float* P = W + L.layers + l * L.layer_size;
      if (d.denoiser)
        for (int j = 0; j < J; ++j)
          for (int c = 0; c < C; ++c) h[j * C + c] += cond[c];
      // spatial attention over the J joints of this frame
      layernorm(h.data(), J, C, P + L.s_ln1_w, P + L.s_ln1_b, d.eps, a.data());
      linear(a.data(), J, C, P + L.s_qkv_w, P + L.s_qkv_b, 3 * C, big.data(), false, false);
      std::vector<float> srow(J);
      for (int hh = 0; hh < H; ++hh)
        for (int i = 0; i < J; ++i) {
          const float* q = &big[i * 3 * C + hh * D];
          for (int j = 0; j < J; ++j) {
            const float* k = &big[j * 3 * C + C + hh * D];
            float s = 0.0f;
            for (int e = 0; e < D; ++e) s += q[e] * k[e];
            srow[j] = s * d.scale;
          }
          softmax_row(srow.data(), J);
          for (int e = 0; e < D; ++e) {
            float o = 0.0f;
            for (int j = 0; j < J; ++j) o += srow[j] * big[j * 3 * C + 2 * C + hh * D + e];
            a[i * C + hh * D + e] = o;
          }
        }
      linear(a.data(), J, C, P + L.s_proj_w, P + L.s_proj_b, C, h.data(), true, false);
      layernorm(h.data(), J, C, P + L.s_ln2_w, P + L.s_ln2_b, d.eps, a.data());
      linear(a.data(), J, C, P + L.s_fc1_w, P + L.s_fc1_b, Hd, big.data(), false, true);
      linear(big.data(), J, Hd, P + L.s_fc2_w, P + L.s_fc2_b, C, h.data(), true, false);
      // temporal attention: the new frame over its cached past, per joint and head
      layernorm(h.data(), J, C, P + L.t_ln1_w, P + L.t_ln1_b, d.eps, a.data());
      linear(a.data(), J, C, P + L.t_qkv_w, P + L.t_qkv_b, 3 * C, big.data(), false, false);
      const float* table = P + L.t_table;
      float* ck = cache + ((int64_t)(2 * l) * S + b) * J * H * M * D;
      float* cv = cache + ((int64_t)(2 * l + 1) * S + b) * J * H * M * D;
      for (int j = 0; j < J; ++j)
        for (int hh = 0; hh < H; ++hh) {
          const float* q = &big[j * 3 * C + hh * D];
          const float* kn = q + C;
          const float* vn = q + 2 * C;
          const float* K = ck + ((int64_t)j * H + hh) * M * D;
          const float* V = cv + ((int64_t)j * H + hh) * M * D;
          float s = 0.0f;
          for (int e = 0; e < D; ++e) s += q[e] * kn[e];
          sc[0] = s * d.scale + table[hh * (M + 2)];
          for (int w = 0; w < M; ++w) {
            float t = 0.0f;
            for (int e = 0; e < D; ++e) t += q[e] * K[w * D + e];
            sc[w + 1] = t * d.scale + table[hh * (M + 2) + lag[w]];
          }
          softmax_row(sc.data(), M + 1);
          for (int e = 0; e < D; ++e) {
            float o = sc[0] * vn[e];
            for (int w = 0; w < M; ++w) o += sc[w + 1] * V[w * D + e];
            a[j * C + hh * D + e] = o;
          }
        }
      if (rows[b] >= 0)  // this frame's keys/values into ring slot pos (after every read of the old slot)
        for (int j = 0; j < J; ++j)
          for (int hh = 0; hh < H; ++hh)
            for (int e = 0; e < D; ++e) {
              ck[(((int64_t)j * H + hh) * M + pos) * D + e] = big[j * 3 * C + C + hh * D + e];
              cv[(((int64_t)j * H + hh) * M + pos) * D + e] = big[j * 3 * C + 2 * C + hh * D + e];
            }
      linear(a.data(), J, C, P + L.t_proj_w, P + L.t_proj_b, C, h.data(), true, false);
      layernorm(h.data(), J, C, P + L.t_ln2_w, P + L.t_ln2_b, d.eps, a.data());
      linear(a.data(), J, C, P + L.t_fc1_w, P + L.t_fc1_b, Hd, big.data(), false, true);
      linear(big.data(), J, Hd, P + L.t_fc2_w, P + L.t_fc2_b, C, h.data(), true, false);
    }
    layernorm(h.data(), J, C, W + L.norm_w, W + L.norm_b, d.eps, a.data());
    linear(a.data(), J, C, W + L.head_w, W + L.head_b, 3, pose.data(), false, false);
    for (int c = 0; c < 3; ++c) pose[d.root * 3 + c] = 0.0f;
    float* xb = x + b * J * 3;
    if (d.denoiser) {  // DDIM update (ddim.h), ê = pose
      const float da = ddim[0], db = ddim[1], dap = ddim[2], dbp = ddim[3];
      for (int i = 0; i < J * 3; ++i) {
        const float x0 = (xb[i] - db * pose[i]) / (da + db);
        xb[i] = (dap + dbp) * x0 + dbp * pose[i];
      }
    } else {
      for (int i = 0; i < J * 3; ++i) xb[i] = pose[i];
      if (x_T)
        for (int i = 0; i < J * 3; ++i) x_T[b * J * 3 + i] = pose[i];
    }
  }
}

}  // namespace posert

namespace posert {

void transformer_step_cluster_pack(const StepDims& d, const float* weights, int cluster, float* out) {
  if (cluster < 1 || d.C % cluster || (3 * d.C) % cluster || d.hidden % cluster)
    throw std::invalid_argument("transformer_step_cluster_pack: cluster " + std::to_string(cluster) +
                                " does not divide the layer widths");
  const StepLayout L = step_layout(d);
  const ClusterLayout K = cluster_layout(d, cluster);
  int cin[kLinears], cout[kLinears];
  step_linear_shapes(d, cin, cout);
  // per linear: its weight, bias, and the LayerNorm (γ, β) in front of it (-1: none)
  const int64_t w_off[kLinears] = {L.s_qkv_w, L.s_proj_w, L.s_fc1_w, L.s_fc2_w,
                                   L.t_qkv_w, L.t_proj_w, L.t_fc1_w, L.t_fc2_w};
  const int64_t b_off[kLinears] = {L.s_qkv_b, L.s_proj_b, L.s_fc1_b, L.s_fc2_b,
                                   L.t_qkv_b, L.t_proj_b, L.t_fc1_b, L.t_fc2_b};
  const int64_t g_off[kLinears] = {L.s_ln1_w, -1, L.s_ln2_w, -1, L.t_ln1_w, -1, L.t_ln2_w, -1};
  const int64_t be_off[kLinears] = {L.s_ln1_b, -1, L.s_ln2_b, -1, L.t_ln1_b, -1, L.t_ln2_b, -1};
  std::fill(out, out + cluster * K.rank, 0.0f);
  for (int r = 0; r < cluster; ++r)
    for (int l = 0; l < d.depth; ++l) {
      const float* P = weights + L.layers + l * L.layer_size;
      float* Q = out + r * K.rank + l * K.layer;
      for (int k = 0; k < kLinears; ++k) {
        const int Cs = cout[k] / cluster, o0 = r * Cs;
        const float* W = P + w_off[k];  // (Cin, Cout) row-major
        const bool ln = g_off[k] >= 0;
        for (int o = 0; o < Cs; ++o) {
          double bias = P[b_off[k] + o0 + o];
          for (int i = 0; i < cin[k]; ++i) {
            const double w = W[(int64_t)i * cout[k] + o0 + o];
            Q[K.w[k] + (int64_t)i * Cs + o] = (float)(ln ? (double)P[g_off[k] + i] * w : w);
            if (ln) bias += (double)P[be_off[k] + i] * w;
          }
          Q[K.b[k] + o] = (float)bias;
        }
      }
      std::copy(P + L.t_table, P + L.t_table + (int64_t)d.heads * (d.M + 2), Q + K.table);
    }
}

}  // namespace posert
