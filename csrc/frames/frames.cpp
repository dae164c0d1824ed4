#include "frames/frames.h"

#include <cmath>

namespace posert {

FrameProblem prepare_frames_cpu(const double* kp, const double* c, const float* size, const int64_t* slots, int64_t B,
                           int64_t J, float* out) {
  if (c != nullptr)
    for (int64_t i = 0; i < B * J; ++i)
      if (!(std::isfinite(c[i]) && c[i] >= 0.0 && c[i] <= 1.0)) return {1, i / J};
  for (int64_t b = 0; b < B; ++b) {
    const float wf = size[slots[b] * 2], hf = size[slots[b] * 2 + 1];
    const double w = wf, hw = (double)(hf / wf);  // NumPy divides the float32 sizes in float32
    for (int64_t j = 0; j < J; ++j) {
      const double cj = c ? c[b * J + j] : 1.0, x = kp[(b * J + j) * 2], y = kp[(b * J + j) * 2 + 1];
      float* f = out + (b * J + j) * 3;
      if (cj > 0.0) {
        if (!std::isfinite(x) || !std::isfinite(y)) return {2, b};
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

}  // namespace posert
