#include "frames/frames.h"

#include <cfloat>
#include <cmath>
#include <vector>

namespace posert {

FrameProblem prepare_frames_cpu(const double* kp, const double* c, const float* size, const int64_t* slots, int64_t B,
                                int64_t J, double margin, float* out, int32_t* dropped) {
  if (c != nullptr)
    for (int64_t i = 0; i < B * J; ++i)
      if (!(std::isfinite(c[i]) && c[i] >= 0.0 && c[i] <= 1.0)) return {1, i / J};
  for (int64_t b = 0; b < B; ++b) {
    const float wf = size[slots[b] * 2], hf = size[slots[b] * 2 + 1];
    const double w = wf, hw = (double)(hf / wf);  // NumPy divides the float32 sizes in float32
    const double x_lo = -margin * wf, x_hi = (1.0 + margin) * wf, y_lo = -margin * hf, y_hi = (1.0 + margin) * hf;
    dropped[b] = 0;
    for (int64_t j = 0; j < J; ++j) {
      double cj = c ? c[b * J + j] : 1.0;
      const double x = kp[(b * J + j) * 2], y = kp[(b * J + j) * 2 + 1];
      float* f = out + (b * J + j) * 3;
      if (cj > 0.0) {
        if (!std::isfinite(x) || !std::isfinite(y)) return {2, b};
        if (std::fabs(x) > FLT_MAX || std::fabs(y) > FLT_MAX) return {3, b};
        if (!(x >= x_lo && x <= x_hi && y >= y_lo && y <= y_hi)) {  // out of view: a missing joint
          cj = 0.0;
          ++dropped[b];
        }
      }
      if (cj > 0.0) {
        f[0] = (float)(x / w * 2.0 - 1.0);
        f[1] = (float)(y / w * 2.0 - hw);
      } else {
        f[0] = f[1] = 0.0f;
      }
      f[2] = (float)cj;
    }
  }
  return {0, -1};
}

void affine_rows_cpu(const float* b, const float* A, const float* c, int64_t n, int64_t K, int64_t N, float* out) {
  std::vector<float> acc(N);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < N; ++k) acc[k] = 0.0f;
    const float* bi = b + i * K;
    for (int64_t j = 0; j < K; ++j) {
      const float v = bi[j];
      const float* a = A + j * N;
      for (int64_t k = 0; k < N; ++k) acc[k] += v * a[k];
    }
    for (int64_t k = 0; k < N; ++k) out[i * N + k] = acc[k] + c[k];
  }
}

}  // namespace posert
