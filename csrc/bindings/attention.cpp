// Bindings of csrc/attention: the two attention cores of a step, run between ONNX Runtime graphs.
#include "attention/attention.h"
#include "bindings/bindings.h"
#include "bindings/checks.h"

namespace posert::bind {

namespace {

// qkv (B, J, 3·H·D), cache_k/cache_v (B, J, H, M, D), lag (B, M) int64 in [1, M + 1], table (H, M + 2);
// writes out (B, J, H·D), k_new and v_new (B, J, H, D).
void cached_attention(const F32& qkv, const F32& cache_k, const F32& cache_v, const I64& lag, const F32& table,
                      float scale, const py::array& out_arr, const py::array& k_arr, const py::array& v_arr) {
  F32 out = as_out<float>(out_arr, "out"), k_new = as_out<float>(k_arr, "k_new"), v_new = as_out<float>(v_arr, "v_new");
  require_shape(cache_k, {-1, -1, -1, -1, -1}, "cache_k (B, J, H, M, D)");
  const int64_t B = cache_k.shape(0), J = cache_k.shape(1), H = cache_k.shape(2), M = cache_k.shape(3),
                D = cache_k.shape(4);
  require_shape(cache_v, {B, J, H, M, D}, "cache_v");
  require_shape(qkv, {B, J, 3 * H * D}, "qkv");
  require_shape(lag, {B, M}, "lag");
  require_shape(table, {H, M + 2}, "table");
  require_shape(out, {B, J, H * D}, "out");
  require_shape(k_new, {B, J, H, D}, "k_new");
  require_shape(v_new, {B, J, H, D}, "v_new");
  require_indices(lag.data(), B * M, 1, M + 2, "lag");
  py::gil_scoped_release nogil;  // the two shards of a tick run it from two threads
  cached_attention_cpu(qkv.data(), cache_k.data(), cache_v.data(), lag.data(), table.data(), scale, B, J, H, M, D,
                       out.mutable_data(), k_new.mutable_data(), v_new.mutable_data());
}

// qkv (B, J, 3·H·D) → out (B, J, H·D).
void spatial_attention(const F32& qkv, int64_t heads, float scale, const py::array& out_arr) {
  F32 out = as_out<float>(out_arr, "out");
  require_shape(qkv, {-1, -1, -1}, "qkv (B, J, 3·H·D)");
  const int64_t B = qkv.shape(0), J = qkv.shape(1), C3 = qkv.shape(2);
  if (heads <= 0 || C3 % (3 * heads)) throw py::value_error("qkv: last axis must be 3 · heads · D");
  const int64_t D = C3 / (3 * heads);
  require_shape(out, {B, J, heads * D}, "out");
  py::gil_scoped_release nogil;
  spatial_attention_cpu(qkv.data(), scale, B, J, heads, D, out.mutable_data());
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def("cached_attention", &cached_attention, py::arg("qkv"), py::arg("cache_k"), py::arg("cache_v"), py::arg("lag"),
        py::arg("table"), py::arg("scale"), py::arg("out"), py::arg("k_new"), py::arg("v_new"),
        "Attention core of one new frame over its cached past (csrc/attention/attention.h): qkv (B, J, 3·H·D), "
        "caches (B, J, H, M, D), lag (B, M) int64 in [1, M + 1], table (H, M + 2) → out (B, J, H·D), k_new, v_new "
        "(B, J, H, D), all float32 but lag; raises ValueError/IndexError on shapes or lags.");
  m.def("spatial_attention", &spatial_attention, py::arg("qkv"), py::arg("heads"), py::arg("scale"), py::arg("out"),
        "Spatial attention core of one frame (csrc/attention/attention.h): qkv (B, J, 3·H·D) → out (B, J, H·D), "
        "float32; raises ValueError on shapes.");
  m.def("attention_isa", &attention_isa,
        "Which body spatial_attention and cached_attention run on this CPU: 'avx2+fma', 'neon' or 'baseline'.");
  m.def("set_attention_isa", &set_attention_isa, py::arg("baseline"),
        "baseline=True: run the attention cores' baseline body even where AVX2 is present (for tests); "
        "False: choose by CPU (the default).");
}

}  // namespace posert::bind
