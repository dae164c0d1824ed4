// pybind11 module posert._C: ring buffers and the fused DDIM update, CPU implementations and
// CUDA twins (raw device pointers, e.g. torch.Tensor.data_ptr(), plus a cudaStream_t handle).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention.h"
#include "ddim.h"
#include "kv_cache.h"
#include "reprojection.h"
#include "ring_buffer.h"
#include "transformer_step.h"

namespace py = pybind11;
using posert::ring_gather_cpu;
using posert::ring_push_cpu;

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;
using F64 = py::array_t<double, py::array::c_style>;

// Output arrays must be written in place: reject anything pybind11 would silently copy.
F32 as_out(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<float>())) throw py::type_error(std::string(name) + ": dtype must be float32");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
  return py::reinterpret_borrow<F32>(a);
}

I32 as_out_i32(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<int32_t>())) throw py::type_error(std::string(name) + ": dtype must be int32");
  if (!(a.flags() & py::array::c_style) || !a.writeable())
    throw py::value_error(std::string(name) + ": must be C-contiguous and writeable");
  return py::reinterpret_borrow<I32>(a);
}

void check_slots(const I32& slots, int64_t S) {
  const int32_t* p = slots.data();
  for (py::ssize_t i = 0; i < slots.shape(0); ++i)
    if (p[i] < 0 || p[i] >= S) throw py::index_error("slot " + std::to_string(p[i]) + " out of range [0, " +
                                                     std::to_string(S) + ")");
}

template <typename A>
void require_shape(const A& a, const std::vector<int64_t>& shape, const char* name) {
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string got = "(", want = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) got += std::to_string(a.shape(i)) + (i + 1 < a.ndim() ? ", " : "");
    for (size_t i = 0; i < shape.size(); ++i)
      want += (shape[i] < 0 ? std::string("*") : std::to_string(shape[i])) + (i + 1 < shape.size() ? ", " : "");
    throw py::value_error(std::string(name) + ": expected shape " + want + "), got " + got + ")");
  }
}

// Host ring buffers for S streams × N frames × (J, C) values.
class RingBuffer {
 public:
  RingBuffer(int64_t streams, int64_t window, int64_t joints, int64_t channels)
      : S_(streams), N_(window), J_(joints), C_(channels) {
    if (S_ <= 0 || N_ <= 0 || J_ <= 0 || C_ <= 0) throw py::value_error("RingBuffer: all sizes must be positive");
    storage_.assign(S_ * N_ * J_ * C_, 0.0f);
    head_.assign(S_, 0);
    count_.assign(S_, 0);
  }

  void push(const I32& slots, const F32& frames) {
    const int64_t B = slots.shape(0);
    require_shape(slots, {-1}, "slots");
    require_shape(frames, {B, J_, C_}, "frames");
    check_slots(slots, S_);
    ring_push_cpu(storage_.data(), head_.data(), count_.data(), S_, N_, J_ * C_, slots.data(), frames.data(), B);
  }

  void gather(const I32& slots, const py::array& out_arr) const {
    F32 out = as_out(out_arr, "out");
    const int64_t B = slots.shape(0);
    require_shape(slots, {-1}, "slots");
    require_shape(out, {B, N_, J_, C_}, "out");
    check_slots(slots, S_);
    ring_gather_cpu(storage_.data(), head_.data(), count_.data(), S_, N_, J_ * C_, slots.data(), B,
                    out.mutable_data());
  }

  void reset(int64_t slot) {
    if (slot < 0 || slot >= S_) throw py::index_error("RingBuffer.reset: slot out of range");
    head_[slot] = 0;
    count_[slot] = 0;
  }

  int32_t count(int64_t slot) const {
    if (slot < 0 || slot >= S_) throw py::index_error("RingBuffer.count: slot out of range");
    return count_[slot];
  }

  int64_t streams() const { return S_; }
  int64_t window() const { return N_; }

 private:
  int64_t S_, N_, J_, C_;
  std::vector<float> storage_;
  std::vector<int32_t> head_, count_;
};

void ddim_update(const F32& x_k, const F32& e, const py::array& out_arr, float a, float b, float ap, float bp) {
  F32 out = as_out(out_arr, "out");
  if (x_k.size() != e.size() || x_k.size() != out.size())
    throw py::value_error("ddim_update: x_k, e and out must have the same number of elements");
  py::gil_scoped_release nogil;
  posert::ddim_update_cpu(x_k.data(), e.data(), out.mutable_data(), x_k.size(), a, b, ap, bp);
}

