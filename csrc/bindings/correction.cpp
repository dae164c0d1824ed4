// Bindings of csrc/correction: the correction stage after the refiner, as a kernel object that is
// built once over a pipeline's per-stream state arrays (validated then) and applied once per tick.
#include "correction/correction.h"

#include <cmath>

#include "bindings/bindings.h"
#include "bindings/checks.h"

namespace posert::bind {

namespace {

// A float64 state array of the Python CorrectionState, checked for dtype, layout and shape.
F64 state_array(const py::object& state, const char* name, const std::vector<int64_t>& shape) {
  py::object a = state.attr(name);
  if (!py::isinstance<py::array>(a)) throw py::type_error(std::string("state.") + name + ": must be a NumPy array");
  F64 arr = as_out<double>(a.cast<py::array>(), (std::string("state.") + name).c_str());
  require_shape(arr, shape, (std::string("state.") + name).c_str());
  return arr;
}

void check_params(const CorrectionParams& p, bool has_mirror) {
  auto fail = [](const std::string& what) { throw py::value_error("correction params: " + what); };
  if (p.iterations < 0) fail("iterations must be >= 0");
  if (!(p.lateral_beta >= 0 && p.lateral_beta <= 1)) fail("lateral_beta must be in [0, 1]");
  if (p.adaptive) {
    if (!(p.noise_q > 0) || !std::isfinite(p.noise_q)) fail("noise_q must be finite and > 0");
    if (!(p.noise_tau > 0 && p.noise_tau <= 1)) fail("noise_tau must be in (0, 1]");
    if (!(p.noise_fallback >= 0 && p.noise_fallback <= 1)) fail("noise_fallback must be in [0, 1]");
    if (p.noise_min_joints < 1) fail("noise_min_joints must be >= 1");
  } else if (p.pixel_noise) {
    fail("pixel_noise needs adaptive");
  }
  if (p.bone_depth) {
    if (!(p.bone_ema > 0 && p.bone_ema <= 1)) fail("bone_ema must be in (0, 1]");
    if (!(p.bone_gate > 0) || !(p.bone_horizon >= 1)) fail("bone_gate must be > 0 and bone_horizon >= 1");
    if (!(p.bone_view_power >= 0) || !std::isfinite(p.bone_view_power)) fail("bone_view_power must be finite and >= 0");
    if (!(p.bone_view_cap >= 1)) fail("bone_view_cap must be >= 1 (inf: no cap)");
    if (p.bone_symmetry && !has_mirror) fail("bone_symmetry needs a mirror permutation");
  }
  if (p.distance && !(p.distance_alpha > 0 && p.distance_alpha <= 1 && p.distance_beta >= 0 && p.distance_beta <= 2))
    fail("the distance tracker's gains must be α in (0, 1] and β in [0, 2] (alpha_beta_gains of an index > 0)");
}

class CorrectionKernel {
 public:
  CorrectionKernel(const py::object& state, const CorrectionParams& params, const I64& parents,
                   const py::object& mirror_obj)
      : p_(params), parents_(parents) {
    require_shape(parents_, {-1}, "parents (J,)");
    const int64_t J = parents_.shape(0);
    if (J < 2) throw py::value_error("the correction needs J >= 2 joints");
    for (int64_t j = 1; j < J; ++j)
      if (parents_.data()[j] < 0 || parents_.data()[j] >= j)
        throw py::value_error("parents: every joint j >= 1 needs a parent in [0, j)");
    if (!mirror_obj.is_none()) {
      mirror_ = mirror_obj.cast<I64>();
      require_shape(mirror_, {J}, "mirror (J,)");
      const int64_t* m = mirror_.data();
      const int64_t* par = parents_.data();
      if (m[0] != 0) throw py::value_error("mirror: the root must map to itself");
      for (int64_t j = 1; j < J; ++j)
        if (m[j] < 1 || m[j] >= J || m[m[j]] != j || par[m[j]] != m[par[j]])
          throw py::value_error("mirror: must be a left/right involution of the joints that maps bones to bones");
    }
    check_params(p_, !mirror_obj.is_none());
    F64 K = state_array(state, "K", {-1, 3, 3});
    const int64_t S = K.shape(0);
    arrays_ = {K,
               state_array(state, "dist", {S, 5}),
               state_array(state, "px", {S, J, 2}),
               state_array(state, "conf", {S, J}),
               state_array(state, "lateral", {S, J, 3}),
               state_array(state, "bone_length", {S, J - 1, 2}),
               state_array(state, "bone_count", {S, J - 1, 2}),
               state_array(state, "bone_delta", {S, J - 1}),
               state_array(state, "noise_hist", {S, 2, J, 2}),
               state_array(state, "noise_var", {S, 2}),
               state_array(state, "pixel_hist", {S, 3, J, 2}),
               state_array(state, "pixel_var", {S, 2}),
               state_array(state, "distance", {S, 4})};
    auto d = [&](size_t i) { return arrays_[i].mutable_data(); };
    st_ = {S, J, parents_.data(), mirror_obj.is_none() ? nullptr : mirror_.data(), d(0), d(1), d(2), d(3),
           d(4), d(5), d(6), d(7), d(8), d(9), d(10), d(11), d(12)};
  }

