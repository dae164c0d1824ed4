// Bindings of csrc/frames: validation and normalisation of the frames Pipeline.push_many is given,
// and the batch-invariant affine map of the refiner's CND mean.
#include "frames/flips.h"
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

class FlipKernel {
 public:
  FlipKernel(const py::object& state, const I64& left, const I64& right, const I64& perm, double max_flip_s,
             double separation, double rate)
      : left_(left), right_(right), perm_(perm) {
    require_shape(left_, {-1}, "left (P,)");
    const int64_t P = left_.shape(0);
    require_shape(right_, {P}, "right (P,)");
    require_shape(perm_, {-1}, "perm (J,)");
    const int64_t J = perm_.shape(0);
    require_indices(left_.data(), P, 0, J, "left joint");
    require_indices(right_.data(), P, 0, J, "right joint");
    require_indices(perm_.data(), J, 0, J, "perm");
    if (!(max_flip_s > 0) || !std::isfinite(max_flip_s)) throw py::value_error("max_flip_s must be finite and > 0");
    if (!(separation >= 0) || !std::isfinite(separation)) throw py::value_error("separation must be finite and >= 0");
    if (!(rate > 0 && rate <= 1)) throw py::value_error("rate must be in (0, 1]");
    vec_ = state_field<double>(state, "vec", {-1, -1, P, 2});
    const int64_t S = vec_.shape(0), H = vec_.shape(1);
    if (H < 1) throw py::value_error("state.vec: the history needs at least one entry");
    ok_ = state_field<uint8_t>(state, "ok", {S, H, P});
    at_ = state_field<double>(state, "at", {S, H});
    head_ = state_field<int64_t>(state, "head", {S});
    scale_ = state_field<double>(state, "scale", {S, P});
    since_ = state_field<double>(state, "since", {S});
    st_ = {S, H, P, J, left_.data(), right_.data(), perm_.data(), vec_.mutable_data(), ok_.mutable_data(),
           at_.mutable_data(), head_.mutable_data(), scale_.mutable_data(), since_.mutable_data()};
    p_ = {max_flip_s, separation, rate};
  }

  py::array_t<uint8_t> apply(const py::array& frames_arr, const I64& slots, const F64& t) {
    F32 frames = as_out<float>(frames_arr, "frames");
    const int64_t R = slots.shape(0);
    require_shape(slots, {R}, "slots (R,)");
    require_shape(frames, {R, st_.J, 3}, "frames (R, J, 3)");
    require_shape(t, {R}, "t (R,)");
    require_indices(slots.data(), R, 0, st_.S, "slot");
    const int64_t* hd = head_.data();
    for (int64_t r = 0; r < R; ++r)
      if (hd[slots.data()[r]] < 0 || hd[slots.data()[r]] >= st_.H) throw py::value_error("state.head out of range");
    py::array_t<uint8_t> flipped(R);
    unflip_frames_cpu(frames.mutable_data(), slots.data(), t.data(), R, st_, p_, flipped.mutable_data());
    return flipped;
  }

 private:
  I64 left_, right_, perm_;
  F64 vec_, at_, scale_, since_;
  py::array_t<uint8_t, py::array::c_style> ok_;
  I64 head_;
  FlipState st_{};
  FlipParams p_{};
};

}  // namespace

void bind_frames(py::module_& m) {
  py::class_<FlipKernel>(m, "FlipKernel",
                         "Left/right flips undone (csrc/frames/flips.h) over a pipeline's flip state: an object with "
                         "vec (S, H, P, 2) float64, ok (S, H, P) uint8, at (S, H) float64, head (S,) int64, scale "
                         "(S, P) float64 and since (S,) float64 (checked here and held); left, right (P,) int64 the "
                         "pairs' joints, perm (J,) int64 every joint's mirror; max_flip_s, separation, rate.")
      .def(py::init<const py::object&, const I64&, const I64&, const I64&, double, double, double>(),
           py::arg("state"), py::arg("left"), py::arg("right"), py::arg("perm"), py::arg("max_flip_s"),
           py::arg("separation"), py::arg("rate"))
      .def("apply", &FlipKernel::apply, py::arg("frames"), py::arg("slots"), py::arg("t"),
           "Undo the flips of frames (R, J, 3) float32 (x, y, confidence) of slots (R,) int64 (distinct) at times t "
           "(R,) float64 s, in place; returns flipped (R,) uint8.");
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
