// Bindings of csrc/guard: the output guard, built once over a pipeline's per-stream guard state.
#include "guard/guard.h"

#include <cmath>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/checks.h"

namespace posert::bind {

namespace {

class GuardKernel {
 public:
  GuardKernel(const py::object& state, const I64& parents, const F32& rest, double max_reach_mm,
              double max_bone_ratio)
      : parents_(parents), rest_(rest) {
    require_shape(parents_, {-1}, "parents (J,)");
    const int64_t J = parents_.shape(0);
    if (J < 2) throw py::value_error("the guard needs J >= 2 joints");
    for (int64_t j = 1; j < J; ++j)
      if (parents_.data()[j] < 0 || parents_.data()[j] >= j)
        throw py::value_error("parents: every joint j >= 1 needs a parent in [0, j)");
    require_shape(rest_, {J, 3}, "rest (J, 3)");
    rest_bone_.resize(J - 1);  // the reference adult's bones, once: the guard caps every bone at them
    for (int64_t j = 1; j < J; ++j) {
      const int64_t q = parents_.data()[j];
      double r2 = 0;
      for (int e = 0; e < 3; ++e) {
        const double d = (double)rest_.data()[j * 3 + e] - (double)rest_.data()[q * 3 + e];
        r2 += d * d;
      }
      rest_bone_[j - 1] = std::sqrt(r2);
    }
    if (!(max_reach_mm > 0) || !std::isfinite(max_reach_mm)) throw py::value_error("max_reach_mm must be finite and > 0");
    if (!(max_bone_ratio > 1) || !std::isfinite(max_bone_ratio))
      throw py::value_error("max_bone_ratio must be finite and > 1");
    bone_ref_ = state_field<double>(state, "bone_ref", {-1, J - 1});
    const int64_t S = bone_ref_.shape(0);
    bone_n_ = state_field<double>(state, "bone_n", {S, J - 1});
    last_ = state_field<float>(state, "last", {S, J, 3});
    has_last_ = state_field<uint8_t>(state, "has_last", {S});
    st_ = {S, J, parents_.data(), rest_.data(), rest_bone_.data(), bone_ref_.mutable_data(), bone_n_.mutable_data(),
           last_.mutable_data(), has_last_.mutable_data()};
    p_ = {max_reach_mm, max_bone_ratio};
  }

  GuardKernel(const GuardKernel&) = delete;  // st_ points into this object's rest_bone_
  GuardKernel& operator=(const GuardKernel&) = delete;

  py::array_t<uint8_t> apply(const py::array& refined_arr, const py::array& lifted_arr, const F32& conf,
                             const I64& slots, const py::array& health_arr) {
    F32 refined = as_out<float>(refined_arr, "refined"), lifted = as_out<float>(lifted_arr, "lifted");
    auto health = as_out<uint8_t>(health_arr, "health");
    const int64_t R = slots.shape(0);
    require_shape(slots, {R}, "slots (R,)");
    require_shape(refined, {R, st_.J, 3}, "refined (R, J, 3)");
    require_shape(lifted, {R, st_.J, 3}, "lifted (R, J, 3)");
    require_shape(conf, {R, st_.J}, "conf (R, J)");
    require_shape(health, {R}, "health (R,)");
    require_indices(slots.data(), R, 0, st_.S, "slot");
    for (int64_t r = 0; r < R; ++r)
      if (health.data()[r] > kReset) throw py::value_error("health in: OK, COASTING or RESET");
    py::array_t<uint8_t> refit(R);
    guard_cpu(refined.mutable_data(), lifted.mutable_data(), conf.data(), slots.data(), R, st_, p_,
              health.mutable_data(), refit.mutable_data());
    return refit;
  }

 private:
  I64 parents_;
  F32 rest_;
  std::vector<double> rest_bone_;
  F64 bone_ref_, bone_n_;
  F32 last_;
  py::array_t<uint8_t, py::array::c_style> has_last_;
  GuardState st_{};
  GuardParams p_{};
};

}  // namespace

void bind_guard(py::module_& m) {
  py::class_<GuardKernel>(m, "GuardKernel",
                          "The output guard (csrc/guard/guard.h) over a pipeline's guard state: an object with "
                          "bone_ref (S, J - 1) float64, bone_n (S, J - 1) float64, last (S, J, 3) float32 and has_last "
                          "(S,) uint8 (checked here and held); parents (J,) int64, rest (J, 3) float32 mm, the "
                          "bounds max_reach_mm and max_bone_ratio.")
      .def(py::init<const py::object&, const I64&, const F32&, double, double>(), py::arg("state"), py::arg("parents"),
           py::arg("rest"), py::arg("max_reach_mm"), py::arg("max_bone_ratio"))
      .def("apply", &GuardKernel::apply, py::arg("refined"), py::arg("lifted"), py::arg("conf"), py::arg("slots"),
           py::arg("health"),
           "Check and repair refined and lifted (R, J, 3) float32 mm of slots (R,) int64 in place, conf (R, J) "
           "float32 the frames' confidences; health (R,) uint8 in/out; returns refit (R,) uint8: 1 where the lifted "
           "pose replaced an implausible refined one.");
}

}  // namespace posert::bind
