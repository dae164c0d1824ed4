// Bindings of csrc/frames: validation and normalisation of the frames Pipeline.push_many is given,
// and the batch-invariant affine map of the refiner's CND mean.
#include "frames/frames.h"

#include <cmath>

#include "bindings/bindings.h"
#include "bindings/checks.h"

namespace posert::bind {

namespace {

py::tuple prepare_frames(const F64& kp, const py::object& conf_arr, const F32& size, const I64& slots, double margin,
                         const py::array& out_arr, const py::array& dropped_arr) {
  F32 out = as_out<float>(out_arr, "out");
  I32 dropped = as_out<int32_t>(dropped_arr, "dropped");
  require_shape(kp, {-1, -1, 2}, "kp (B, J, 2)");
  const int64_t B = kp.shape(0), J = kp.shape(1);
  require_shape(out, {B, J, 3}, "out (B, J, 3)");
  require_shape(dropped, {B}, "dropped (B,)");
  require_shape(size, {-1, 2}, "size (S, 2)");
  require_shape(slots, {B}, "slots (B,)");
  require_indices(slots.data(), B, 0, size.shape(0), "slot");
  if (!(margin >= 0) || !std::isfinite(margin)) throw py::value_error("margin must be finite and >= 0");
  for (int64_t b = 0; b < B; ++b) {
    const float* sz = size.data() + 2 * slots.data()[b];
    if (!(sz[0] > 0 && sz[1] > 0)) throw py::value_error("size: the image size of every slot given must be positive");
  }
  F64 conf;
  if (!conf_arr.is_none()) {
    conf = conf_arr.cast<F64>();
    require_shape(conf, {B, J}, "conf (B, J)");
  }
  const FrameProblem p = prepare_frames_cpu(kp.data(), conf_arr.is_none() ? nullptr : conf.data(), size.data(),
                                            slots.data(), B, J, margin, out.mutable_data(), dropped.mutable_data());
  return py::make_tuple(p.frame, p.code);
}

void affine_rows(const F32& b, const F32& A, const F32& c, const py::array& out_arr) {
  F32 out = as_out<float>(out_arr, "out");
  require_shape(b, {-1, -1}, "b (n, K)");
  const int64_t n = b.shape(0), K = b.shape(1);
  require_shape(A, {K, -1}, "A (K, N)");
  const int64_t N = A.shape(1);
  require_shape(c, {N}, "c (N,)");
  require_shape(out, {n, N}, "out (n, N)");
  py::gil_scoped_release nogil;  // the two shards of a tick run it from two threads
  affine_rows_cpu(b.data(), A.data(), c.data(), n, K, N, out.mutable_data());
}

}  // namespace

void bind_frames(py::module_& m) {
  m.def("prepare_frames", &prepare_frames, py::arg("kp"), py::arg("conf"), py::arg("size"), py::arg("slots"),
        py::arg("margin"), py::arg("out"), py::arg("dropped"),
        "Validate and normalise frames for Pipeline.push_many (csrc/frames/frames.h): kp (B, J, 2) float64 px, conf "
        "(B, J) float64 or None, size (S, 2) float32, slots (B,) int64, margin (image sizes) → out (B, J, 3) float32 "
        "and dropped (B,) int32, the visible joints out of view (made missing); returns (b, code): 0 ok, 1 bad "
        "confidence, 2 NaN/inf on a visible joint, 3 a visible coordinate beyond float32 (frame b).");
  m.def("affine_rows", &affine_rows, py::arg("b"), py::arg("A"), py::arg("c"), py::arg("out"),
        "out (n, N) = b (n, K) · A (K, N) + c (N,), float32, each row in a fixed order of operations: a row's result "
        "does not depend on the batch it is in.");
}

}  // namespace posert::bind
