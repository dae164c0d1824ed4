// Error handling shared by the CUDA sources.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace posert {

// Throws std::runtime_error with a clear message when no usable GPU is present.
inline void require_cuda_device() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the sticky error state
    throw std::runtime_error(std::string("posert._C: CUDA kernel called but no usable GPU is present (") +
                             (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") +
                             "); use the CPU functions instead");
  }
}

inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("posert._C: ") + what + ": " + cudaGetErrorString(err));
}

inline unsigned blocks_for(long long n, int threads) { return (unsigned)((n + threads - 1) / threads); }

}  // namespace posert