// storage (G, S, R, M, D) float32, fresh (G, B, R, D) holding streams first … first + B − 1,
// rows (K,) int32 in [first, min(first + B, S)), pos (K,) int32 < M.
void kv_push(const py::array& storage_arr, const F32& fresh, const I32& rows, const I32& pos, int64_t first) {
  F32 storage = as_out(storage_arr, "storage");
  require_shape(storage, {-1, -1, -1, -1, -1}, "storage (G, S, R, M, D)");
  const int64_t G = storage.shape(0), S = storage.shape(1), R = storage.shape(2), M = storage.shape(3),
                D = storage.shape(4);
  require_shape(fresh, {G, -1, R, D}, "fresh (G, B, R, D)");
  const int64_t B = fresh.shape(1), K = rows.shape(0);
  require_shape(rows, {-1}, "rows");
  require_shape(pos, {K}, "pos");
  if (first < 0) throw py::index_error("first must be >= 0, got " + std::to_string(first));
  const int32_t* rp = rows.data();
  const int64_t end = first + B < S ? first + B : S;
  for (int64_t k = 0; k < K; ++k)
    if (rp[k] >= 0 && (rp[k] < first || rp[k] >= end))
      throw py::index_error("row " + std::to_string(rp[k]) + " out of range [" + std::to_string(first) + ", " +
                            std::to_string(end) + ")");
  const int32_t* p = pos.data();
  for (int64_t k = 0; k < K; ++k)
    if (rp[k] >= 0 && (p[k] < 0 || p[k] >= M)) throw py::index_error("ring position " + std::to_string(p[k]) + " out of range [0, " +
                                                     std::to_string(M) + ")");
  {
    py::gil_scoped_release nogil;  // shards of one tick write disjoint rows from two threads
    posert::kv_push_cpu(storage.mutable_data(), G, S, R, M, D, fresh.data(), B, rp, p, K, first);
  }
}

// qkv (B, J, 3·H·D), cache_k/cache_v (B, J, H, M, D), lag (B, M) int64 in [1, M + 1], table (H, M + 2);
// writes out (B, J, H·D), k_new and v_new (B, J, H, D). See csrc/attention.h.
void cached_attention(const F32& qkv, const F32& cache_k, const F32& cache_v, const I64& lag, const F32& table,
                      float scale, const py::array& out_arr, const py::array& k_arr, const py::array& v_arr) {
  F32 out = as_out(out_arr, "out"), k_new = as_out(k_arr, "k_new"), v_new = as_out(v_arr, "v_new");
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
  const int64_t* lg = lag.data();
  for (int64_t i = 0; i < B * M; ++i)
    if (lg[i] < 1 || lg[i] > M + 1)
      throw py::index_error("lag " + std::to_string(lg[i]) + " out of range [1, " + std::to_string(M + 1) + "]");
  py::gil_scoped_release nogil;  // the two shards of a tick run it from two threads
  posert::cached_attention_cpu(qkv.data(), cache_k.data(), cache_v.data(), lg, table.data(), scale, B, J, H, M, D,
                               out.mutable_data(), k_new.mutable_data(), v_new.mutable_data());
}

// qkv (B, J, 3·H·D) → out (B, J, H·D); see csrc/attention.h.
void spatial_attention(const F32& qkv, int64_t heads, float scale, const py::array& out_arr) {
  F32 out = as_out(out_arr, "out");
  require_shape(qkv, {-1, -1, -1}, "qkv (B, J, 3·H·D)");
  const int64_t B = qkv.shape(0), J = qkv.shape(1), C3 = qkv.shape(2);
  if (heads <= 0 || C3 % (3 * heads)) throw py::value_error("qkv: last axis must be 3 · heads · D");
  const int64_t D = C3 / (3 * heads);
  require_shape(out, {B, J, heads * D}, "out");
  py::gil_scoped_release nogil;
  posert::spatial_attention_cpu(qkv.data(), scale, B, J, heads, D, out.mutable_data());
}

// dims = (J, C, heads, depth, M, in_ch, hidden, scale, eps, root, denoiser): see transformer_step.h.
posert::StepDims step_dims(const py::tuple& t) {
  if (t.size() != 11) throw py::value_error("dims must be (J, C, heads, depth, M, in_ch, hidden, scale, eps, root, "
                                            "denoiser)");
  posert::StepDims d{};
  d.J = t[0].cast<int>(); d.C = t[1].cast<int>(); d.heads = t[2].cast<int>(); d.depth = t[3].cast<int>();
  d.M = t[4].cast<int>(); d.in_ch = t[5].cast<int>(); d.hidden = t[6].cast<int>();
  d.scale = t[7].cast<float>(); d.eps = t[8].cast<float>(); d.root = t[9].cast<int>(); d.denoiser = t[10].cast<int>();
  if (d.J <= 0 || d.C <= 0 || d.heads <= 0 || d.C % d.heads || d.depth <= 0 || d.M <= 0 || d.hidden <= 0 ||
      d.root < 0 || d.root >= d.J || d.in_ch != (d.denoiser ? 6 : 3))
    throw py::value_error("dims: need J, C, heads, depth, M, hidden > 0, heads | C, 0 <= root < J, in_ch 3 (lifter) "
                          "or 6 (denoiser)");
  return d;
}

