// Fused DDIM update of D3PRefiner (Eq. 9), elementwise over n float32 values:
//   x0   = (x_k - b * e) / (a + b)          a = sqrt(abar_k),     b  = sqrt(1 - abar_k)
//   out  = (ap + bp) * x0 + bp * e          ap = sqrt(abar_{k-1}), bp = sqrt(1 - abar_{k-1})
// Operation order and rounding are identical in the CPU and CUDA versions (no FMA contraction),
// so both match a float32 NumPy evaluation of the same formula bit for bit. `out` may alias x_k.
#pragma once
#include <cstdint>

namespace posert {

void ddim_update_cpu(const float* x_k, const float* e, float* out, int64_t n, float a, float b, float ap, float bp);
void ddim_update_cuda(const float* x_k, const float* e, float* out, int64_t n, float a, float b, float ap, float bp,
                      void* stream);

}  // namespace posert
