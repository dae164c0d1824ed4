// Camera-aware correction of refined poses toward their 2D keypoints (posert.runtime.reprojection),
// fused with the per-stream EMA of Pipeline.add_stream. CPU only: it runs on the host after the
// tick's output is there (17 joints per stream; the NumPy form costs ~0.3 ms of Python overhead).
#pragma once
#include <cstdint>

namespace posert {

// For each r < R: stream slot s = slots[r], pose P = pose[rows[r]] (J, 3) float32, root-relative,
// camera frame, mm, updated in place.
//   1. rays u_j of the visible joints (conf[s, j] > 0): px[s, j] (float64 pixels) through the
//      inverse of K[s] (3×3) and the fixed-point undistortion of dist[s] (k1 k2 p1 p2 k3), `iterations`.
//   2. The position R minimising Σ_j conf_j |(P_j + R)_xy − u_j (P_jz + R_z)|² (closed form of
//      the 3×3 normal equations); Δ_j = (u_jx z_j − R_x − P_jx, u_jy z_j − R_y − P_jy, 0),
//      z_j = P_jz + R_z, for visible joints; Δ = 0 for all joints when < 2 joints are visible, the
//      system is degenerate (D ≤ 1e-12 Σw²), R_z ≤ 0 or a visible z_j ≤ 0.01 R_z.
//   3. dbar[s, j] += β_r · conf[s, j] · (Δ_j − dbar[s, j])   (float64, per slot) where the row's Δ is
//      valid (a frame without a valid correction keeps dbar: no measurement is not a zero
//      correction; with β ≈ 1 it would drop the whole correction for a frame), β_r = weight[r], or
//      with `noise` (LateralNoise) β_r = max(weight[r], β̂_s): the steady-state Kalman gain of the 2D
//      keypoints' noise variance estimated from the stream's innovations (see LateralNoise).
//   4. P_j ← P_j + dbar[s, j] − (P_root + dbar[s, root]), root = joint 0.
//   5. With `bones` (BoneDepth), the depth of every bone from the stream's running bone lengths
//      (posert.runtime.reprojection.bone_depth_correction is its NumPy definition): R' = step 2's
//      position of the corrected P; if valid, A_j = P_j + R', every joint's line of sight
//      r_j = A_j / A_jz (A_jz > 0.01 R'_z, "in front"), and for every bone (p, j) with both ends
//      visible and j in front, v = A_j − A_p, e = √(|v|² − (v·r_j)²/|r_j|²) its extent across the
//      line of sight (what the 2D observes). Two running means of |v| per bone: the plain one,
//      count[s, j−1, 1] += 1, length[s, j−1, 1] += (|v| − length) / min(count, horizon), and the
//      view-weighted one, in which the frame weighs w = min(1, e / L₀)^view_power with
//      L₀ = min(length[s, j−1, 0], view_cap · length[s, j−1, 1]) before this frame (1 while a count
//      is 0): count[s, j−1, 0] += w, length[s, j−1, 0] += w (|v| − length) / min(count,
//      horizon). It follows the frames where the bone is seen at its full length rather than
//      foreshortened. The length used is column 0 pooled with the mirrored bone (left/right,
//      `mirror`): L = Σ count·length / Σ count over the
//      two. Then every joint moves by t_j mm of depth along r_j, parents first (t_root = 0):
//      v = (A_j + t_p r_j) − (A_p + t_p r_p),
//      δ = −v·r_j/|r_j|² + sgn(v·r_j) √(max(L² − |v|² + (v·r_j)²/|r_j|², 0) / |r_j|²) (the point at
//      distance L from the parent, on v's side), gated by g = min(1, |v·r_j| / (|r_j| · gate · L)):
//      delta[s, j−1] += ε_r · min(conf_p, conf_j) · (g δ − delta) for visible ends (ε_r = ema[r], or
//      weight[r] when `ema` is null), and
//      t_j = t_p + delta[s, j−1]; P_j ← P_j + t_j r_j. A joint not in front stays (t_j = 0).
//   6. With `distance` (DistanceFilter): R'' = step 2's position of the pose so far; if valid and
//      the stream's tracker has a state, the target depth is x' = R''_z + (x − m) (DistanceFilter),
//      and if x' > 0, every joint is in front (P_jz + R''_z > 0.01 R''_z) and P_jz + x' > 0.01 x',
//      every joint moves along its own line of sight to depth P_jz + x': A_j ← (P_j + R'')
//      (P_jz + x') / (P_jz + R''_z), P_j ← A_j − A_root. The projection does not change; the pose
//      moves in depth as a whole (its lateral extent scales with the distance).
struct BoneDepth {
  const int64_t* parents;  // (J,), parents[j] < j for j ≥ 1
  const int64_t* mirror;   // (J,) left/right joint permutation, mirror[parents[j]] = parents[mirror[j]]; or null
  double* length;          // (S, J − 1, 2) mm, running means per bone: view-weighted, plain
  double* count;           // (S, J − 1, 2) their summed frame weights (w, 1)
  double* delta;           // (S, J − 1) mm, smoothed depth move of the child relative to its parent
  double gate;             // g's fraction of L
  double horizon;          // the running mean's memory, frames
  double view_power;       // w = min(1, e / L₀)^view_power; 0: every frame alike
  double view_cap;         // L₀ = min(view-weighted, view_cap · plain); inf: uncapped (session 22)
  const double* ema;       // (R,) the EMA weight of `delta` per row; null: weight[r]
};
// The adaptive β of step 3 (posert.runtime.reprojection.noise_gain is its NumPy definition). Per
// row, u_j = Δ_j,xy · fx / z_j (pixels) for the joints Δ was measured on this frame (visible, row
// valid), NaN otherwise. Over the joints measured in this frame and the two before, the second
// difference a_j = u_j − 2 u'_j + u''_j: white 2D noise of variance σ² per axis gives |a|² ~ 6σ² χ²₂,
// so s² = median_j |a_j|² / (6 · 2 ln 2) estimates σ² (the refined pose, which follows the motion,
// has cancelled it). With ≥ min_joints such joints, n[s] += 1 and var[s] ← s² (first time) or
// var[s] + max(tau, 1 / n[s]) (s² − var[s]) (a running mean over the first 1 / tau updates). β̂_s = K(q / var[s]), K(λ) = (λ + √(λ² + 4λ)) / (2 + λ + √(λ² + 4λ)), the steady-state
// gain of a random walk of variance q per frame seen in white noise of variance var (Muth, JASA 1960:
// the EMA is that filter's steady state; the noise from the innovations: Mehra, IEEE TAC 1970);
// `fallback` while var[s] is NaN. Precise 2D (σ ≲ 0.5 px) gives β̂ → 1, detector noise (σ 2–8 px) ≈ 0.1.
// With `raw` and `raw_var`, a second estimate from the keypoints themselves: over the joints visible
// in this frame and the three before, the third difference b_j = p_j(t) − 3 p_j(t−1) + 3 p_j(t−2) −
// p_j(t−3) of the pixels (white noise: |b|² ~ 20σ² χ²₂; smooth motion at 50 fps has a far smaller
// jerk than acceleration), s² = median_j |b_j|² / (20 · 2 ln 2), kept as var is. β̂_s then uses the
// smaller of the two (NaN ignored): each bounds the noise from above, the innovations' raised where
// the refiner lags fast motion (~10 px in a backflip), the pixels' where the motion's jerk is large.
struct LateralNoise {
  double* hist;    // (S, 2, J, 2) px, u of the frame before last and of the last frame (NaN: not measured)
  double* var;     // (S, 2): the running estimate of σ² (px²; NaN: none yet), n (frames that updated it)
  double* raw;     // (S, 3, J, 2) px, the keypoints of the last three frames (NaN: hidden); or null
  double* raw_var; // (S, 2): the keypoints' own running σ² (px²; NaN: none yet), n; null with raw
  double q;        // px² per frame
  double tau;      // the EMA weight of var
  double fallback; // β̂ while var is NaN
  int64_t min_joints;
};
// The distance tracker of step 6 (posert.runtime.reprojection.distance_track and
// distance_correction are its NumPy definition). Step 2's least-squares R_z moves with the refined
// pose's depth and size errors from frame to frame, and the corrected pose's lateral extent scales
// with it; a person's distance moves slowly. Per stream, updated in step 3 for rows where step 2's
// R is valid: an α-β tracker, level x and velocity v (mm, mm per update) of R_z. The first update
// sets x = R_z, v = 0; every later one predicts x⁻ = x + v and with e = R_z − x⁻ sets
// x = x⁻ + alpha e, v += beta e, the steady-state gains from the first frame on (an expanding-memory
// start, the least-squares line through the first frames, extrapolates the refiner's unsettled first
// frames: worse on real motion, session 25). And m, the distance that step 3's EMA leaves the pose
// at: m = R_z the first time, then m += β_r (R_z − m).
struct DistanceFilter {
  double* state;  // (S, 4): x (mm), v (mm per update), n (0: new), m (mm)
  double alpha;   // steady-state α (alpha_beta_gains)
  double beta;    // steady-state β
};
// The steady-state gains (α, β) of an α-β tracker with tracking index λ = σ_w T² / σ_v > 0 (Kalata,
// "The tracking index", IEEE TAES 20(2), 1984): r = (4 + λ − √(8λ + λ²)) / 4, α = 1 − r²,
// β = 2(2 − α) − 4√(1 − α).
void alpha_beta_gains(double lambda, double* alpha, double* beta);
void reproject_cpu(float* pose, int64_t J, const int64_t* rows, const int64_t* slots, int64_t R,
                   const double* px, const double* conf, const double* K, const double* dist, double* dbar,
                   const double* weight, int iterations, const BoneDepth* bones = nullptr,
                   const LateralNoise* noise = nullptr, const DistanceFilter* distance = nullptr);
// K(λ) of LateralNoise: the steady-state Kalman gain of a random walk in white noise, λ = q / σ² ≥ 0.
double steady_state_gain(double lambda);

}  // namespace posert
