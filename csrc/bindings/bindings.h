// The pieces of the posert._C module, one function per concern (bindings/*.cpp), and the helpers of
// the CUDA entry points, which take raw device pointers (e.g. torch.Tensor.data_ptr()) and a
// cudaStream_t handle.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace posert::bind {

namespace py = pybind11;

void bind_attention(py::module_& m);
void bind_cache(py::module_& m);
void bind_cache_cuda(py::module_& m);
void bind_correction(py::module_& m);
void bind_frames(py::module_& m);
void bind_guard(py::module_& m);
void bind_step(py::module_& m);
void bind_step_cuda(py::module_& m);

// RuntimeError where posert._C was built without its CUDA kernels.
inline void require_cuda_build() {
#ifndef POSERT_WITH_CUDA
  throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
}

template <typename T>
T* device_ptr(uintptr_t p, const char* name) {
  if (p == 0) throw py::value_error(std::string(name) + ": null device pointer");
  return reinterpret_cast<T*>(p);
}

}  // namespace posert::bind
