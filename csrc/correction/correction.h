// The correction stage after the refiner (posert/runtime/correction; docs/design.md, "The
// correction"): each refined pose is moved toward the 2D keypoints it was lifted from, using the
// stream's camera. CPU only: it runs on the host after a tick's poses are there (17 joints per
// stream). posert/runtime/correction/reference.py holds the NumPy definition of every step below,
// and the tests hold this kernel to it.
//
// For each row r < R: stream slot s = slots[r], pose P = pose[rows[r]] (J, 3) float32, camera frame,
// root-relative (joint 0), mm, corrected in place; n = count[r] frames the stream had before this one.
//   1. Rays (ux, uy)_j of the visible joints (conf[s, j] > 0): px[s, j] through K[s]⁻¹ and the
//      fixed-point undistortion of dist[s] (k1 k2 p1 p2 k3), `iterations` times (OpenCV's method).
//   2. The lateral step. R = the position minimising Σ_j conf_j |(P_j + R)_xy − u_j (P_jz + R_z)|²
//      (closed form of the 3×3 normal equations); valid if ≥ 2 joints are visible, the system is not
//      degenerate (D > 1e-12 Σw²), R_z > 0 and every visible z_j = P_jz + R_z > 0.01 R_z. Then
//      Δ_j = (u_jx z_j − R_x − P_jx, u_jy z_j − R_y − P_jy, 0) for the visible joints, and
//      lateral[s, j] += β · conf_j · (Δ_j − lateral[s, j]) where the row is valid (a frame without a
//      valid correction keeps lateral: no measurement is not a zero correction), with
//      β = max(lateral_beta, 1 / (n + 1)), or with `adaptive` max(that, K(q / σ̂²)) (NoiseState).
//      P_j ← P_j + lateral[s, j] − (P_root + lateral[s, root]).
//   3. The bone depth (`bone_depth`): R' = step 2's position of the corrected P; if valid,
//      A_j = P_j + R' and every joint's line of sight r_j = A_j / A_jz (A_jz > 0.01 R'_z: "in front").
//      For every bone (p, j) with both ends visible and j in front, v = A_j − A_p and
//      e = √(|v|² − (v·r_j)²/|r_j|²), its extent across the line of sight (what the 2D observes). Two
//      running means of |v|: the plain one, bone_count[s, j−1, 1] += 1, bone_length[s, j−1, 1] +=
//      (|v| − length) / min(count, horizon), and the view-weighted one, in which the frame weighs
//      w = min(1, e / L₀)^view_power, L₀ = min(length[.., 0], view_cap · length[.., 1]) before this
//      frame (1 while a count is 0). The length used, L, pools column 0 with the mirrored bone's
//      (`mirror`, left ↔ right): Σ count·length / Σ count. Every joint then moves along its own line
//      of sight by t_j mm of depth, parents first (t_root = 0): v = (A_j + t_p r_j) − (A_p + t_p r_p),
//      δ = −v·r_j/|r_j|² + sgn(v·r_j) √(max(L² − |v|² + (v·r_j)²/|r_j|², 0) / |r_j|²) (the point at
//      distance L from the parent on v's side; Taylor, CVIU 2000), gated by
//      g = min(1, |v·r_j| / (|r_j| · gate · L)); bone_delta[s, j−1] += ε · min(conf_p, conf_j) ·
//      (g δ − bone_delta) for visible ends, ε = max(bone_ema, 1 / (n + 1)); t_j = t_p + bone_delta;
//      P_j ← P_j + t_j r_j. A joint not in front stays (t_j = 0). The projection does not change.
//   4. The distance step (`distance`): the stream's α-β tracker (DistanceState) follows step 2's R_z;
//      R'' = step 2's position of the pose so far; if valid and the tracker has a state, the target
//      depth is x' = R''_z + (x − m), and if x' > 0, every joint is in front and P_jz + x' > 0.01 x',
//      every joint moves along its own line of sight to depth P_jz + x':
//      A_j ← (P_j + R'') (P_jz + x') / (P_jz + R''_z), P_j ← A_j − A_root. The projection does not
//      change; the pose moves in depth as a whole.
//   5. Divergence: a row whose corrected pose or whose slot's state after this frame is not finite,
//      or whose state leaves human and camera bounds (an offset of Δ̄ or of a bone's depth, or a
//      bone length, beyond kMaxOffsetMm; a tracked distance outside (0, kMaxDistanceMm]), has its
//      slot's state cleared (as for a new stream; its camera is kept), keeps the refiner's pose,
//      and is flagged in `reset`.
#pragma once
#include <cstdint>

