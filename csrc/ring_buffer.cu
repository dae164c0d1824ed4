#include "cuda_check.h"
#include "ring_buffer.h"

namespace posert {
namespace {

__global__ void push_write(float* storage, const int32_t* head, int64_t N, int64_t F, const int32_t* slots,
                           const float* frames, int64_t B) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= B * F) return;
  const int64_t b = i / F, f = i % F;
  const int32_t s = slots[b];
  storage[(s * N + head[s]) * F + f] = frames[i];
}

__global__ void push_advance(int32_t* head, int32_t* count, int64_t N, const int32_t* slots, int64_t B) {
  const int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int32_t s = slots[b];
  head[s] = (int32_t)((head[s] + 1) % N);
  count[s] = count[s] + 1 < N ? count[s] + 1 : (int32_t)N;
}

__global__ void gather(const float* storage, const int32_t* head, const int32_t* count, int64_t N, int64_t F,
                       const int32_t* slots, int64_t B, float* out) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= B * N * F) return;
  const int64_t f = i % F, n = (i / F) % N, b = i / (F * N);
  const int32_t s = slots[b];
  out[i] = count[s] == 0 ? 0.0f : storage[(s * N + ring_index(head[s], count[s], N, n)) * F + f];
}

}  // namespace

void ring_push_cuda(float* storage, int32_t* head, int32_t* count, int64_t S, int64_t N, int64_t F,
                    const int32_t* slots, const float* frames, int64_t B, void* stream) {
  (void)S;
  require_cuda_device();
  if (B == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  push_write<<<blocks_for(B * F, 256), 256, 0, st>>>(storage, head, N, F, slots, frames, B);
  push_advance<<<blocks_for(B, 128), 128, 0, st>>>(head, count, N, slots, B);
  check_launch("ring_push_cuda");
}

void ring_gather_cuda(const float* storage, const int32_t* head, const int32_t* count, int64_t S, int64_t N,
                      int64_t F, const int32_t* slots, int64_t B, float* out, void* stream) {
  (void)S;
  require_cuda_device();
  if (B == 0) return;
  gather<<<blocks_for(B * N * F, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(storage, head, count, N, F,
                                                                                      slots, B, out);
  check_launch("ring_gather_cuda");
}

}  // namespace posert
