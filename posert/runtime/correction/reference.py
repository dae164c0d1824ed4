"""The NumPy definition of the correction stage (csrc/correction/correction.h, which runs it): the
test oracle of ``posert._C.CorrectionKernel``, step by step and as a whole (:func:`correct`).

A root-relative pose X (camera frame) and the camera rays r_j = (x/z, y/z) of its 2D keypoints
fix the pose's position R in the camera frame, up to the depth error of X, by the weighted linear
least squares of the pinhole constraints

    (X_jx + R_x) − r_jx (X_jz + R_z) = 0,   (X_jy + R_y) − r_jy (X_jz + R_z) = 0

(the linear camera-resection form used, e.g., by VideoPose3D's trajectory reprojection and in
PnP's DLT). The lateral step (:func:`lateral_correction`) moves each joint onto its own ray at its
own depth z_j = X_jz + R_z: Δ_j = (r_jx z_j − R_x − X_jx, r_jy z_j − R_y − X_jy, 0). Depths are
kept: it removes the part of the error that the 2D observes (across the viewing direction) and
cannot touch the part it does not (depth, and the overall scale, which trades off with R_z). How
much of each frame's Δ a stream takes (the weight β of its causal EMA) depends on how precise the
2D is: :func:`noise_gain` and :func:`pixel_noise` estimate the keypoints' noise and set β to the
steady-state Kalman gain for it, near 1 for precise 2D and near 0.1 for a detector's jitter.

The bone depth (:func:`bone_depth_correction`) then sets the depth the 2D leaves open from the one
thing a stream knows about its person that no single frame shows: the lengths of the bones, which
do not change. Each bone's running length along the stream fixes how far along its line of sight
the child joint sits from its parent: the point on that line at distance L from the parent, on the
side the pose already has (Taylor, "Reconstruction of articulated objects from point
correspondences in a single uncalibrated image", CVIU 2000, which resolves the front/back ambiguity
from a prior; here the prior is the refined pose). Moving along the line of sight keeps the pose's
projection.

Each frame's least-squares position R also sets the scale of every lateral coordinate (the pose
sits at distance R_z), and R_z jitters with the refined pose's depth and size errors: the distance
step follows it with an α-β tracker (:func:`distance_track`) and moves the corrected pose in depth,
along its lines of sight, to the tracked distance (:func:`distance_correction`).

Every default below is :class:`~posert.config.CorrectionConfig`'s.
"""

from __future__ import annotations

import numpy as np

from posert.config import CorrectionConfig
from posert.skeleton import FLIP_PERM, NUM_JOINTS, PARENTS

_DEFAULT = CorrectionConfig()


