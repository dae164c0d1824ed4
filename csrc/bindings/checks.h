// Argument checks shared by the bindings of posert._C: every array a kernel reads or writes is
// checked for dtype, layout, shape and writeability here, before any pointer reaches a kernel.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace posert::bind {

namespace py = pybind11;

using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;
using F64 = py::array_t<double, py::array::c_style>;

// An array a kernel writes in place: exactly dtype T, C-contiguous and writeable (anything pybind11
// would silently copy is refused, or the caller's array would never see the result).
template <typename T>
py::array_t<T, py::array::c_style> as_out(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + ": dtype must be " + std::string(py::str(py::dtype::of<T>())));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(a);
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += std::to_string(a.shape(i)) + (i + 1 < a.ndim() ? ", " : "");
  return s + ")";
}

// ValueError unless `a` has `shape` (−1: any extent).
template <typename A>
void require_shape(const A& a, const std::vector<int64_t>& shape, const char* name) {
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      want += (shape[i] < 0 ? std::string("*") : std::to_string(shape[i])) + (i + 1 < shape.size() ? ", " : "");
    throw py::value_error(std::string(name) + ": expected shape " + want + "), got " + shape_str(a));
  }
}

// IndexError unless every index (≥ 0; or every index ≥ 0 when `skip_negative`) is in [lo, hi).
template <typename T>
void require_indices(const T* idx, int64_t n, int64_t lo, int64_t hi, const char* name, bool skip_negative = false) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = idx[i];
    if (skip_negative && v < 0) continue;
    if (v < lo || v >= hi)
      throw py::index_error(std::string(name) + " " + std::to_string(v) + " out of range [" + std::to_string(lo) +
                            ", " + std::to_string(hi) + ")");
  }
}

// The array attribute `name` of a kernel's Python state object, which the kernel holds and writes in
// place: as_out's checks and `shape`.
template <typename T>
py::array_t<T, py::array::c_style> state_field(const py::object& state, const char* name,
                                               const std::vector<int64_t>& shape) {
  py::object a = state.attr(name);
  if (!py::isinstance<py::array>(a)) throw py::type_error(std::string("state.") + name + ": must be a NumPy array");
  auto arr = as_out<T>(a.cast<py::array>(), (std::string("state.") + name).c_str());
  require_shape(arr, shape, (std::string("state.") + name).c_str());
  return arr;
}

}  // namespace posert::bind
