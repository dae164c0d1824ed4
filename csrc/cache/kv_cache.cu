#include "common/cuda_check.h"
#include "cache/kv_cache.h"

namespace posert {
namespace {

// One thread per written float: (g, k, r, d).
__global__ void kv_write(float* storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, const float* fresh,
                         int64_t B, const int32_t* rows, const int32_t* pos, int64_t K, int64_t first) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= G * K * R * D) return;
  const int64_t d = i % D, r = (i / D) % R, k = (i / (D * R)) % K, g = i / (D * R * K);
  const int64_t s = rows[k];
  if (s < 0) return;  // a negative row writes nothing (a padded batch row)
  storage[(((g * S + s) * R + r) * M + pos[k]) * D + d] = fresh[((g * B + (s - first)) * R + r) * D + d];
}

}  // namespace

void kv_push_cuda(float* storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, const float* fresh,
                  int64_t B, const int32_t* rows, const int32_t* pos, int64_t K, void* stream, int64_t first) {
  require_cuda_device();
  if (K == 0) return;
  const int64_t n = G * K * R * D;
  kv_write<<<blocks_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(storage, G, S, R, M, D, fresh, B, rows,
                                                                               pos, K, first);
  check_launch("kv_push_cuda");
}

}  // namespace posert
