"""The correction stage's NumPy definitions (posert.runtime.correction.reference) against closed
forms, on real motion."""

import numpy as np
import pytest

from posert import _C
from posert.config import CorrectionConfig
from posert.metrics import mpjpe
from posert.runtime.correction.reference import bone_depth_correction, lateral_correction
from posert.skeleton import FLIP_PERM, PARENTS, ROOT, bone_lengths
from tests.helpers import h36m_view

_DEFAULT = CorrectionConfig()
BONE_VIEW_POWER, BONE_VIEW_CAP = _DEFAULT.bone_view_power, _DEFAULT.bone_view_cap
NOISE_Q, DISTANCE_INDEX = _DEFAULT.noise_q, _DEFAULT.distance_index


def test_lateral_correction_puts_joints_on_their_rays_at_their_depth(motion):
    """On real motion: the true pose needs no correction; a pose with lateral error (x, y) is
    moved onto the 2D's rays at unchanged depths and most of that error goes; joints of weight 0
    (NaN pixels) and rows with fewer than two joints are left alone."""
    px, cam3d, cam = h36m_view(motion)
    rays = cam.rays(px)
    gt = cam3d - cam3d[:, ROOT:ROOT + 1]
    ones = np.ones(gt.shape[:2])
    delta, R = lateral_correction(gt, rays, ones, return_position=True)
    assert np.abs(delta).max() < 1e-6  # mm
    np.testing.assert_allclose(R, cam3d[:, ROOT], atol=1e-6)  # the root's true position in the camera frame
    rng = np.random.default_rng(0)
    noisy = gt + np.concatenate([rng.normal(0, 40, gt.shape[:2] + (2,)), np.zeros(gt.shape[:2] + (1,))], -1)
    noisy -= noisy[:, ROOT:ROOT + 1]
    delta = lateral_correction(noisy, rays, ones)
    assert np.all(delta[..., 2] == 0)  # depths are kept
    fixed = noisy + delta
    fixed -= fixed[:, ROOT:ROOT + 1]
    assert np.abs(lateral_correction(fixed, rays, ones)).max() < 1e-6  # on its rays: nothing left to move
    err_before, err_after = mpjpe(noisy, gt), mpjpe(fixed, gt)
    assert err_before > 45 and err_after < 0.2 * err_before, (err_before, err_after)
    w = ones.copy()
    w[:, 13] = 0
    hidden = rays.copy()
    hidden[:, 13] = np.nan
    d2 = lateral_correction(noisy, hidden, w)
    assert np.isfinite(d2).all() and np.all(d2[:, 13] == 0)
    w[:5, 1:] = 0  # a single visible joint: no position can be fitted
    assert np.all(lateral_correction(noisy[:5], hidden[:5], w[:5]) == 0)


