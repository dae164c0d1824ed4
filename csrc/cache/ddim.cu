#include "common/cuda_check.h"
#include "cache/ddim.h"

namespace posert {
namespace {

// Explicit round-to-nearest intrinsics: no FMA contraction, so results equal the CPU twin's.
__global__ void ddim_kernel(const float* x_k, const float* e, float* out, int64_t n, float a, float b, float ap,
                            float bp) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x0 = __fdiv_rn(__fsub_rn(x_k[i], __fmul_rn(b, e[i])), __fadd_rn(a, b));
  out[i] = __fadd_rn(__fmul_rn(__fadd_rn(ap, bp), x0), __fmul_rn(bp, e[i]));
}

}  // namespace

void ddim_update_cuda(const float* x_k, const float* e, float* out, int64_t n, float a, float b, float ap, float bp,
                      void* stream) {
  require_cuda_device();
  if (n == 0) return;
  ddim_kernel<<<blocks_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(x_k, e, out, n, a, b, ap, bp);
  check_launch("ddim_update_cuda");
}

}  // namespace posert
