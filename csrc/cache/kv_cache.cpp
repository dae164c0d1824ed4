#include "cache/kv_cache.h"

#include <cstring>

namespace posert {

void kv_push_cpu(float* storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, const float* fresh,
                 int64_t B, const int32_t* rows, const int32_t* pos, int64_t K, int64_t first) {
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = rows[k];
      if (s < 0) continue;  // a negative row writes nothing (a padded batch row)
      float* dst = storage + ((g * S + s) * R * M + pos[k]) * D;
      const float* src = fresh + (g * B + (s - first)) * R * D;
      for (int64_t r = 0; r < R; ++r) std::memcpy(dst + r * M * D, src + r * D, sizeof(float) * D);
    }
  }
}

}  // namespace posert