def _seen_extent(pose: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """(B, 16) extent of every bone of root-relative ``pose`` (B, 17, 3) mm placed on ``rays``
    across its child's line of sight, mm, from the cross product (|v × r| / |r|)."""
    _, R = lateral_correction(pose, rays, np.ones(pose.shape[:2]), return_position=True)
    A = pose + R[:, None]
    child, parent = np.arange(1, 17), np.array(PARENTS[1:])
    v, r = A[:, child] - A[:, parent], A[:, child]
    return np.linalg.norm(np.cross(v, r), axis=-1) / np.linalg.norm(r, axis=-1)


def test_bone_depth_correction_sets_depth_from_bone_lengths(motion):
    """On real motion through the H36M lens, each row its own stream with its true bone lengths
    as state: the true pose is left where it is; a pose squashed to half its depth extent along
    the true lines of sight (same 2D, bones too short in depth) gets its depth back, more than
    half of it with the default gate and nearly all without, while its 2D stays exactly the
    same; a frame's weight in the running length used is min(1, e / L₀)^view_power, e the bone's
    extent across the line of sight and L₀ that length capped at ``view_cap`` times the plain
    running length, while the plain one counts every frame 1 (all 1 with view_power 0);
    with ``mirror`` a bone's length is
    pooled with its mirror image's; a fresh state takes the pose's own lengths; a hidden joint
    (weight 0, NaN ray) stays finite and keeps its bone's state; a row with one visible joint is
    untouched."""
    px, cam3d, cam = h36m_view(motion)
    rays = cam.rays(px)
    gt = cam3d - cam3d[:, ROOT:ROOT + 1]
    B = len(gt)
    ones, ema = np.ones(gt.shape[:2]), np.ones(B)
    L, zero = bone_lengths(gt), np.zeros((B, 16))
    two = lambda a: np.stack([a, a], axis=-1)  # noqa: E731  (view-weighted, plain) state columns
    L2, count, zero2 = two(L), np.full((B, 16, 2), 1e9), np.zeros((B, 16, 2))
    own = dict(mirror=None, horizon=1e12)  # each bone its own length (the fixture's left and right differ)
    out, L1, c1, d1 = bone_depth_correction(gt, rays, ones, L2, count, zero, ema, **own)
    assert np.abs(out - gt).max() < 1e-3 and np.abs(d1).max() < 1e-3  # mm
    seen = _seen_extent(gt, rays) / L  # the share of each bone the 2D sees
    assert seen.min() < 0.3 and seen.max() > 0.99  # bones along and across the line of sight
    one = np.ones((B, 16, 2))
    _, _, cw, _ = bone_depth_correction(gt, rays, ones, L2, one, zero, ema, **own)
    np.testing.assert_allclose(cw[..., 0] - 1, np.minimum(seen, 1) ** BONE_VIEW_POWER, rtol=1e-6, atol=1e-12)
    assert np.all(cw[..., 1] == 2)  # the plain mean: every frame 1
    # a weighted length (column 0) twice the plain one (column 1): L₀ is the cap, 1.25 L
    high = np.stack([2 * L, L], axis=-1)
    _, _, cp, _ = bone_depth_correction(gt, rays, ones, high, one, zero, ema, **own)
    np.testing.assert_allclose(cp[..., 0] - 1, np.minimum(seen / BONE_VIEW_CAP, 1) ** BONE_VIEW_POWER, rtol=1e-6,
                               atol=1e-12)
    _, _, co, _ = bone_depth_correction(gt, rays, ones, high, one, zero, ema, view_cap=np.inf, **own)
    np.testing.assert_allclose(co[..., 0] - 1, np.minimum(seen / 2, 1) ** BONE_VIEW_POWER, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="view_cap"):
        bone_depth_correction(gt, rays, ones, L2, one, zero, ema, view_cap=0.5)
    _, _, c0, _ = bone_depth_correction(gt, rays, ones, L2, one, zero, ema, view_power=0, **own)
    assert np.all(c0 == 2)  # the plain mean (view_power 0)
    zr = cam3d[:, ROOT:ROOT + 1, 2:3]
    squashed = cam3d * (zr + 0.5 * (cam3d[..., 2:3] - zr)) / cam3d[..., 2:3]  # along each joint's ray
    sq = squashed - squashed[:, ROOT:ROOT + 1]
    out, *_ = bone_depth_correction(sq, rays, ones, L2, count, zero, ema, **own)
    before, after = mpjpe(sq, gt), mpjpe(out, gt)  # measured 41.2 → 18.8 mm
    assert before > 20 and after < 0.5 * before, (before, after)
    placed = out + squashed[:, :1]  # the squashed root is the true one
    np.testing.assert_allclose(placed[..., :2] / placed[..., 2:], rays, atol=1e-9)  # the same 2D
    out, *_ = bone_depth_correction(sq, rays, ones, L2, count, zero, ema, gate=1e-6, **own)
    assert mpjpe(out, gt) < 0.1 * before  # without the gate: 2.8 mm (bones across the line of sight may flip)
    # pooled with the mirror image: with the gate off, every bone the line of sight can reach
    # gets the count-weighted mean of its own and its mirror's length
    cnt = count * np.where(np.isin(np.arange(16), [0, 1, 2, 13, 14, 15]), 3.0, 1.0)[:, None]  # the right side weighs 3
    out, L5, *_ = bone_depth_correction(sq, rays, ones, L2, cnt, zero, ema, gate=1e-6, horizon=1e12)
    np.testing.assert_allclose(L5, L2, rtol=1e-6)  # the state stays per bone
    m = np.asarray(FLIP_PERM)[1:] - 1
    c = cnt[..., 0]
    pooled = (c * L + c[:, m] * L[:, m]) / (c + c[:, m])
    assert np.abs(L[:, m] - L).max() > 10  # the fixture's left and right bones differ (mm)
    hit = np.abs(bone_lengths(out) - pooled) < 1e-6
    assert hit.mean() > 0.9, hit.mean()
    differ = np.abs(L[:, m] - L) > 1.0  # mm
    assert (np.abs(bone_lengths(out) - L) < 1e-6)[differ].mean() < 0.05  # those left their own length
    _, L0, c0, _ = bone_depth_correction(sq, rays, ones, zero2, zero2, zero, ema)
    np.testing.assert_allclose(L0, two(bone_lengths(sq)), atol=1e-9)
    assert np.all(c0 == 1)  # a fresh state: the first frame weighs 1
    w = ones.copy()
    w[:, 13] = 0  # l_wrist: bone 12 (l_elbow → l_wrist)
    hidden = rays.copy()
    hidden[:, 13] = np.nan
    prev = np.full((B, 16), 7.0)
    out, _, c3, d3 = bone_depth_correction(sq, hidden, w, L2, count, prev, ema, horizon=1e12)
    assert np.isfinite(out).all() and np.all(d3[:, 12] == 7.0) and np.all(c3[:, 12] == count[:, 12])
    w[:5, 1:] = 0
    out, L4, c4, d4 = bone_depth_correction(sq[:5], hidden[:5], w[:5], L2[:5], count[:5], prev[:5], ema[:5])
    np.testing.assert_array_equal(out, sq[:5])
    assert np.array_equal(L4, L2[:5]) and np.array_equal(c4, count[:5]) and np.array_equal(d4, prev[:5])


def test_bone_length_forgets_a_bad_first_frame(motion):
    """A stream's first frame with its right hip 4× too far from the root (as a first detection
    with a swapped or stray joint gives), then 399 true frames of real motion through the H36M
    lens: the running length used forgets it (measured +31 % after 50 frames, +9.7 % after 100),
    because the view weight of every later frame is judged against that length capped at 1.25×
    the plain running length (the plain one alone, ``view_cap=1``: +13.5 %, +5.3 %). Uncapped
    (``view_cap=inf``) every later frame looks foreshortened, weighs ≤ (1/4)^4 and the
    hip stays wrong (measured +192 % after 100 frames, +34 % after 200)."""
    px, cam3d, cam = h36m_view(motion, frames=400)
    rays = cam.rays(px)
    gt = cam3d - cam3d[:, ROOT:ROOT + 1]
    true = bone_lengths(gt[:1])[0, 0]  # root → right hip, mm
    bad = gt.copy()
    bad[0, 1] = bad[0, ROOT] + 4 * (gt[0, 1] - gt[0, ROOT])
    hip = {}
    for cap in (BONE_VIEW_CAP, np.inf):
        L, n, d = np.zeros((1, 16, 2)), np.zeros((1, 16, 2)), np.zeros((1, 16))
        hip[cap] = []
        for t in range(len(gt)):
            _, L, n, d = bone_depth_correction(bad[t:t + 1], rays[t:t + 1], np.ones((1, 17)), L, n, d,
                                               np.array([max(0.1, 1 / (t + 1))]), mirror=None, view_cap=cap)
            hip[cap].append(L[0, 0, 0] / true - 1)
    capped, uncapped = np.array(hip[BONE_VIEW_CAP]), np.array(hip[np.inf])
    assert capped[0] == uncapped[0] == pytest.approx(3.0)
    assert capped[50] < 0.5 and capped[100] < 0.15 and capped[200] < 0.05, capped[[50, 100, 200]]
    assert uncapped[100] > 1.0 and uncapped[200] > 0.2, uncapped[[100, 200]]  # the failure the cap avoids


def test_steady_state_gain_matches_the_kernel_and_its_limits():
    """K(λ) of :func:`noise_gain`: 0 without drift, → 1 without noise, and the C++ twin agrees;
    q = ``CorrectionConfig.noise_q`` gives β ≈ 0.1 at 5 px of 2D noise (the fixed β it replaces) and > 0.9
    at 0.15 px."""
    from posert.runtime.correction.reference import steady_state_gain

    lam = np.array([0.0, 1e-4, 0.012, 1.0, 30.0, 1e6, 1e13, np.inf])
    k = steady_state_gain(lam)
    np.testing.assert_allclose(k, [_C.steady_state_gain(x) for x in lam], rtol=1e-12)
    assert k[0] == 0 and k[-1] == 1 and np.all(np.diff(k) >= 0)
    # the EMA with weight K is the steady state: K = P / (P + 1) with P = (1 − K) P + λ (σ² = 1)
    P = k[1:5] / (1 - k[1:5])
    np.testing.assert_allclose(P, (1 - k[1:5]) * P + lam[1:5], rtol=1e-9)
    assert 0.09 < steady_state_gain(NOISE_Q / 25) < 0.12 and steady_state_gain(NOISE_Q / 0.15 ** 2) > 0.9


def test_alpha_beta_gains_are_the_kalman_steady_state_and_the_kernels():
    """:func:`alpha_beta_gains` (Kalata 1984) are the steady-state Kalman gains of a constant-
    velocity model driven by white acceleration of sd λ (per frame², T = 1) and observed in white
    noise of sd 1 (the discrete algebraic Riccati equation, scipy), and the C++ twin agrees."""
    from scipy.linalg import solve_discrete_are

    from posert.runtime.correction.reference import alpha_beta_gains

    F, H = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    for lam in (DISTANCE_INDEX, 0.05, 1.0, 20.0):
        G = np.array([[0.5], [1.0]]) * lam
        P = solve_discrete_are(F.T, H.T, G @ G.T, np.eye(1))  # the predicted state's covariance
        K = (P @ H.T / (H @ P @ H.T + 1.0)).ravel()
        np.testing.assert_allclose(alpha_beta_gains(lam), K, rtol=1e-6)
        np.testing.assert_allclose(_C.alpha_beta_gains(lam), alpha_beta_gains(lam), rtol=1e-12)
    assert alpha_beta_gains(0.0) == (0.0, 0.0) and 0.04 < alpha_beta_gains(DISTANCE_INDEX)[0] < 0.05


def test_distance_tracker_follows_a_walk_toward_the_camera_and_smooths_the_jitter(motion):
    """:func:`distance_track` on the least-squares distance of real motion walking toward the
    camera at 0.5 m/s with 60 mm of white jitter added (what a refined pose's depth errors do to
    it): after the start (4 s) the tracked distance has no lag on the steady walk (mean error
    within 10 mm, where an EMA of the same α lags by > 150 mm) and a fraction of the jitter (sd
    < 0.3 ×); a row without a valid distance (NaN, ≤ 0)
    keeps its state; m follows the lateral EMA's β; and :func:`distance_correction` moves the pose
    along its lines of sight only: its projection does not change."""
    from posert.runtime.correction.reference import alpha_beta_gains, distance_correction, distance_track

    T = 500
    rng = np.random.default_rng(0)
    truth = 6000.0 - 10.0 * np.arange(T)  # mm: 0.5 m/s at 50 fps
    z = truth + rng.normal(0.0, 60.0, T)
    state = np.zeros((3, 4))
    xs, ema = [], [z[0]]
    alpha = alpha_beta_gains(DISTANCE_INDEX)[0]
    for t in range(T):
        state = distance_track(np.array([z[t], np.nan, -1.0]), np.array([1.0, 1.0, 1.0]), state)
        xs.append(state[0, 0])
        ema.append(ema[-1] + alpha * (z[t] - ema[-1]))
    err = np.array(xs[200:]) - truth[200:]  # measured: mean −3.2 mm, sd 9.7 mm; the EMA +216 mm
    assert abs(err.mean()) < 10.0 and err.std() < 0.3 * 60.0
    assert np.mean(np.array(ema[201:]) - truth[200:]) > 150.0
    assert np.all(state[1:] == 0)  # no valid distance: untouched
    assert state[0, 2] == T and state[0, 3] == z[-1]  # β = 1: m is the frame's own distance
    half = distance_track(np.array([5000.0]), np.array([0.5]), np.array([[4000.0, 0.0, 3.0, 4000.0]]))
    assert half[0, 3] == 4500.0
    # the move keeps the projection: a real pose at 4 m, tracked at 4.2 m
    pose = (motion[200] - motion[200, ROOT]).astype(np.float64)[None] * np.array([1, -1, -1])  # camera-like axes
    R = np.array([100.0, -50.0, 4000.0])
    rays = (pose[0, :, :2] + R[:2]) / (pose[0, :, 2:] + R[2])
    out = distance_correction(pose, rays[None], np.ones((1, 17)), np.array([[4200.0, 0.0, 5.0, 4000.0]]))
    _, R2 = lateral_correction(out, rays[None], np.ones((1, 17)), return_position=True)
    np.testing.assert_allclose(R2[0, 2], 4200.0, rtol=1e-9)
    np.testing.assert_allclose((out[0, :, :2] + R2[0, :2]) / (out[0, :, 2:] + R2[0, 2]), rays, atol=1e-12)
    np.testing.assert_allclose(out[0, :, 2] - out[0, 0, 2], pose[0, :, 2] - pose[0, 0, 2], atol=1e-9)
    assert np.abs(out - pose).max() > 5.0  # mm: it did move laterally (scaled with the distance)
