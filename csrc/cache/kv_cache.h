// Key/value ring caches of the incremental (one frame per tick) transformer.
//
// Layout (row-major, float32): storage[G][S][R][M][D] — G = 2 · layers (k, v of every layer), S
// streams, R = joints · heads rows per frame, M ring slots (the attention span), D head size. The
// stream axis is second so that storage[g][0:B] is one contiguous (B, R, M, D) tensor: the model
// reads the first B streams of every layer's cache with no copy.
//
// kv_push writes the keys/values of one new frame for K of those streams:
//   storage[g][rows[k]][r][pos[k]][:] = fresh[g][rows[k] - first][r][:]   for fresh[G][B][R][D]
// (rows index the storage streams; fresh holds streams first … first + B − 1, so a batch that covers
// a contiguous block of streams — one shard of a tick — writes into the shared cache; pos[k] in
// [0, M) is the ring slot). A negative rows[k] writes nothing: a batch padded to a fixed size (the
// CUDA-graph tick, which replays one launch for any subset of due streams) marks its idle rows so.
#pragma once
#include <cstdint>

namespace posert {

void kv_push_cpu(float* storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, const float* fresh,
                 int64_t B, const int32_t* rows, const int32_t* pos, int64_t K, int64_t first = 0);

// CUDA twin: device pointers, `stream` a cudaStream_t; throws std::runtime_error without a GPU.
void kv_push_cuda(float* storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, const float* fresh,
                  int64_t B, const int32_t* rows, const int32_t* pos, int64_t K, void* stream,
                  int64_t first = 0);

}  // namespace posert
