// The pybind11 module posert._C: posert's own kernels (csrc/*), CPU implementations and CUDA twins.
#include "bindings/bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "posert native kernels: the fused transformer step, its attention cores, the key/value ring-cache "
            "push, the fused DDIM update, the frame preparation and left/right flips, the correction stage and the output guard (CPU + CUDA "
            "twins)";
  m.def("built_with_cuda", []() {
#ifdef POSERT_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether this build has the CUDA twins (nvcc was found at build time).");
  posert::bind::bind_step(m);
  posert::bind::bind_attention(m);
  posert::bind::bind_cache(m);
  posert::bind::bind_frames(m);
  posert::bind::bind_correction(m);
  posert::bind::bind_guard(m);
  posert::bind::bind_step_cuda(m);
  posert::bind::bind_cache_cuda(m);
}
