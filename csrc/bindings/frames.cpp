// Bindings of csrc/frames: validation and normalisation of the frames Pipeline.push_many is given.
#include "frames/frames.h"

#include "bindings/bindings.h"
#include "bindings/checks.h"

namespace posert::bind {

namespace {

py::tuple prepare_frames(const F64& kp, const py::object& conf_arr, const F32& size, const I64& slots,
                         const py::array& out_arr) {
  F32 out = as_out<float>(out_arr, "out");
  require_shape(kp, {-1, -1, 2}, "kp (B, J, 2)");
  const int64_t B = kp.shape(0), J = kp.shape(1);
  require_shape(out, {B, J, 3}, "out (B, J, 3)");
  require_shape(size, {-1, 2}, "size (S, 2)");
  require_shape(slots, {B}, "slots (B,)");
  require_indices(slots.data(), B, 0, size.shape(0), "slot");
  F64 conf;
  if (!conf_arr.is_none()) {
    conf = conf_arr.cast<F64>();
    require_shape(conf, {B, J}, "conf (B, J)");
  }
  const FrameProblem p = prepare_frames_cpu(kp.data(), conf_arr.is_none() ? nullptr : conf.data(), size.data(),
                                            slots.data(), B, J, out.mutable_data());
  return py::make_tuple(p.frame, p.code);
}

}  // namespace

void bind_frames(py::module_& m) {
  m.def("prepare_frames", &prepare_frames, py::arg("kp"), py::arg("conf"), py::arg("size"), py::arg("slots"),
        py::arg("out"),
        "Validate and normalise frames for Pipeline.push_many (csrc/frames/frames.h): kp (B, J, 2) float64 px, conf "
        "(B, J) float64 or None, size (S, 2) float32, slots (B,) int64 → out (B, J, 3) float32; returns (b, code): "
        "0 ok, 1 bad confidence, 2 NaN/inf on a visible joint (frame b).");
}

}  // namespace posert::bind
