// Bindings of csrc/step: one fused lifter/denoiser step (the reference twin, the fast CPU body and the
// CUDA kernel) and the thread-block cluster form's weight packing.
#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "step/transformer_step.h"

#include <stdexcept>

namespace posert::bind {

namespace {

// dims = (J, C, heads, depth, M, in_ch, hidden, scale, eps, root, denoiser): see step/transformer_step.h.
StepDims step_dims(const py::tuple& t) {
  if (t.size() != 11)
    throw py::value_error("dims must be (J, C, heads, depth, M, in_ch, hidden, scale, eps, root, denoiser)");
  StepDims d{};
  d.J = t[0].cast<int>(); d.C = t[1].cast<int>(); d.heads = t[2].cast<int>(); d.depth = t[3].cast<int>();
  d.M = t[4].cast<int>(); d.in_ch = t[5].cast<int>(); d.hidden = t[6].cast<int>();
  d.scale = t[7].cast<float>(); d.eps = t[8].cast<float>(); d.root = t[9].cast<int>(); d.denoiser = t[10].cast<int>();
  if (d.J <= 0 || d.C <= 0 || d.heads <= 0 || d.C % d.heads || d.depth <= 0 || d.M <= 0 || d.hidden <= 0 ||
      d.root < 0 || d.root >= d.J || d.in_ch != (d.denoiser ? 6 : 3))
    throw py::value_error("dims: need J, C, heads, depth, M, hidden > 0, heads | C, 0 <= root < J, in_ch 3 (lifter) "
                          "or 6 (denoiser)");
  // bounds that keep every size of step_layout far from int64 overflow
  if (d.J > 256 || d.C > 4096 || d.heads > 256 || d.depth > 256 || d.M > 65536 || d.hidden > 65536 ||
      d.denoiser < 0 || d.denoiser > 1)
    throw py::value_error("dims: J <= 256, C <= 4096, heads <= 256, depth <= 256, M <= 65536, hidden <= 65536, "
                          "denoiser 0 or 1");
  return d;
}

// ValueError unless rows [row0, row0 + B) lie in a cache of S streams (no overflow for any row0).
void require_cache_rows(int64_t row0, int64_t B, int64_t S) {
  if (row0 < 0 || row0 > S || B > S - row0)
    throw py::value_error("cache rows [row0, row0 + B) = [" + std::to_string(row0) + ", +" + std::to_string(B) +
                          ") exceed the cache's " + std::to_string(S) + " streams");
}

// One fused step over B rows; x (and x_T, caches) written in place. Batch row b is cache stream row0 + b.
// `fast`: the fast body (step/step_fast.cpp) instead of the reference twin.
void transformer_step(const F32& weights, const py::tuple& dims, const F32& inp, const py::array& x_arr,
                      const py::object& x_T_arr, const py::object& cond_arr, const I64& count, const I32& rows,
                      const py::array& cache_arr, const py::object& ddim_arr, int64_t row0, bool fast) {
  const StepDims d = step_dims(dims);
  const StepLayout L = step_layout(d);
  require_shape(weights, {L.total}, "weights (packed: posert.runtime.backends.packing.pack_step)");
  F32 x = as_out<float>(x_arr, "x");
  // the cache: float32, or float16 (half bits) for the fast body
  const bool half = cache_arr.dtype().is(py::dtype("float16"));
  if (half && !fast) throw py::type_error("cache: float16 caches need fast=True (the twin is float32 only)");
  if (!half && !cache_arr.dtype().is(py::dtype::of<float>()))
    throw py::type_error("cache: dtype must be float32 or float16");
  if (!(cache_arr.flags() & py::array::c_style) || !cache_arr.writeable())
    throw py::value_error("cache: must be C-contiguous and writeable");
  require_shape(inp, {-1, d.J, 3}, "inp (B, J, 3)");
  const int64_t B = inp.shape(0);
  require_shape(x, {B, d.J, 3}, "x");
  require_shape(cache_arr, {2 * d.depth, -1, d.J, d.heads, d.M, d.C / d.heads}, "cache (2·depth, S, J, heads, M, d)");
  const int64_t S = cache_arr.shape(1);
  require_cache_rows(row0, B, S);
  require_shape(count, {B}, "count");
  require_shape(rows, {B}, "rows");
  for (int64_t b = 0; b < B; ++b)
    if (count.data()[b] < 0) throw py::value_error("count must be >= 0");
  float* xT = nullptr;
  F32 x_T;
  if (!x_T_arr.is_none()) {
    x_T = as_out<float>(x_T_arr.cast<py::array>(), "x_T");
    require_shape(x_T, {B, d.J, 3}, "x_T");
    xT = x_T.mutable_data();
  }
  F32 cond, ddim;
  if (d.denoiser) {
    if (cond_arr.is_none() || ddim_arr.is_none()) throw py::value_error("the denoiser step needs cond and ddim");
    cond = cond_arr.cast<F32>();
    ddim = ddim_arr.cast<F32>();
    require_shape(cond, {d.C}, "cond (C,)");
    require_shape(ddim, {4}, "ddim (a, b, ap, bp)");
  }
  const int64_t off = row0 * (int64_t)d.J * d.heads * d.M * (d.C / d.heads);
  const float* c = d.denoiser ? cond.data() : nullptr;
  const float* dd = d.denoiser ? ddim.data() : nullptr;
  py::array cache = cache_arr;
  void* base = cache.mutable_data();
  py::gil_scoped_release nogil;
  if (half)
    transformer_step_fast_f16(d, weights.data(), B, inp.data(), x.mutable_data(), xT, c, count.data(), rows.data(),
                              static_cast<uint16_t*>(base) + off, S, dd);
  else
    (fast ? transformer_step_fast : transformer_step_cpu)(d, weights.data(), B, inp.data(), x.mutable_data(), xT, c,
                                                          count.data(), rows.data(), static_cast<float*>(base) + off,
                                                          S, dd);
}

// The cluster form's per-rank weight vectors (transformer_step.h: cluster_layout): (cluster, rank floats).
py::array_t<float> cluster_pack(const F32& weights, const py::tuple& dims, int cluster) {
  const StepDims d = step_dims(dims);
  require_shape(weights, {step_layout(d).total}, "weights (packed: posert.runtime.backends.packing.pack_step)");
  if (cluster < 1 || cluster > 16) throw py::value_error("cluster must be in 1..16");
  py::array_t<float> out({(int64_t)cluster, cluster_layout(d, cluster).rank});
  try {
    transformer_step_cluster_pack(d, weights.data(), cluster, out.mutable_data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

}  // namespace

void bind_step(py::module_& m) {
  m.def("transformer_step", &transformer_step, py::arg("weights"), py::arg("dims"), py::arg("inp"), py::arg("x"),
        py::arg("x_T"), py::arg("cond"), py::arg("count"), py::arg("rows"), py::arg("cache"), py::arg("ddim"),
        py::arg("row0") = 0, py::arg("fast") = false,
        "One fused lifter/denoiser step over B rows (csrc/step/transformer_step.h): inp (B, J, 3), x (B, J, 3) "
        "in/out, x_T (B, J, 3) or None, cond (C,) and ddim (4,) for the denoiser else None, count (B,) int64, rows "
        "(B,) int32 (< 0: no cache write), cache (2·depth, S, J, heads, M, d) in/out, batch row b at cache stream "
        "row0 + b; all float32 but count/rows, and the cache may be float16 with fast=True (keys/values rounded "
        "to half on write, widened on read). fast=False: the plain-loop reference twin; True: the fast body "
        "(csrc/step/step_fast.cpp: tiled, register-blocked, AVX2 + FMA + F16C where present), equal to float "
        "rounding. Releases the GIL. ValueError on shapes or rows outside the cache; TypeError for a cache that "
        "is neither float32 nor float16, or float16 with fast=False.");
  m.def("transformer_step_cluster_pack", &cluster_pack, py::arg("weights"), py::arg("dims"), py::arg("cluster"),
        "The thread-block cluster form's weights (csrc/step/transformer_step.h, cluster_layout): for each of "
        "`cluster` ranks, every layer's column slice of the eight linears with the LayerNorm in front of qkv and fc1 "
        "folded in (W' = diag(gamma) W, b' = b + beta W), and the lag table; (cluster, floats per rank) float32. "
        "ValueError if cluster does not divide 3C, C and hidden.");
}

void bind_step_cuda(py::module_& m) {
  m.def("_transformer_step_cuda", [](const py::tuple& dims, uintptr_t weights, int64_t B, uintptr_t inp, uintptr_t x,
                                    uintptr_t x_T, uintptr_t cond, uintptr_t count, uintptr_t rows, uintptr_t cache,
                                    int64_t S, float a, float b, float ap, float bp, uintptr_t stream,
                                    int threads, int cluster, uintptr_t packed, bool pdl) {
        const StepDims d = step_dims(dims);
        require_cache_rows(0, B, S);
        require_cuda_build();
#ifdef POSERT_WITH_CUDA
        transformer_step_cuda(d, device_ptr<const float>(weights, "weights"), B, device_ptr<const float>(inp, "inp"),
                              device_ptr<float>(x, "x"), reinterpret_cast<float*>(x_T),
                              d.denoiser ? device_ptr<const float>(cond, "cond") : nullptr,
                              device_ptr<const int64_t>(count, "count"), device_ptr<const int32_t>(rows, "rows"),
                              device_ptr<float>(cache, "cache"), S, a, b, ap, bp, reinterpret_cast<void*>(stream),
                              threads, cluster, reinterpret_cast<const float*>(packed), pdl);
#endif
      }, py::arg("dims"), py::arg("weights"), py::arg("B"), py::arg("inp"), py::arg("x"), py::arg("x_T"),
      py::arg("cond"), py::arg("count"), py::arg("rows"), py::arg("cache"), py::arg("S"), py::arg("a") = 0.0f,
      py::arg("b") = 0.0f, py::arg("ap") = 0.0f, py::arg("bp") = 0.0f, py::arg("stream") = 0, py::arg("threads") = 512,
      py::arg("cluster") = 1, py::arg("packed") = 0, py::arg("pdl") = false,
      "(The cuda backend's.) CUDA twin of transformer_step on device pointers (x_T may be 0; cond 0 for the lifter): `cluster` "
      "thread blocks (1, 2, 4, 8, 16; > 1 needs sm_90 and `packed`, the device copy of "
      "transformer_step_cluster_pack(weights, dims, cluster)) of `threads` (256, 512, 1024) per row; `pdl`: a "
      "programmatic dependent launch after the stream's previous kernel (sm_90+).");
}

}  // namespace posert::bind
