#include "ring_buffer.h"

#include <algorithm>
#include <cstring>

namespace posert {

void ring_push_cpu(float* storage, int32_t* head, int32_t* count, int64_t S, int64_t N, int64_t F,
                   const int32_t* slots, const float* frames, int64_t B) {
  (void)S;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t s = slots[b];
    std::memcpy(storage + (s * N + head[s]) * F, frames + b * F, sizeof(float) * F);
    head[s] = (int32_t)((head[s] + 1) % N);
    count[s] = (int32_t)std::min<int64_t>(count[s] + 1, N);
  }
}

void ring_gather_cpu(const float* storage, const int32_t* head, const int32_t* count, int64_t S,
                     int64_t N, int64_t F, const int32_t* slots, int64_t B, float* out) {
  (void)S;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t s = slots[b];
    float* dst = out + b * N * F;
    if (count[s] == 0) {
      std::memset(dst, 0, sizeof(float) * N * F);
      continue;
    }
    for (int64_t n = 0; n < N; ++n) {
      std::memcpy(dst + n * F, storage + (s * N + ring_index(head[s], count[s], N, n)) * F, sizeof(float) * F);
    }
  }
}

}  // namespace posert