// One fused step over B rows (see transformer_step.h); x (and x_T, caches) written in place. Batch
// row b is cache stream row0 + b. `fast`: the fast body (step_fast.cpp) instead of the twin.
void transformer_step(const F32& weights, const py::tuple& dims, const F32& inp, const py::array& x_arr,
                      const py::object& x_T_arr, const py::object& cond_arr, const I64& count, const I32& rows,
                      const py::array& cache_arr, const py::object& ddim_arr, int64_t row0, bool fast) {
  const posert::StepDims d = step_dims(dims);
  const posert::StepLayout L = posert::step_layout(d);
  require_shape(weights, {L.total}, "weights (packed: posert.runtime.backends.cuda.pack_step)");
  F32 x = as_out(x_arr, "x");
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
  if (row0 < 0 || row0 + B > S) throw py::value_error("cache rows [row0, row0 + B) exceed the cache's streams");
  require_shape(count, {B}, "count");
  require_shape(rows, {B}, "rows");
  for (int64_t b = 0; b < B; ++b)
    if (count.data()[b] < 0) throw py::value_error("count must be >= 0");
  float* xT = nullptr;
  F32 x_T;
  if (!x_T_arr.is_none()) {
    x_T = as_out(x_T_arr.cast<py::array>(), "x_T");
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
    posert::transformer_step_fast_f16(d, weights.data(), B, inp.data(), x.mutable_data(), xT, c, count.data(),
                                      rows.data(), static_cast<uint16_t*>(base) + off, S, dd);
  else
    (fast ? posert::transformer_step_fast : posert::transformer_step_cpu)(
        d, weights.data(), B, inp.data(), x.mutable_data(), xT, c, count.data(), rows.data(),
        static_cast<float*>(base) + off, S, dd);
}

// The cluster form's per-rank weight vectors (transformer_step.h: cluster_layout): (cluster, rank floats).
py::array_t<float> transformer_step_cluster_pack(const F32& weights, const py::tuple& dims, int cluster) {
  const posert::StepDims d = step_dims(dims);
  require_shape(weights, {posert::step_layout(d).total}, "weights (packed: posert.runtime.backends.cuda.pack_step)");
  if (cluster < 1 || cluster > 16) throw py::value_error("cluster must be in 1..16");
  py::array_t<float> out({(int64_t)cluster, posert::cluster_layout(d, cluster).rank});
  try {
    posert::transformer_step_cluster_pack(d, weights.data(), cluster, out.mutable_data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

// Validate and normalise B frames of 2D keypoints for Pipeline.push_many (posert/runtime/pipeline.py):
// kp (B, J, 2) float64 pixels, conf (B, J) float64 or None (all 1), size (S, 2) float32 (width, height)
// of every stream slot, slots (B,) int64 → out (B, J, 3) float32 = (x / w · 2 − 1, y / w · 2 − h / w,
// conf), 0 for the coordinates of joints with confidence 0 (normalize_screen, VideoPose3D). Same float64
// operations as the NumPy form, so the result is identical. Returns (b, code): code 0 = all valid; 1 =
// frame b has a confidence that is not finite or outside [0, 1] (checked for every frame first); 2 =
// frame b has a NaN/inf coordinate on a joint with confidence > 0. Nothing is read past the first error.
// Camera-aware correction (posert/runtime/reprojection.py, Pipeline.add_stream), see reprojection.h.
F64 as_state(const py::array& arr, const char* name) {
  if (!arr.dtype().is(py::dtype::of<double>()) || !(arr.flags() & py::array::c_style) || !arr.writeable())
    throw py::type_error(std::string(name) + ": must be a writeable C-contiguous float64 array");
  return py::reinterpret_borrow<F64>(arr);
}

void reproject(const py::array& pose_arr, const I64& rows, const I64& slots, const F64& px, const F64& conf,
               const F64& K, const F64& dist, const py::array& dbar_arr, const F64& weight, int iterations,
               const py::object& parents_obj, const py::object& length_obj, const py::object& count_obj,
               const py::object& delta_obj, double gate, double horizon, const py::object& mirror_obj,
               double view_power, double view_cap, const py::object& bone_ema_obj, const py::object& hist_obj,
               const py::object& var_obj, double noise_q, double noise_tau, double noise_fallback,
               int64_t noise_min_joints, const py::object& raw_obj, const py::object& raw_var_obj,
               const py::object& distance_obj, double distance_index) {
  F32 pose = as_out(pose_arr, "pose");
  F64 dbar = as_state(dbar_arr, "dbar");
  require_shape(pose, {-1, -1, 3}, "pose (B, J, 3)");
  const int64_t B = pose.shape(0), J = pose.shape(1), R = rows.shape(0);
  require_shape(rows, {R}, "rows (R,)");
  require_shape(slots, {R}, "slots (R,)");
  require_shape(weight, {R}, "weight (R,)");
  require_shape(px, {-1, J, 2}, "px (S, J, 2)");
  const int64_t S = px.shape(0);
  require_shape(conf, {S, J}, "conf (S, J)");
  require_shape(K, {S, 3, 3}, "K (S, 3, 3)");
  require_shape(dist, {S, 5}, "dist (S, 5)");
  require_shape(dbar, {S, J, 3}, "dbar (S, J, 3)");
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = rows.data()[r], slot = slots.data()[r];
    if (row < 0 || row >= B) throw py::index_error("row " + std::to_string(row) + " out of range");
    if (slot < 0 || slot >= S) throw py::index_error("slot " + std::to_string(slot) + " out of range");
  }
  const int given = !parents_obj.is_none() + !length_obj.is_none() + !count_obj.is_none() + !delta_obj.is_none();
  if (given != 0 && given != 4)
    throw py::value_error("bone depth: give all of parents, bone_length, bone_count, bone_delta or none");
  posert::BoneDepth bones{};
  I64 parents, mirror;
  F64 length, count, delta;
  if (given == 0 && !mirror_obj.is_none()) throw py::value_error("mirror is only used with the bone depth");
  if (given == 4) {
    if (J < 2) throw py::value_error("bone depth needs J ≥ 2 joints");
    if (!(gate > 0) || !(horizon >= 1)) throw py::value_error("bone depth: gate must be > 0 and horizon ≥ 1");
    if (!(view_power >= 0) || !std::isfinite(view_power)) throw py::value_error("view_power must be finite and ≥ 0");
    if (!(view_cap >= 1)) throw py::value_error("view_cap must be ≥ 1 (inf: no cap)");
    parents = py::cast<I64>(parents_obj);
    require_shape(parents, {J}, "parents (J,)");
    for (int64_t j = 1; j < J; ++j)
      if (parents.data()[j] < 0 || parents.data()[j] >= j)
        throw py::value_error("parents: every joint j ≥ 1 needs a parent in [0, j)");
    length = as_state(length_obj, "bone_length");
    count = as_state(count_obj, "bone_count");
    delta = as_state(delta_obj, "bone_delta");
    require_shape(length, {S, J - 1, 2}, "bone_length (S, J − 1, 2)");
    require_shape(count, {S, J - 1, 2}, "bone_count (S, J − 1, 2)");
    require_shape(delta, {S, J - 1}, "bone_delta (S, J − 1)");
    if (!mirror_obj.is_none()) {
      mirror = py::cast<I64>(mirror_obj);
      require_shape(mirror, {J}, "mirror (J,)");
      const int64_t* m = mirror.data();
      const int64_t* par = parents.data();
      if (m[0] != 0) throw py::value_error("mirror: the root must map to itself");
      for (int64_t j = 1; j < J; ++j)
        if (m[j] < 1 || m[j] >= J || m[m[j]] != j || par[m[j]] != m[par[j]])
          throw py::value_error("mirror: must be a left/right involution of the joints that maps bones to bones");
    }
    bones = {parents.data(), mirror_obj.is_none() ? nullptr : mirror.data(), length.mutable_data(),
             count.mutable_data(), delta.mutable_data(), gate, horizon, view_power, view_cap, nullptr};
  }
  F64 bone_ema;
  if (!bone_ema_obj.is_none()) {
    if (given != 4) throw py::value_error("bone_ema is only used with the bone depth");
    bone_ema = py::cast<F64>(bone_ema_obj);
    require_shape(bone_ema, {R}, "bone_ema (R,)");
    bones.ema = bone_ema.data();
  }
  if (hist_obj.is_none() != var_obj.is_none())
    throw py::value_error("adaptive β: give both noise_hist and noise_var or neither");
  posert::LateralNoise noise{};
  F64 hist, var;
  if (!hist_obj.is_none()) {
    if (!(noise_q > 0) || !std::isfinite(noise_q)) throw py::value_error("noise_q must be finite and > 0");
    if (!(noise_tau > 0 && noise_tau <= 1)) throw py::value_error("noise_tau must be in (0, 1]");
    if (!(noise_fallback >= 0 && noise_fallback <= 1)) throw py::value_error("noise_fallback must be in [0, 1]");
    if (noise_min_joints < 1) throw py::value_error("noise_min_joints must be ≥ 1");
    hist = as_state(hist_obj, "noise_hist");
    var = as_state(var_obj, "noise_var");
    require_shape(hist, {S, 2, J, 2}, "noise_hist (S, 2, J, 2)");
    require_shape(var, {S, 2}, "noise_var (S, 2)");
    noise = {hist.mutable_data(), var.mutable_data(), nullptr, nullptr, noise_q, noise_tau, noise_fallback,
             noise_min_joints};
  }
  if (raw_obj.is_none() != raw_var_obj.is_none())
    throw py::value_error("adaptive β: give both noise_raw and noise_raw_var or neither");
  F64 raw, raw_var;
  if (!raw_obj.is_none()) {
    if (hist_obj.is_none()) throw py::value_error("noise_raw is only used with noise_hist and noise_var");
    raw = as_state(raw_obj, "noise_raw");
    raw_var = as_state(raw_var_obj, "noise_raw_var");
    require_shape(raw, {S, 3, J, 2}, "noise_raw (S, 3, J, 2)");
    require_shape(raw_var, {S, 2}, "noise_raw_var (S, 2)");
    noise.raw = raw.mutable_data();
    noise.raw_var = raw_var.mutable_data();
  }
  posert::DistanceFilter distance{};
  F64 dstate;
  if (!distance_obj.is_none()) {
    if (!(distance_index > 0) || !std::isfinite(distance_index))
      throw py::value_error("distance_index must be finite and > 0");
    dstate = as_state(distance_obj, "distance");
    require_shape(dstate, {S, 4}, "distance (S, 4)");
    distance.state = dstate.mutable_data();
    posert::alpha_beta_gains(distance_index, &distance.alpha, &distance.beta);
  }
  posert::reproject_cpu(pose.mutable_data(), J, rows.data(), slots.data(), R, px.data(), conf.data(), K.data(),
                        dist.data(), dbar.mutable_data(), weight.data(), iterations, given == 4 ? &bones : nullptr,
                        hist_obj.is_none() ? nullptr : &noise, distance_obj.is_none() ? nullptr : &distance);
}

py::tuple prepare_frames(const py::array_t<double, py::array::c_style>& kp, const py::object& conf_arr,
                         const F32& size, const I64& slots, const py::array& out_arr) {
  F32 out = as_out(out_arr, "out");
  require_shape(kp, {-1, -1, 2}, "kp (B, J, 2)");
  const int64_t B = kp.shape(0), J = kp.shape(1);
  require_shape(out, {B, J, 3}, "out (B, J, 3)");
  require_shape(size, {-1, 2}, "size (S, 2)");
  require_shape(slots, {B}, "slots (B,)");
  const int64_t S = size.shape(0);
  const int64_t* sl = slots.data();
  for (int64_t b = 0; b < B; ++b)
    if (sl[b] < 0 || sl[b] >= S) throw py::index_error("slot " + std::to_string(sl[b]) + " out of range");
  py::array_t<double, py::array::c_style> conf;
  const double* c = nullptr;
  if (!conf_arr.is_none()) {
    conf = conf_arr.cast<py::array_t<double, py::array::c_style>>();
    require_shape(conf, {B, J}, "conf (B, J)");
    c = conf.data();
  }
  const double* k = kp.data();
  float* o = out.mutable_data();
  if (c)
    for (int64_t i = 0; i < B * J; ++i)
      if (!(std::isfinite(c[i]) && c[i] >= 0.0 && c[i] <= 1.0)) return py::make_tuple(i / J, 1);
  for (int64_t b = 0; b < B; ++b) {
    const float wf = size.data()[sl[b] * 2], hf = size.data()[sl[b] * 2 + 1];
    const double w = wf, hw = (double)(hf / wf);  // NumPy divides the float32 sizes in float32
    for (int64_t j = 0; j < J; ++j) {
      const double cj = c ? c[b * J + j] : 1.0, x = k[(b * J + j) * 2], y = k[(b * J + j) * 2 + 1];
      float* f = o + (b * J + j) * 3;
      if (cj > 0.0) {
        if (!std::isfinite(x) || !std::isfinite(y)) return py::make_tuple(b, 2);
        f[0] = (float)(x / w * 2.0 - 1.0);
        f[1] = (float)(y / w * 2.0 - hw);
      } else {
        f[0] = f[1] = 0.0f;
      }
      f[2] = (float)cj;
    }
  }
  return py::make_tuple(-1, 0);
}

template <typename T>
T* ptr(uintptr_t p, const char* name) {
  if (p == 0) throw py::value_error(std::string(name) + ": null device pointer");
  return reinterpret_cast<T*>(p);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "posert native kernels: ring-buffer push/gather, key/value ring-cache push and the fused DDIM update "
            "(CPU + CUDA)";

  m.def("built_with_cuda", []() {
#ifdef POSERT_WITH_CUDA
    return true;
#else
    return false;
#endif
  });

  py::class_<RingBuffer>(m, "RingBuffer", "Host ring buffers: S streams × N frames × (J, C) float32.")
      .def(py::init<int64_t, int64_t, int64_t, int64_t>(), py::arg("streams"), py::arg("window"), py::arg("joints"),
           py::arg("channels"))
      .def("push", &RingBuffer::push, py::arg("slots"), py::arg("frames"),
           "Append frames (B, J, C) float32 to streams slots (B,) int32.")
      .def("gather", &RingBuffer::gather, py::arg("slots"), py::arg("out"),
           "Write the last N frames of streams slots (B,) into out (B, N, J, C), edge-padded.")
      .def("reset", &RingBuffer::reset, py::arg("slot"))
      .def("count", &RingBuffer::count, py::arg("slot"))
      .def_property_readonly("streams", &RingBuffer::streams)
      .def_property_readonly("window", &RingBuffer::window);

  m.def("ring_push", [](const py::array& storage_arr, const py::array& head_arr, const py::array& count_arr,
                        const I32& slots, const F32& frames) {
        F32 storage = as_out(storage_arr, "storage");
        I32 head = as_out_i32(head_arr, "head"), count = as_out_i32(count_arr, "count");
        require_shape(storage, {-1, -1, -1}, "storage (S, N, F)");
        const int64_t S = storage.shape(0), N = storage.shape(1), F = storage.shape(2), B = slots.shape(0);
        require_shape(head, {S}, "head");
        require_shape(count, {S}, "count");
        require_shape(frames, {B, F}, "frames (B, F)");
        check_slots(slots, S);
        ring_push_cpu(storage.mutable_data(), head.mutable_data(), count.mutable_data(), S, N, F, slots.data(),
                      frames.data(), B);
      }, "Functional CPU push on caller-owned arrays (the layout of the CUDA twin).");
  m.def("ring_gather", [](const F32& storage, const I32& head, const I32& count, const I32& slots,
                          const py::array& out_arr) {
        F32 out = as_out(out_arr, "out");
        require_shape(storage, {-1, -1, -1}, "storage (S, N, F)");
        const int64_t S = storage.shape(0), N = storage.shape(1), F = storage.shape(2), B = slots.shape(0);
        require_shape(out, {B, N, F}, "out (B, N, F)");
        require_shape(head, {S}, "head");
        require_shape(count, {S}, "count");
        check_slots(slots, S);
        ring_gather_cpu(storage.data(), head.data(), count.data(), S, N, F, slots.data(), B, out.mutable_data());
      }, "Functional CPU gather on caller-owned arrays.");

  m.def("kv_push", &kv_push, py::arg("storage"), py::arg("fresh"), py::arg("rows"), py::arg("pos"),
        py::arg("first") = 0,
        "Write one new frame's keys/values fresh (G, B, R, D) into the ring caches storage (G, S, R, M, D): "
        "storage[:, rows[k], :, pos[k]] = fresh[:, rows[k] - first] for every k with rows[k] >= 0 (a negative row "
        "writes nothing; see csrc/kv_cache.h).");
  m.def("cached_attention", &cached_attention, py::arg("qkv"), py::arg("cache_k"), py::arg("cache_v"), py::arg("lag"),
        py::arg("table"), py::arg("scale"), py::arg("out"), py::arg("k_new"), py::arg("v_new"),
        "Attention core of one new frame over its cached past (csrc/attention.h): qkv (B, J, 3·H·D), caches "
        "(B, J, H, M, D), lag (B, M) int64 in [1, M + 1], table (H, M + 2) → out (B, J, H·D), k_new, v_new "
        "(B, J, H, D), all float32 but lag; raises ValueError/IndexError on shapes or lags.");
  m.def("attention_isa", &posert::attention_isa,
        "Which body spatial_attention and cached_attention run on this CPU: 'avx2+fma', 'neon' or 'baseline'.");
  m.def("set_attention_isa", &posert::set_attention_isa, py::arg("baseline"),
        "baseline=True: run the attention cores' baseline body even where AVX2 is present (for tests); "
        "False: choose by CPU (the default).");
  m.def("spatial_attention", &spatial_attention, py::arg("qkv"), py::arg("heads"), py::arg("scale"), py::arg("out"),
        "Spatial attention core of one frame (csrc/attention.h): qkv (B, J, 3·H·D) → out (B, J, H·D), float32; "
        "raises ValueError on shapes.");
  m.def("transformer_step_cluster_pack", &transformer_step_cluster_pack, py::arg("weights"), py::arg("dims"),
        py::arg("cluster"),
        "The thread-block cluster form's weights (csrc/transformer_step.h, cluster_layout): for each of `cluster` "
        "ranks, every layer's column slice of the eight linears with the LayerNorm in front of qkv and fc1 "
        "folded in (W' = diag(gamma) W, b' = b + beta W), and the lag table; "
        "(cluster, floats per rank) float32. ValueError if cluster does not divide 3C, C and hidden.");
  m.def("transformer_step", &transformer_step, py::arg("weights"), py::arg("dims"), py::arg("inp"), py::arg("x"),
        py::arg("x_T"), py::arg("cond"), py::arg("count"), py::arg("rows"), py::arg("cache"), py::arg("ddim"),
        py::arg("row0") = 0, py::arg("fast") = false,
        "One fused lifter/denoiser step over B rows (csrc/transformer_step.h): inp (B, J, 3), x (B, J, 3) in/out, "
        "x_T (B, J, 3) or None, cond (C,) and ddim (4,) for the denoiser else None, count (B,) int64, rows (B,) "
        "int32 (< 0: no cache write), cache (2·depth, S, J, heads, M, d) in/out, batch row b at cache stream "
        "row0 + b; all float32 but count/rows, and the cache may be float16 with fast=True (keys/values rounded "
        "to half on write, widened on read). fast=False: the plain-loop twin (bit-exact reference); True: the "
        "fast body (csrc/step_fast.cpp: tiled, register-blocked, AVX2 + FMA + F16C where present), equal to float "
        "rounding. Releases the GIL. ValueError on shapes or rows outside the cache; TypeError for a cache that "
        "is neither float32 nor float16, or float16 with fast=False.");
  m.def("prepare_frames", &prepare_frames, py::arg("kp"), py::arg("conf"), py::arg("size"), py::arg("slots"),
        py::arg("out"),
        "Validate and normalise frames for Pipeline.push_many: kp (B, J, 2) float64 px, conf (B, J) float64 or None, "
        "size (S, 2) float32, slots (B,) int64 → out (B, J, 3) float32; returns (b, code): 0 ok, 1 bad confidence, "
        "2 NaN/inf on a visible joint (frame b).");
  m.def("reproject", &reproject, py::arg("pose"), py::arg("rows"), py::arg("slots"), py::arg("px"), py::arg("conf"),
        py::arg("K"), py::arg("dist"), py::arg("dbar"), py::arg("weight"), py::arg("iterations") = 8,
        py::arg("parents") = py::none(), py::arg("bone_length") = py::none(), py::arg("bone_count") = py::none(),
        py::arg("bone_delta") = py::none(), py::arg("gate") = 0.3, py::arg("horizon") = 1000.0,
        py::arg("mirror") = py::none(), py::arg("view_power") = 4.0, py::arg("view_cap") = 1.25,
        py::arg("bone_ema") = py::none(), py::arg("noise_hist") = py::none(), py::arg("noise_var") = py::none(),
        py::arg("noise_q") = 0.3, py::arg("noise_tau") = 0.05, py::arg("noise_fallback") = 0.1,
        py::arg("noise_min_joints") = 6, py::arg("noise_raw") = py::none(), py::arg("noise_raw_var") = py::none(),
        py::arg("distance") = py::none(), py::arg("distance_index") = 1e-3,
        "Camera-aware correction of Pipeline.add_stream, in place: pose (B, J, 3) float32 mm, rows/slots (R,) int64, "
        "px (S, J, 2), conf (S, J), K (S, 3, 3), dist (S, 5), dbar (S, J, 3), weight (R,), all float64; with "
        "parents (J,) int64, bone_length/bone_count (S, J − 1, 2) and bone_delta (S, J − 1) float64 also the depth "
        "from bone lengths (csrc/reprojection.h), each frame's length weighted by min(1, e / L0)^view_power (e: its "
        "extent across the line of sight; L0: the weighted running length, at most view_cap times the plain one) and "
        "pooled with the mirrored bone given mirror (J,) int64, a left/right joint permutation; bone_ema (R,) the "
        "EMA weight of the bone depth (default: weight). With noise_hist (S, 2, J, 2) and noise_var (S, 2) float64 "
        "(state; NaN when new) the EMA weight of the lateral correction is max(weight, K(noise_q / var)), var the "
        "2D noise variance (px²) estimated from each stream's innovations (csrc/reprojection.h, LateralNoise), or "
        "with noise_raw (S, 3, J, 2) and noise_raw_var (S, 2) the smaller of that and the keypoints' own estimate. With "
        "distance (S, 4) float64 (state: level mm, velocity mm per update, updates, EMA'd distance mm; zeros when "
        "new) each stream's distance R_z goes through an α-β tracker of tracking index distance_index and the pose "
        "moves along its lines of sight to it (DistanceFilter).");
  m.def("alpha_beta_gains", [](double lam) {
        double a, b;
        posert::alpha_beta_gains(lam, &a, &b);
        return py::make_tuple(a, b);
      }, py::arg("lam"), "Steady-state gains (α, β) of an α-β tracker of tracking index λ (Kalata 1984).");
  m.def("steady_state_gain", &posert::steady_state_gain, py::arg("lam"),
        "Steady-state Kalman gain of a random walk in white noise, λ = q / σ² (Muth 1960).");
  m.def("ddim_update", &ddim_update, py::arg("x_k"), py::arg("e"), py::arg("out"), py::arg("a"), py::arg("b"),
        py::arg("ap"), py::arg("bp"), "Fused DDIM update (D3PRefiner Eq. 9) on float32 arrays; out may alias x_k.");

  m.def("ring_push_cuda", [](uintptr_t storage, uintptr_t head, uintptr_t count, int64_t S, int64_t N, int64_t F,
                             uintptr_t slots, uintptr_t frames, int64_t B, uintptr_t stream) {
#ifdef POSERT_WITH_CUDA
        posert::ring_push_cuda(ptr<float>(storage, "storage"), ptr<int32_t>(head, "head"), ptr<int32_t>(count, "count"),
                               S, N, F, ptr<const int32_t>(slots, "slots"), ptr<const float>(frames, "frames"), B,
                               reinterpret_cast<void*>(stream));
#else
        throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
      }, py::arg("storage"), py::arg("head"), py::arg("count"), py::arg("S"), py::arg("N"), py::arg("F"),
      py::arg("slots"), py::arg("frames"), py::arg("B"), py::arg("stream") = 0);
  m.def("ring_gather_cuda", [](uintptr_t storage, uintptr_t head, uintptr_t count, int64_t S, int64_t N, int64_t F,
                               uintptr_t slots, int64_t B, uintptr_t out, uintptr_t stream) {
#ifdef POSERT_WITH_CUDA
        posert::ring_gather_cuda(ptr<const float>(storage, "storage"), ptr<const int32_t>(head, "head"),
                                 ptr<const int32_t>(count, "count"), S, N, F, ptr<const int32_t>(slots, "slots"), B,
                                 ptr<float>(out, "out"), reinterpret_cast<void*>(stream));
#else
        throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
      }, py::arg("storage"), py::arg("head"), py::arg("count"), py::arg("S"), py::arg("N"), py::arg("F"),
      py::arg("slots"), py::arg("B"), py::arg("out"), py::arg("stream") = 0);
  m.def("kv_push_cuda", [](uintptr_t storage, int64_t G, int64_t S, int64_t R, int64_t M, int64_t D, uintptr_t fresh,
                           int64_t B, uintptr_t rows, uintptr_t pos, int64_t K, uintptr_t stream, int64_t first) {
#ifdef POSERT_WITH_CUDA
        posert::kv_push_cuda(ptr<float>(storage, "storage"), G, S, R, M, D, ptr<const float>(fresh, "fresh"), B,
                             ptr<const int32_t>(rows, "rows"), ptr<const int32_t>(pos, "pos"), K,
                             reinterpret_cast<void*>(stream), first);
#else
        throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
      }, py::arg("storage"), py::arg("G"), py::arg("S"), py::arg("R"), py::arg("M"), py::arg("D"), py::arg("fresh"),
      py::arg("B"), py::arg("rows"), py::arg("pos"), py::arg("K"), py::arg("stream") = 0, py::arg("first") = 0);
  m.def("transformer_step_cuda", [](const py::tuple& dims, uintptr_t weights, int64_t B, uintptr_t inp, uintptr_t x,
                                    uintptr_t x_T, uintptr_t cond, uintptr_t count, uintptr_t rows, uintptr_t cache,
                                    int64_t S, float a, float b, float ap, float bp, uintptr_t stream,
                                    int threads, int cluster, uintptr_t packed, bool pdl) {
        const posert::StepDims d = step_dims(dims);
        if (S < B) throw py::value_error("cache holds fewer streams than the batch");
#ifdef POSERT_WITH_CUDA
        posert::transformer_step_cuda(d, ptr<const float>(weights, "weights"), B, ptr<const float>(inp, "inp"),
                                      ptr<float>(x, "x"), reinterpret_cast<float*>(x_T),
                                      d.denoiser ? ptr<const float>(cond, "cond") : nullptr,
                                      ptr<const int64_t>(count, "count"), ptr<const int32_t>(rows, "rows"),
                                      ptr<float>(cache, "cache"), S, a, b, ap, bp, reinterpret_cast<void*>(stream),
                                      threads, cluster, reinterpret_cast<const float*>(packed), pdl);
#else
        (void)d;
        (void)threads;
        (void)cluster;
        (void)packed;
        (void)pdl;
        throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
      }, py::arg("dims"), py::arg("weights"), py::arg("B"), py::arg("inp"), py::arg("x"), py::arg("x_T"),
      py::arg("cond"), py::arg("count"), py::arg("rows"), py::arg("cache"), py::arg("S"), py::arg("a") = 0.0f,
      py::arg("b") = 0.0f, py::arg("ap") = 0.0f, py::arg("bp") = 0.0f, py::arg("stream") = 0, py::arg("threads") = 512,
      py::arg("cluster") = 1, py::arg("packed") = 0, py::arg("pdl") = false,
      "CUDA twin of transformer_step on device pointers (x_T may be 0; cond 0 for the lifter): `cluster` "
      "thread blocks (1, 2, 4, 8, 16; > 1 needs sm_90 and `packed`, the device copy of "
      "transformer_step_cluster_pack(weights, dims, cluster)) of `threads` (256, 512, 1024) per row; `pdl`: a "
      "programmatic dependent launch after the stream's previous kernel (sm_90+).");
  m.def("ddim_update_cuda", [](uintptr_t x_k, uintptr_t e, uintptr_t out, int64_t n, float a, float b, float ap,
                               float bp, uintptr_t stream) {
#ifdef POSERT_WITH_CUDA
        posert::ddim_update_cuda(ptr<const float>(x_k, "x_k"), ptr<const float>(e, "e"), ptr<float>(out, "out"), n, a,
                                 b, ap, bp, reinterpret_cast<void*>(stream));
#else
        throw std::runtime_error("posert._C was built without CUDA (nvcc not found at build time)");
#endif
      }, py::arg("x_k"), py::arg("e"), py::arg("out"), py::arg("n"), py::arg("a"), py::arg("b"), py::arg("ap"),
      py::arg("bp"), py::arg("stream") = 0);
}
