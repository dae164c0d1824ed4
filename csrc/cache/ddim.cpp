#include "cache/ddim.h"

namespace posert {

void ddim_update_cpu(const float* x_k, const float* e, float* out, int64_t n, float a, float b, float ap, float bp) {
  const float denom = a + b;
  const float c = ap + bp;
  for (int64_t i = 0; i < n; ++i) {
    const float x0 = (x_k[i] - b * e[i]) / denom;
    out[i] = c * x0 + bp * e[i];
  }
}

}  // namespace posert
