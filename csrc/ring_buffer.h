// Per-stream ring buffers of keypoint frames and the batched window gather.
//
// Layout (row-major, float32): storage[S][N][F] with F = J * C values per frame (C = 3: x, y, conf);
// head[S] (int32) = slot of the next write; count[S] (int32) = valid frames, ≤ N.
// gather writes, for each requested stream, its last N frames oldest → newest into out[B][N][F];
// a stream with 0 < count < N is edge-padded with its oldest frame; count == 0 gives zeros.
#pragma once
#include <cstdint>

#include "hd.h"

namespace posert {

void ring_push_cpu(float* storage, int32_t* head, int32_t* count, int64_t S, int64_t N, int64_t F,
                   const int32_t* slots, const float* frames, int64_t B);
void ring_gather_cpu(const float* storage, const int32_t* head, const int32_t* count, int64_t S,
                     int64_t N, int64_t F, const int32_t* slots, int64_t B, float* out);

// CUDA twins: every pointer is device memory; `stream` is a cudaStream_t (0 = legacy default).
// They throw std::runtime_error when no usable GPU is present or when built without CUDA.
void ring_push_cuda(float* storage, int32_t* head, int32_t* count, int64_t S, int64_t N, int64_t F,
                    const int32_t* slots, const float* frames, int64_t B, void* stream);
void ring_gather_cuda(const float* storage, const int32_t* head, const int32_t* count, int64_t S,
                      int64_t N, int64_t F, const int32_t* slots, int64_t B, float* out, void* stream);

// Physical ring index of logical frame n (0 = oldest of the window) with edge padding.
POSERT_HD inline int64_t ring_index(int32_t head, int32_t count, int64_t N, int64_t n) {
  int64_t k = n - (N - count);
  if (k < 0) k = 0;
  return ((int64_t)head - count + k + N) % N;
}

}  // namespace posert