namespace posert {

// The stage's tuning (posert.config.CorrectionConfig documents each; this struct carries no defaults).
struct CorrectionParams {
  int64_t iterations;        // undistortion iterations (0: a pinhole camera is exact anyway)
  double lateral_beta;       // the fixed β floor of step 2 (0 with `adaptive`)
  bool adaptive;             // β from the estimated 2D noise (NoiseState)
  bool pixel_noise;          // with `adaptive`: a second σ̂² from the keypoints' own third differences
  double noise_q;            // px² per frame
  double noise_tau;          // EMA weight of σ̂²
  double noise_fallback;     // β while σ̂² is NaN
  int64_t noise_min_joints;  // the fewest joints for a σ̂² update
  bool bone_depth;           // step 3
  double bone_ema, bone_gate, bone_horizon, bone_view_power, bone_view_cap;
  bool bone_symmetry;        // pool left/right bones (needs `mirror`)
  bool distance;             // step 4
  double distance_alpha, distance_beta;  // the tracker's steady-state gains (alpha_beta_gains)
};

// Every per-stream array of the stage, S slots × J joints, float64 C-contiguous (owned by the caller:
// posert.runtime.correction.CorrectionState). Inputs: K, dist (the camera), px, conf (the newest 2D).
// State, carried from frame to frame (zero or NaN for a new stream, see the Python class):
//   lateral (S, J, 3) Δ̄ mm; bone_length, bone_count (S, J − 1, 2) [view-weighted, plain];
//   bone_delta (S, J − 1) mm; noise_hist (S, 2, J, 2) px and noise_var (S, 2) [σ̂², updates] of the
//   innovations (NoiseState); pixel_hist (S, 3, J, 2) px and pixel_var (S, 2) of the keypoints;
//   distance (S, 4) [x mm, v mm per update, updates, m mm] (DistanceState).
struct CorrectionState {
  int64_t S, J;
  const int64_t* parents;  // (J,), parents[j] < j for j ≥ 1
  const int64_t* mirror;   // (J,) left/right involution mapping bones to bones, or null
  const double* K;
  const double* dist;
  const double* px;
  const double* conf;
  double* lateral;
  double* bone_length;
  double* bone_count;
  double* bone_delta;
  double* noise_hist;
  double* noise_var;
  double* pixel_hist;
  double* pixel_var;
  double* distance;
};

// NoiseState, the adaptive β of step 2. u_j = Δ_j,xy · fx / z_j (px) for the joints Δ was measured on
// (visible, row valid), NaN otherwise; over the joints measured in this frame and the two before,
// a_j = u_j − 2 u'_j + u''_j: white 2D noise of variance σ² per axis gives |a|² ~ 6σ² χ²₂, so
// s² = median_j |a_j|² / (6 · 2 ln 2). With ≥ noise_min_joints such joints, the update count
// += 1 and σ̂² ← s² (first time) or σ̂² + max(tau, 1 / updates) (s² − σ̂²). With `pixel_noise`, the same
// from the keypoints' third differences b_j = p_j − 3 p'_j + 3 p''_j − p'''_j (|b|² ~ 20σ² χ²₂); the
// smaller estimate counts (NaN ignored). β̂ = K(q / σ̂²), K(λ) = (λ + √(λ² + 4λ)) / (2 + λ + √(λ² + 4λ)),
// the steady-state gain of a random walk in white noise (Muth, JASA 1960; the noise from the
// innovations: Mehra, IEEE TAC 1970); `noise_fallback` while σ̂² is NaN.
//
// DistanceState, the tracker of step 4, updated where step 2's R is valid: level x and velocity v of
// R_z; the first update sets x = R_z, v = 0; every later one predicts x⁻ = x + v and with
// e = R_z − x⁻ sets x = x⁻ + α e, v += β e. m, the distance step 2's EMA leaves the pose at:
// m = R_z the first time, then m += β_r (R_z − m), β_r the row's lateral weight.
void correct_cpu(float* pose, const int64_t* rows, const int64_t* slots, const int64_t* count, int64_t R,
                 const CorrectionState& state, const CorrectionParams& params, uint8_t* reset);

// The bounds of step 5: no correction moves a joint, and no bone is, farther than a body's height;
// no camera tracks a person beyond 100 m.
constexpr double kMaxOffsetMm = 2000.0;
constexpr double kMaxDistanceMm = 1e5;

// Clear slot s of the state (as for a new stream: NaN noise estimates, zeros elsewhere); K, dist, px
// and conf are inputs and stay.
void reset_correction_slot(const CorrectionState& state, int64_t s);

// The steady-state gains (α, β) of an α-β tracker with tracking index λ = σ_w T² / σ_v > 0 (Kalata,
// "The tracking index", IEEE TAES 20(2), 1984): r = (4 + λ − √(8λ + λ²)) / 4, α = 1 − r²,
// β = 2(2 − α) − 4√(1 − α); (0, 0) for λ ≤ 0 or NaN.
void alpha_beta_gains(double lambda, double* alpha, double* beta);
// K(λ) of NoiseState: the steady-state Kalman gain of a random walk in white noise, λ = q / σ² ≥ 0.
double steady_state_gain(double lambda);

}  // namespace posert
