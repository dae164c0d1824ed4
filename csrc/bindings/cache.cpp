// Bindings of csrc/cache: the key/value ring-cache push and the fused DDIM update, and their CUDA twins.
#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "cache/ddim.h"
#include "cache/kv_cache.h"

namespace posert::bind {

namespace {

void ddim_update(const F32& x_k, const F32& e, const py::array& out_arr, float a, float b, float ap, float bp) {
  F32 out = as_out<float>(out_arr, "out");
  if (x_k.size() != e.size() || x_k.size() != out.size())
    throw py::value_error("ddim_update: x_k, e and out must have the same number of elements");
  py::gil_scoped_release nogil;
  ddim_update_cpu(x_k.data(), e.data(), out.mutable_data(), x_k.size(), a, b, ap, bp);
}

// storage (G, S, R, M, D) float32, fresh (G, B, R, D) holding streams first … first + B − 1,
// rows (K,) int32 in [first, min(first + B, S)) or < 0 (skipped), pos (K,) int32 in [0, M).
void kv_push(const py::array& storage_arr, const F32& fresh, const I32& rows, const I32& pos, int64_t first) {
  F32 storage = as_out<float>(storage_arr, "storage");
  require_shape(storage, {-1, -1, -1, -1, -1}, "storage (G, S, R, M, D)");
  const int64_t G = storage.shape(0), S = storage.shape(1), R = storage.shape(2), M = storage.shape(3),
                D = storage.shape(4);
  require_shape(fresh, {G, -1, R, D}, "fresh (G, B, R, D)");
  const int64_t B = fresh.shape(1), K = rows.shape(0);
  require_shape(rows, {-1}, "rows");
  require_shape(pos, {K}, "pos");
  if (first < 0 || first > S) throw py::index_error("first must be in [0, S], got " + std::to_string(first));
  const int64_t end = B < S - first ? first + B : S;  // overflow-safe min(first + B, S)
  require_indices(rows.data(), K, first, end, "row", /*skip_negative=*/true);
  for (int64_t k = 0; k < K; ++k)
    if (rows.data()[k] >= 0 && (pos.data()[k] < 0 || pos.data()[k] >= M))
      throw py::index_error("ring position " + std::to_string(pos.data()[k]) + " out of range [0, " +
                            std::to_string(M) + ")");
  py::gil_scoped_release nogil;  // shards of one tick write disjoint rows from two threads
  kv_push_cpu(storage.mutable_data(), G, S, R, M, D, fresh.data(), B, rows.data(), pos.data(), K, first);
}

}  // namespace

void bind_cache(py::module_& m) {
  m.def("kv_push", &kv_push, py::arg("storage"), py::arg("fresh"), py::arg("rows"), py::arg("pos"),
        py::arg("first") = 0,
        "Write one new frame's keys/values fresh (G, B, R, D) into the ring caches storage (G, S, R, M, D): "
        "storage[:, rows[k], :, pos[k]] = fresh[:, rows[k] - first] for every k with rows[k] >= 0 (a negative row "
        "writes nothing; csrc/cache/kv_cache.h). float32 arrays, int32 rows/pos; IndexError for a row or position "
        "outside the cache.");
  m.def("ddim_update", &ddim_update, py::arg("x_k"), py::arg("e"), py::arg("out"), py::arg("a"), py::arg("b"),
        py::arg("ap"), py::arg("bp"), "Fused DDIM update (D3PRefiner Eq. 9) on float32 arrays; out may alias x_k.");
}

void bind_cache_cuda(py::module_& m) {
  m.def("_kv_push_cuda", [](uintptr_t storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, uintptr_t fresh,
                           int64_t B, uintptr_t rows, uintptr_t pos, int64_t K, uintptr_t stream, int64_t first) {
        require_cuda_build();
#ifdef POSERT_WITH_CUDA
        kv_push_cuda(device_ptr<float>(storage, "storage"), G, S, R, M, D, device_ptr<const float>(fresh, "fresh"), B,
                     device_ptr<const int32_t>(rows, "rows"), device_ptr<const int32_t>(pos, "pos"), K,
                     reinterpret_cast<void*>(stream), first);
#endif
      }, py::arg("storage"), py::arg("G"), py::arg("S"), py::arg("R"), py::arg("M"), py::arg("D"), py::arg("fresh"),
      py::arg("B"), py::arg("rows"), py::arg("pos"), py::arg("K"), py::arg("stream") = 0, py::arg("first") = 0,
      "(The cuda backend's.) CUDA twin of kv_push on device pointers (rows and pos on the device).");
  m.def("_ddim_update_cuda", [](uintptr_t x_k, uintptr_t e, uintptr_t out, int64_t n, float a, float b, float ap,
                               float bp, uintptr_t stream) {
        require_cuda_build();
#ifdef POSERT_WITH_CUDA
        ddim_update_cuda(device_ptr<const float>(x_k, "x_k"), device_ptr<const float>(e, "e"),
                         device_ptr<float>(out, "out"), n, a, b, ap, bp, reinterpret_cast<void*>(stream));
#endif
      }, py::arg("x_k"), py::arg("e"), py::arg("out"), py::arg("n"), py::arg("a"), py::arg("b"), py::arg("ap"),
      py::arg("bp"), py::arg("stream") = 0, "(The cuda backend's.) CUDA twin of ddim_update on device pointers.");
}

}  // namespace posert::bind