def lateral_correction(pose: np.ndarray, rays: np.ndarray, weight: np.ndarray, return_position: bool = False):
    """Per-joint displacement that puts every weighted joint of ``pose`` on its camera ray.

    Args:
        pose: (B, 17, 3) root-relative poses in the camera frame (OpenCV axes; any length unit,
            e.g. mm — the result has the same unit).
        rays: (B, 17, 2) undistorted normalised image coordinates (x/z, y/z) of the 2D keypoints
            (:func:`~posert.camera.pixels_to_rays`). Entries of joints with weight 0 are ignored
            and may be NaN.
        weight: (B, 17) weights ≥ 0, e.g. the keypoint confidences; 0 marks a missing joint.
        return_position: also return R, (B, 3) float64, the least-squares position of the root
            in the camera frame (same unit; 0 for rows that get no correction).
    Returns:
        Δ: (B, 17, 3) float64, 0 in z; 0 for joints of weight 0, and 0 for a whole row whose
        least-squares system is degenerate (fewer than two weighted joints or rays that coincide)
        or that puts a weighted joint at a depth ≤ 1 % of the pose's distance (behind the camera:
        the 2D and the pose disagree, so nothing is corrected).
    Raises:
        ValueError: for shapes other than the above.
    """
    pose = np.asarray(pose, dtype=np.float64)
    B = pose.shape[0] if pose.ndim == 3 else -1
    if pose.shape != (B, NUM_JOINTS, 3) or np.shape(rays) != (B, NUM_JOINTS, 2) or np.shape(weight) != (B, NUM_JOINTS):
        raise ValueError(f"expected pose (B, 17, 3), rays (B, 17, 2), weight (B, 17); got {pose.shape}, "
                         f"{np.shape(rays)}, {np.shape(weight)}")
    w = np.asarray(weight, dtype=np.float64)
    vis = w > 0
    w = np.where(vis, w, 0.0)
    r = np.where(vis[..., None], np.asarray(rays, dtype=np.float64), 0.0)
    ux, uy = r[..., 0], r[..., 1]
    x, y, z = pose[..., 0], pose[..., 1], pose[..., 2]
    b1, b2 = ux * z - x, uy * z - y  # R_x − ux R_z = b1,  R_y − uy R_z = b2
    sw, swx, swy = w.sum(-1), (w * ux).sum(-1), (w * uy).sum(-1)
    N = np.zeros((len(pose), 3, 3))
    N[:, 0, 0] = N[:, 1, 1] = sw
    N[:, 0, 2] = N[:, 2, 0] = -swx
    N[:, 1, 2] = N[:, 2, 1] = -swy
    N[:, 2, 2] = (w * (ux * ux + uy * uy)).sum(-1)
    rhs = np.stack([(w * b1).sum(-1), (w * b2).sum(-1), -(w * (ux * b1 + uy * b2)).sum(-1)], -1)
    # det N = sw · Σ_j Σ_k w_j w_k |r_j − r_k|² / 2: zero for < 2 joints or coinciding rays
    det = np.linalg.det(N)
    ok = (vis.sum(-1) >= 2) & (det > 1e-12 * np.maximum(sw, 1e-300) ** 3)
    N[~ok] = np.eye(3)
    R = np.linalg.solve(N, np.where(ok[:, None], rhs, 0.0)[..., None])[..., 0]  # (B, 3)
    depth = z + R[:, 2:3]
    ok &= np.where(vis, depth, np.inf).min(-1) > 0.01 * np.abs(R[:, 2])
    ok &= R[:, 2] > 0
    delta = np.zeros_like(pose)
    delta[..., 0] = ux * depth - R[:, 0:1] - x
    delta[..., 1] = uy * depth - R[:, 1:2] - y
    delta[~(vis & ok[:, None])] = 0.0
    if return_position:
        return delta, np.where(ok[:, None], R, 0.0)
    return delta


def _update_noise(var: np.ndarray, s2: float, tau: float) -> None:
    """One update of a running σ² (``var`` = [σ², n], in place): σ² ← s² the first time (NaN
    before), then σ² + max(tau, 1 / n) (s² − σ²), a running mean over the first 1 / tau updates."""
    new = np.isnan(var[0])
    var[1] = 1.0 if new else var[1] + 1.0
    var[0] = s2 if new else var[0] + max(tau, 1.0 / var[1]) * (s2 - var[0])