  py::array_t<uint8_t> apply(const py::array& pose_arr, const I64& rows, const I64& slots, const I64& count) {
    F32 pose = as_out<float>(pose_arr, "pose");
    require_shape(pose, {-1, st_.J, 3}, "pose (B, J, 3)");
    const int64_t R = rows.shape(0);
    require_shape(rows, {R}, "rows (R,)");
    require_shape(slots, {R}, "slots (R,)");
    require_shape(count, {R}, "count (R,)");
    require_indices(rows.data(), R, 0, pose.shape(0), "row");
    require_indices(slots.data(), R, 0, st_.S, "slot");
    for (int64_t r = 0; r < R; ++r)
      if (count.data()[r] < 0) throw py::value_error("count must be >= 0");
    for (int64_t r = 0; r < R; ++r)
      for (int64_t q = 0; q < r; ++q)
        if (slots.data()[q] == slots.data()[r]) throw py::value_error("slots must be distinct");
    py::array_t<uint8_t> reset(R);
    correct_cpu(pose.mutable_data(), rows.data(), slots.data(), count.data(), R, st_, p_, reset.mutable_data());
    return reset;
  }

  void reset(int64_t slot) {
    require_indices(&slot, 1, 0, st_.S, "slot");
    reset_correction_slot(st_, slot);
  }

  int64_t streams() const { return st_.S; }

 private:
  CorrectionParams p_;
  I64 parents_, mirror_;
  std::vector<F64> arrays_;  // keeps the state's arrays alive while the kernel holds their pointers
  CorrectionState st_{};
};

}  // namespace

void bind_correction(py::module_& m) {
  py::class_<CorrectionParams>(m, "CorrectionParams",
                               "The correction stage's tuning (csrc/correction/correction.h); every field starts at "
                               "0/false: posert.runtime.correction sets them from a CorrectionConfig.")
      .def(py::init([]() { return CorrectionParams{}; }))
      .def_readwrite("iterations", &CorrectionParams::iterations)
      .def_readwrite("lateral_beta", &CorrectionParams::lateral_beta)
      .def_readwrite("adaptive", &CorrectionParams::adaptive)
      .def_readwrite("pixel_noise", &CorrectionParams::pixel_noise)
      .def_readwrite("noise_q", &CorrectionParams::noise_q)
      .def_readwrite("noise_tau", &CorrectionParams::noise_tau)
      .def_readwrite("noise_fallback", &CorrectionParams::noise_fallback)
      .def_readwrite("noise_min_joints", &CorrectionParams::noise_min_joints)
      .def_readwrite("bone_depth", &CorrectionParams::bone_depth)
      .def_readwrite("bone_ema", &CorrectionParams::bone_ema)
      .def_readwrite("bone_gate", &CorrectionParams::bone_gate)
      .def_readwrite("bone_horizon", &CorrectionParams::bone_horizon)
      .def_readwrite("bone_view_power", &CorrectionParams::bone_view_power)
      .def_readwrite("bone_view_cap", &CorrectionParams::bone_view_cap)
      .def_readwrite("bone_symmetry", &CorrectionParams::bone_symmetry)
      .def_readwrite("distance", &CorrectionParams::distance)
      .def_readwrite("distance_alpha", &CorrectionParams::distance_alpha)
      .def_readwrite("distance_beta", &CorrectionParams::distance_beta);
  py::class_<CorrectionKernel>(m, "CorrectionKernel",
                               "The correction stage over a pipeline's per-stream state (csrc/correction/"
                               "correction.h). Built once: state is an object with the float64 arrays K (S, 3, 3), "
                               "dist (S, 5), px (S, J, 2), conf (S, J), lateral (S, J, 3), bone_length and "
                               "bone_count (S, J - 1, 2), bone_delta (S, J - 1), noise_hist (S, 2, J, 2), noise_var "
                               "(S, 2), pixel_hist (S, 3, J, 2), pixel_var (S, 2), distance (S, 4) (checked here and "
                               "held: they must not be replaced afterwards), params a CorrectionParams, parents (J,) "
                               "int64 and mirror (J,) int64 or None. ValueError/TypeError for anything else.")
      .def(py::init<const py::object&, const CorrectionParams&, const I64&, const py::object&>(), py::arg("state"),
           py::arg("params"), py::arg("parents"), py::arg("mirror") = py::none())
      .def("apply", &CorrectionKernel::apply, py::arg("pose"), py::arg("rows"), py::arg("slots"), py::arg("count"),
           "Correct pose[rows[r]] (B, J, 3) float32 mm in place from the state of slots[r] (distinct), for a stream "
           "that had count[r] frames before this one (rows, slots, count (R,) int64). Returns reset (R,) uint8: 1 "
           "where the row's state diverged and was cleared (its pose is left as given). IndexError for a row or slot "
           "out of range.")
      .def("reset", &CorrectionKernel::reset, py::arg("slot"),
           "Clear a slot's state as for a new stream (its camera stays).")
      .def_property_readonly("streams", &CorrectionKernel::streams);
  m.def("alpha_beta_gains", [](double lam) {
        double a, b;
        alpha_beta_gains(lam, &a, &b);
        return py::make_tuple(a, b);
      }, py::arg("lam"), "Steady-state gains (α, β) of an α-β tracker of tracking index λ (Kalata 1984).");
  m.def("steady_state_gain", &steady_state_gain, py::arg("lam"),
        "Steady-state Kalman gain of a random walk in white noise, λ = q / σ² (Muth 1960).");
}

}  // namespace posert::bind