def steady_state_gain(lam):
    """K(λ) = (λ + √(λ² + 4λ)) / (2 + λ + √(λ² + 4λ)): the steady-state Kalman gain of a random
    walk with variance q per step observed in white noise of variance σ², λ = q / σ² ≥ 0 (the
    local-level model, whose steady-state filter is the EMA with weight K: Muth, "Optimal
    properties of exponentially weighted forecasts", JASA 1960). 0 at λ = 0, → 1 as λ → ∞
    (1 for λ > 1e12). Array or scalar in, float64 out."""
    lam = np.asarray(lam, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        root = np.sqrt(lam * lam + 4 * lam)
        k = (lam + root) / (2 + lam + root)
    return np.where(lam > 1e12, 1.0, np.where(lam > 0, k, 0.0))


def noise_gain(pose: np.ndarray, rays: np.ndarray, weight: np.ndarray, fx: np.ndarray, hist: np.ndarray,
               var: np.ndarray, q: float = _DEFAULT.noise_q, tau: float = _DEFAULT.noise_tau,
               min_joints: int = _DEFAULT.noise_min_joints, fallback: float = _DEFAULT.noise_fallback,
               other_var: np.ndarray | None = None):
    """The β of one frame's lateral EMA from the 2D keypoints' noise, estimated from the stream's
    innovations: one frame of B streams. The NumPy definition of the kernel's adaptive β
    (csrc/correction/correction.h, ``NoiseState``; ``CorrectionConfig.lateral_ema = "auto"``, the
    default).

    1. Δ = :func:`lateral_correction` of ``pose`` (mm) and R its root position; a joint is measured
       if its weight is > 0 and its row's Δ is valid. u_j = Δ_j,xy · fx / (X_jz + R_z): the
       innovation in pixels (NaN where not measured).
    2. With the two frames before (``hist``), a_j = u_j − 2 u'_j + u''_j for joints measured in all
       three. The refined pose follows the motion, so the innovation is the 2D's noise plus a slow
       error; white noise of variance σ² per axis gives |a|² ~ 6σ² χ²₂, whose median is 6σ² · 2 ln 2:
       s² = median_j |a_j|² / (12 ln 2) (the median ignores the odd outlier or swapped limb).
    3. With ≥ ``min_joints`` such joints, n += 1 and var ← s² (the first time) or
       var + max(tau, 1 / n) (s² − var), a running mean over the first 1 / tau updates (the
       refiner's first frames move more); the noise variance from the innovations, as in
       Mehra, "On the identification of variances and adaptive Kalman filtering", IEEE TAC 1970.
    4. β = :func:`steady_state_gain` (q / v), v = var or, given ``other_var``, the smaller of
       the two (NaN ignored); ``fallback`` while v is NaN.

    Args:
        pose: (B, 17, 3) root-relative refined poses, camera frame, mm.
        rays: (B, 17, 2) undistorted normalised coordinates of the keypoints (NaN allowed at
            weight 0).
        weight: (B, 17) confidences; 0 marks a missing joint.
        fx: (B,) focal lengths, px.
        hist: (B, 2, 17, 2) px, u of the frame before last and of the last frame (NaN: not
            measured; all NaN for a new stream); not modified.
        var: (B, 2): the running σ² (px²; NaN: none yet) and n, the frames that updated it; not
            modified.
        other_var: (B,) a second estimate of σ² (px²; NaN: none), :func:`pixel_noise`'s after
            this frame (the pipeline's default), or None.
    Returns:
        (beta (B,), hist (B, 2, 17, 2), var (B, 2)), float64: this frame's β and the new state.
    Raises:
        ValueError: for shapes other than the above.
    """
    pose = np.asarray(pose, dtype=np.float64)
    B = len(pose)
    if np.shape(hist) != (B, 2, NUM_JOINTS, 2) or np.shape(var) != (B, 2) or np.shape(fx) != (B,):
        raise ValueError(f"expected hist (B, 2, {NUM_JOINTS}, 2), var (B, 2) and fx (B,) for B = {B}")
    delta, R = lateral_correction(pose, rays, weight, return_position=True)
    on = (np.asarray(weight) > 0) & (R[:, 2:3] > 0)
    depth = pose[..., 2] + R[:, 2:3]
    scale = np.asarray(fx, np.float64)[:, None] / np.where(on, depth, 1.0)  # mm → px at each joint's depth
    u = np.where(on[..., None], delta[..., :2] * scale[..., None], np.nan)
    hist = np.asarray(hist, dtype=np.float64)
    var = np.array(var, dtype=np.float64)
    both = on & np.isfinite(hist[:, 0, :, 0]) & np.isfinite(hist[:, 1, :, 0])
    a2 = np.where(both, ((u - 2 * hist[:, 1] + hist[:, 0]) ** 2).sum(-1), np.nan)
    for b in np.flatnonzero(both.sum(-1) >= max(min_joints, 1)):
        _update_noise(var[b], np.median(a2[b][both[b]]) / (12 * np.log(2.0)), tau)
    v = var[:, 0]
    if other_var is not None:
        o = np.asarray(other_var, dtype=np.float64)
        v = np.where(np.isnan(v) | (o < v), o, v)
    gain = steady_state_gain(q / np.maximum(np.nan_to_num(v, nan=1.0), 1e-300))
    beta = np.where(np.isnan(v), fallback, gain)
    return beta, np.stack([hist[:, 1], u], axis=1), var


def pixel_noise(px: np.ndarray, weight: np.ndarray, raw: np.ndarray, raw_var: np.ndarray,
                tau: float = _DEFAULT.noise_tau, min_joints: int = _DEFAULT.noise_min_joints):
    """The 2D keypoints' noise estimated from their own third differences: one frame of B streams,
    the second estimate of the kernel's adaptive β (``pixel_hist``, csrc/correction/correction.h,
    ``NoiseState``), which :func:`noise_gain` takes as ``other_var`` (the smaller one sets β).

    Over the joints visible (weight > 0) in this frame and the three before, b_j = p_j(t) −
    3 p_j(t−1) + 3 p_j(t−2) − p_j(t−3): white noise of variance σ² per axis gives |b|² ~ 20σ² χ²₂,
    whose median is 20σ² · 2 ln 2, and the jerk of human motion at 50 fps is far smaller than its
    acceleration (a backflip's third differences, ground-truth 2D: ~0.6 px). With ≥ ``min_joints``
    such joints s² = median_j |b_j|² / (40 ln 2) updates the running σ² as :func:`noise_gain` does
    (var ← s², then var + max(tau, 1 / n) (s² − var)). The innovations' estimate is raised where
    the refiner lags fast motion (~10 px through a backflip with exact 2D); this one is not.

    Args:
        px: (B, 17, 2) this frame's keypoints, pixels (NaN allowed at weight 0).
        weight: (B, 17) confidences; 0 marks a missing joint.
        raw: (B, 3, 17, 2) px, the keypoints of the three frames before (oldest first; NaN: hidden or
            none); not modified.
        raw_var: (B, 2): the running σ² (px²; NaN: none yet) and n, its updates; not modified.
    Returns:
        (raw (B, 3, 17, 2), raw_var (B, 2)) float64, the new state.
    Raises:
        ValueError: for shapes other than the above.
    """
    px = np.asarray(px, dtype=np.float64)
    B = len(px)
    if px.shape != (B, NUM_JOINTS, 2) or np.shape(weight) != (B, NUM_JOINTS) \
            or np.shape(raw) != (B, 3, NUM_JOINTS, 2) or np.shape(raw_var) != (B, 2):
        raise ValueError(f"expected px (B, 17, 2), weight (B, 17), raw (B, 3, 17, 2), raw_var (B, 2); got "
                         f"{px.shape}, {np.shape(weight)}, {np.shape(raw)}, {np.shape(raw_var)}")
    raw = np.asarray(raw, dtype=np.float64)
    var = np.array(raw_var, dtype=np.float64)
    vis = np.asarray(weight) > 0
    p = np.where(vis[..., None], px, np.nan)
    b2 = ((p - 3 * raw[:, 2] + 3 * raw[:, 1] - raw[:, 0]) ** 2).sum(-1)  # NaN unless seen in all four
    for b in range(B):
        ok = np.isfinite(b2[b])
        if ok.sum() >= max(min_joints, 1):
            _update_noise(var[b], np.median(b2[b][ok]) / (40 * np.log(2.0)), tau)
    return np.concatenate([raw[:, 1:], p[:, None]], axis=1), var


def alpha_beta_gains(index: float) -> tuple[float, float]:
    """The steady-state gains (α, β) of an α-β tracker with tracking index λ = σ_w T² / σ_v > 0
    (σ_w: the sd of the white acceleration, σ_v: that of the measurement noise, T: the frame
    period): with r = (4 + λ − √(8λ + λ²)) / 4, α = 1 − r² and β = 2(2 − α) − 4√(1 − α) (Kalata,
    "The tracking index: a generalized parameter for α-β and α-β-γ target trackers", IEEE TAES
    20(2), 1984). (0, 0) for λ ≤ 0 or NaN."""
    lam = float(index)
    if not lam > 0:
        return 0.0, 0.0
    r = (4 + lam - np.sqrt(8 * lam + lam * lam)) / 4
    alpha = 1 - r * r
    return float(alpha), float(2 * (2 - alpha) - 4 * np.sqrt(max(1 - alpha, 0.0)))


def distance_track(z: np.ndarray, beta: np.ndarray, state: np.ndarray,
                   index: float = _DEFAULT.distance_index) -> np.ndarray:
    """Step 2's part of the distance correction (:func:`distance_correction`): one frame of B
    streams. The NumPy definition of the kernel's ``distance`` state update
    (csrc/correction/correction.h, ``DistanceState``).

    Each frame's least-squares distance R_z (:func:`lateral_correction` of the refined pose) moves
    with the refined pose's depth and size errors, and every lateral coordinate of the corrected
    pose scales with it; a person's distance from the camera moves slowly. With ground-truth 2D
    the second differences of R_z are 2.6–50 × the true root's (validation motion, OMOMO,
    DeepMimic; experiments/README.md). Per row with a valid R_z (z > 0):

    - an α-β tracker, level x and velocity v (mm, mm per update): the first update sets x = z,
      v = 0; each later one predicts x⁻ = x + v and with e = z − x⁻ sets x = x⁻ + α e, v += β e,
      with the steady-state (α, β) = :func:`alpha_beta_gains` (index) from the first frame on. A
      constant velocity is followed without lag, unlike an EMA. (An expanding-memory start, the
      least-squares line through the first frames, extrapolates the refiner's unsettled first
      frames: on the validation motion, OMOMO, DeepMimic and the test fixture it was as good or
      worse in every figure.)
    - m, the distance the lateral EMA of weight ``beta`` leaves the pose at: m = z the first
      time, then m += beta (z − m).

    Args:
        z: (B,) this frame's least-squares R_z of the refined pose, mm; ≤ 0 or NaN: no valid one
            (the row's state is not touched).
        beta: (B,) the row's lateral EMA weight β this frame.
        state: (B, 4) float64 x (mm), v (mm per update), n (updates; 0 for a new stream), m (mm);
            not modified.
        index: the tracking index λ > 0 (``CorrectionConfig.distance_index``).
    Returns:
        state (B, 4) float64, the new state.
    Raises:
        ValueError: for shapes other than the above, or λ not finite and > 0.
    """
    z = np.asarray(z, dtype=np.float64)
    state = np.array(state, dtype=np.float64)
    if z.ndim != 1 or state.shape != (len(z), 4) or np.shape(beta) != z.shape:
        raise ValueError(f"expected z (B,), beta (B,) and state (B, 4), got {z.shape}, {np.shape(beta)}, "
                         f"{state.shape}")
    if not (index > 0 and np.isfinite(index)):
        raise ValueError(f"the tracking index must be finite and > 0, got {index}")
    alpha, gain_v = alpha_beta_gains(index)
    for b in np.flatnonzero(z > 0):
        x, v, n, m = state[b]
        if not n >= 1:
            state[b] = (z[b], 0.0, 1.0, z[b])
            continue
        e = z[b] - (x + v)
        state[b] = (x + v + alpha * e, v + gain_v * e, n + 1, m + beta[b] * (z[b] - m))
    return state


def distance_correction(pose: np.ndarray, rays: np.ndarray, weight: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Move each pose in depth by its stream's tracked distance's lead over the distance its
    lateral EMA left it at: step 4 of the kernel (csrc/correction/correction.h, ``DistanceState``),
    the stage's last (``CorrectionConfig.distance_index`` > 0); the
    state comes from :func:`distance_track` of this frame.

    R = the least-squares position of ``pose`` on ``rays`` (:func:`lateral_correction`); for a row
    where it is valid and whose stream has a state (n ≥ 1), the target depth is
    x' = R_z + (x − m). If x' > 0, every joint is in front (A_jz = X_jz + R_z > 0.01 R_z) and
    X_jz + x' > 0.01 x', every joint moves along its own line of sight to depth X_jz + x':
    A_j ← (X_j + R) (X_jz + x') / (X_jz + R_z); the output is A_j − A_root. The projection does not
    change: the pose moves in depth as a whole and its lateral extent scales with the distance.
    With precise 2D (β ≈ 1) m is the frame's own R_z and the pose takes the tracked distance;
    with a detector's jitter (β ≈ 0.1) m is already smooth and the move is small.

    Args:
        pose: (B, 17, 3) root-relative poses in the camera frame, mm (the corrected output).
        rays: (B, 17, 2) the keypoints' undistorted normalised coordinates.
        weight: (B, 17) confidences; 0 marks a missing joint.
        state: (B, 4) :func:`distance_track`'s state after this frame.
    Returns:
        out (B, 17, 3) float64, mm, root-relative (rows not moved are ``pose`` as it is).
    Raises:
        ValueError: for shapes other than the above.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if np.shape(state) != (len(pose), 4):
        raise ValueError(f"expected state (B, 4) for B = {len(pose)}, got {np.shape(state)}")
    _, R = lateral_correction(pose, rays, weight, return_position=True)
    out = pose.copy()
    for b in np.flatnonzero((R[:, 2] > 0) & (np.asarray(state)[:, 2] >= 1)):
        x, _, _, m = state[b]
        target, z = R[b, 2] + x - m, pose[b, :, 2]
        if target > 0 and np.all(z + R[b, 2] > 0.01 * R[b, 2]) and np.all(z + target > 0.01 * target):
            A = (pose[b] + R[b]) * ((z + target) / (z + R[b, 2]))[:, None]
            out[b] = A - A[0]
    return out


def bone_depth_correction(pose: np.ndarray, rays: np.ndarray, weight: np.ndarray, length: np.ndarray,
                          count: np.ndarray, delta: np.ndarray, ema: np.ndarray, parents=PARENTS,
                          gate: float = _DEFAULT.bone_gate, horizon: float = _DEFAULT.bone_horizon,
                          mirror=FLIP_PERM, view_power: float = _DEFAULT.bone_view_power,
                          view_cap: float = _DEFAULT.bone_view_cap):
    """Depth of every bone from the stream's running bone lengths: one frame of B streams.

    This is the NumPy definition of step 3 of the kernel (csrc/correction/correction.h), which
    runs after the lateral step (``CorrectionConfig.bone_depth``).

    1. R: the least-squares position of ``pose`` on ``rays`` (:func:`lateral_correction`); a row whose
       system is not valid is returned unchanged and its state is not touched. A_j = X_j + R
       (camera frame) and every joint's line of sight r_j = A_j / A_jz; a joint with
       A_jz ≤ 0.01 R_z is not "in front".
    2. For every bone (p, j) whose two ends have weight > 0 and whose child is in front, with
       v = A_j − A_p: e = √(|v|² − (v·r_j)²/|r_j|²) is its extent across the line of sight (the
       part the 2D observes). Two running means of |v| (mm) are kept, column 0 and 1 of
       ``length`` and ``count``: the one used, length[..., 0], and the plain one,
       length[..., 1], of every frame alike (count[..., 1] += 1, length[..., 1] += (|v| −
       length[..., 1]) / min(count[..., 1], horizon)). In the one used the frame weighs
       w = min(1, e / L₀)^view_power with L₀ = min(length[..., 0], view_cap · length[..., 1])
       before this frame (w = 1 while a count is 0): count[..., 0] += w, length[..., 0] +=
       w (|v| − length[..., 0]) / min(count[..., 0], horizon). It follows the frames where the 2D
       sees the bone at its full length rather than foreshortened, where its length is the 2D's
       rather than the lifter's depth (view_power = 0: every frame alike).
       Weighting by the refined pose's own angle to the line of sight instead selects the frames
       where the lifter squashed the bone in depth. The cap keeps a bad start from
       holding the length: uncapped (view_cap = inf), a first frame's bone 4× too
       long (as DeepMimic's held-out streams with detector noise begin) makes every later frame
       look foreshortened and weigh ≤ (1/4)^4: +192 % after 100 frames of real motion, against
       +5 % with the cap (tests/unit/test_correction_reference.py).
    3. The length used, L, pools the bone with its mirror image (``mirror``, left ↔ right):
       L = (count_b length_b + count_m length_m) / (count_b + count_m) over column 0, a person
       being symmetric.
    4. Every joint moves only along its own line of sight by t_j mm of depth, so the pose's
       projection does not change. Parents first (t_root = 0): the child first rides along with
       its parent's depth, a = A_j + t_p r_j; with v = a − (A_p + t_p r_p), the point a + δ r_j at
       distance L from the parent on v's side of the closest point is δ = −v·r/|r|² +
       sgn(v·r) √(max(L² − |v|² + (v·r)²/|r|², 0) / |r|²) (the closest point if the line passes
       farther than L; Taylor, CVIU 2000, with the refined pose choosing the side), gated by
       g = min(1, |v·r| / (|r| · gate · L)), so that a bone across the line of sight (v·r ≈ 0,
       where the side is a guess) moves little. Its causal EMA delta += ema · min(w_p, w_j) ·
       (g δ − delta) (visible ends only; a hidden end keeps its delta), and t_j = t_p + delta. A
       joint not in front stays (t_j = 0).
    5. The output X_j + t_j r_j, root-relative (the root does not move).

    Args:
        pose: (B, 17, 3) root-relative poses in the camera frame, mm (the laterally corrected
            output).
        rays: (B, 17, 2) the keypoints' undistorted normalised coordinates (:func:`lateral_correction`).
        weight: (B, 17) confidences; 0 marks a missing joint.
        length, count: (B, 16, 2) the rows' running means (bone b = joint b + 1 and its parent;
            column 0 the view-weighted one, column 1 the plain one; mm) and their summed frame
            weights; not modified.
        delta: (B, 16) the rows' smoothed depth moves, mm; not modified.
        ema: (B,) the EMA weight of each row (the stage's max(bone_ema, 1 / (n + 1)) at frame n).
        parents: (17,) parent of each joint, ``parents[j] < j`` (:data:`~posert.skeleton.PARENTS`).
        gate, horizon, view_power: ``CorrectionConfig.bone_gate``, ``bone_horizon``, ``bone_view_power``.
        view_cap: ``CorrectionConfig.bone_view_cap``, ≥ 1; ``inf``: no cap.
        mirror: (17,) left/right joint permutation (:data:`~posert.skeleton.FLIP_PERM`), or None
            for no pooling.
    Returns:
        (out (B, 17, 3) float64 mm, length, count (B, 16, 2), delta (B, 16) float64): the corrected
        poses and the rows' new state.
    Raises:
        ValueError: for shapes other than the above, or ``view_cap`` < 1 or NaN.
    """
    pose = np.asarray(pose, dtype=np.float64)
    B = len(pose)
    if np.shape(length) != (B, NUM_JOINTS - 1, 2) or np.shape(count) != (B, NUM_JOINTS - 1, 2) \
            or np.shape(delta) != (B, NUM_JOINTS - 1) or np.shape(ema) != (B,):
        raise ValueError(f"expected length, count (B, {NUM_JOINTS - 1}, 2), delta (B, {NUM_JOINTS - 1}) and ema (B,) "
                         f"for B = {B}")
    if not view_cap >= 1:
        raise ValueError(f"view_cap must be ≥ 1, got {view_cap}")
    w = np.asarray(weight, dtype=np.float64)
    _, R = lateral_correction(pose, rays, w, return_position=True)
    ok = R[:, 2] > 0
    length, count, delta = (np.array(a, dtype=np.float64) for a in (length, count, delta))
    A = pose + R[:, None]  # camera frame
    front_all = ok[:, None] & (A[..., 2] > 0.01 * R[:, 2:3])
    rays_all = A / np.where(front_all, A[..., 2], 1.0)[..., None]  # each joint's own line of sight
    for j in range(1, NUM_JOINTS):
        p, b = parents[j], j - 1
        v = pose[:, j] - pose[:, p]
        r = rays_all[:, j]
        vv = (v * v).sum(-1)
        rr = (r * r).sum(-1)
        e = np.sqrt(np.maximum(vv - (v * r).sum(-1) ** 2 / np.where(rr > 0, rr, 1.0), 0.0))  # across the line of sight
        has = (count[:, b] > 0).all(-1) & (length[:, b] > 0).all(-1)
        L0 = length[:, b, 0] if np.isinf(view_cap) else np.minimum(length[:, b, 0], view_cap * length[:, b, 1])
        wb = np.where(has, np.minimum(1.0, e / np.where(has, L0, 1.0)) ** view_power, 1.0) \
            if view_power != 0 else np.ones(B)
        seen = front_all[:, j] & (w[:, p] > 0) & (w[:, j] > 0) & (vv > 0)
        for col, wc in ((0, wb), (1, np.ones(B))):
            s = seen & (wc > 0)
            count[s, b, col] += wc[s]
            length[s, b, col] += wc[s] * (np.sqrt(vv[s]) - length[s, b, col]) / np.minimum(count[s, b, col], horizon)
    length_w, count_w = length[..., 0], count[..., 0]
    L_used = length_w.copy()
    if mirror is not None:
        m = np.asarray(mirror)[1:] - 1  # the mirror image of bone b
        n = count_w + count_w[:, m]
        pooled = np.where(n > 0, (count_w * length_w + count_w[:, m] * length_w[:, m]) / np.where(n > 0, n, 1.0), 0.0)
        L_used = np.where(m == np.arange(NUM_JOINTS - 1), length_w, pooled)
    tdep = np.zeros(pose.shape[:2])  # each joint's move along it (mm of depth)
    for j in range(1, NUM_JOINTS):
        p, b = parents[j], j - 1
        seen = ok & (w[:, p] > 0) & (w[:, j] > 0)
        r, front, tp = rays_all[:, j], front_all[:, j], tdep[:, p]
        a = A[:, j] + tp[:, None] * r
        v = a - (A[:, p] + tp[:, None] * rays_all[:, p])
        rr = (r * r).sum(-1)
        vr = (v * r).sum(-1)
        L = L_used[:, b]
        perp2 = (v * v).sum(-1) - vr * vr / rr
        h = np.sqrt(np.maximum(L * L - perp2, 0.0) / rr)
        g = np.minimum(1.0, np.abs(vr) / np.sqrt(rr) / (gate * np.where(L > 0, L, 1.0)))
        target = np.where(L > 0, g * (-vr / rr + np.sign(vr) * h), 0.0)
        upd = front & seen
        delta[upd, b] += ema[upd] * np.minimum(w[upd, p], w[upd, j]) * (target[upd] - delta[upd, b])
        tdep[:, j] = np.where(front, tp + delta[:, b], 0.0)
    out = pose + tdep[..., None] * rays_all  # t_root = 0: still root-relative
    return np.where(ok[:, None, None], out, pose), length, count, delta


def correct(pose: np.ndarray, slots: np.ndarray, count: np.ndarray, state, config: CorrectionConfig = _DEFAULT,
            parents=PARENTS, mirror=FLIP_PERM) -> np.ndarray:
    """The whole correction stage on one tick's rows, in NumPy: what
    ``posert._C.CorrectionKernel.apply`` computes (csrc/correction/correction.h, steps 1–4).

    Args:
        pose: (R, 17, 3) refined poses, camera frame, root-relative, mm; row r is a frame of the
            stream in slot ``slots[r]`` (distinct slots).
        slots: (R,) int slots of ``state``.
        count: (R,) frames each stream had before this one (n: the running means over a stream's
            first frames weigh 1 / (n + 1)).
        state: a :class:`~posert.runtime.correction.CorrectionState` with this frame's ``px`` and
            ``conf`` stored; its per-stream arrays are updated in place.
        config: the stage's tuning; ``mode`` is not read (the caller picks the rows).
        parents, mirror: the skeleton (``mirror`` is used with ``config.bone_symmetry``).
    Returns:
        (R, 17, 3) float64, the corrected poses, mm.
    Raises:
        ValueError: for shapes that do not match.
    """
    from posert.camera import pixels_to_rays

    slots = np.asarray(slots, dtype=np.int64)
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (len(slots), NUM_JOINTS, 3) or np.shape(count) != slots.shape:
        raise ValueError(f"expected pose (R, 17, 3) and count (R,) for R = {len(slots)}, got {pose.shape}, "
                         f"{np.shape(count)}")
    conf = state.conf[slots]
    K = state.K[slots]
    rays = pixels_to_rays(state.px[slots], K, state.dist[slots], config.undistort_iterations)
    delta, R = lateral_correction(pose, rays, conf, return_position=True)
    first = 1.0 / (np.asarray(count, dtype=np.float64) + 1.0)
    auto = config.lateral_ema == "auto"
    beta = np.maximum(0.0 if auto else float(config.lateral_ema), first)
    if auto:
        other = None
        if config.pixel_noise:
            state.pixel_hist[slots], state.pixel_var[slots] = pixel_noise(
                state.px[slots], conf, state.pixel_hist[slots], state.pixel_var[slots], config.noise_tau,
                config.noise_min_joints)
            other = state.pixel_var[slots, 0]
        gain, state.noise_hist[slots], state.noise_var[slots] = noise_gain(
            pose, rays, conf, K[:, 0, 0], state.noise_hist[slots], state.noise_var[slots], config.noise_q,
            config.noise_tau, config.noise_min_joints, config.noise_fallback, other_var=other)
        beta = np.maximum(beta, gain)
    valid = R[:, 2] > 0  # a frame without a valid correction keeps Δ̄
    lateral = state.lateral[slots]
    lateral += ((beta * valid)[:, None] * conf)[..., None] * (delta - lateral)
    state.lateral[slots] = lateral
    out = pose + lateral
    out = out - out[:, :1]
    if config.bone_depth:
        out, *new = bone_depth_correction(
            out, rays, conf, state.bone_length[slots], state.bone_count[slots], state.bone_delta[slots],
            np.maximum(config.bone_ema, first), parents, config.bone_gate, config.bone_horizon,
            mirror if config.bone_symmetry else None, config.bone_view_power, config.bone_view_cap)
        state.bone_length[slots], state.bone_count[slots], state.bone_delta[slots] = new
    if config.distance_index > 0:
        state.distance[slots] = distance_track(R[:, 2], beta, state.distance[slots], config.distance_index)
        out = distance_correction(out, rays, conf, state.distance[slots])
    return out
