"""posert._C.CorrectionKernel (csrc/correction) against its NumPy definition."""

import dataclasses

import numpy as np
import pytest
import torch

from posert import _C
from posert.camera import Camera, ring_rig
from posert.config import CorrectionConfig
from posert.data.dataset import center_on_floor, make_input, render
from posert.runtime.correction import CorrectionState
from posert.runtime.correction.reference import correct, steady_state_gain
from posert.runtime.correction.stage import kernel_params
from posert.skeleton import FLIP_PERM, PARENTS

PARENTS_I64, MIRROR_I64 = np.array(PARENTS, np.int64), np.array(FLIP_PERM, np.int64)
VARIANTS = {
    # a fixed lateral β = 0.1 (the bone depth's EMA is its own 0.1 either way)
    "lateral": CorrectionConfig(lateral_ema=0.1, bone_depth=False, distance_index=0.0),
    "bone-depth": CorrectionConfig(lateral_ema=0.1, distance_index=0.0),  # view-weighted, capped, pooled
    "bone-depth-own": CorrectionConfig(lateral_ema=0.1, distance_index=0.0, bone_view_cap=np.inf),  # uncapped
    "bone-depth-plain": CorrectionConfig(lateral_ema=0.1, distance_index=0.0, bone_view_power=0.0,
                                         bone_symmetry=False),  # every frame alike, no pooling
    "adaptive": CorrectionConfig(distance_index=0.0),  # β from the estimated 2D noise
    "distance": CorrectionConfig(),  # the default stage
}


def _kernel(state, cfg):
    return _C.CorrectionKernel(state, kernel_params(cfg), PARENTS_I64, MIRROR_I64 if cfg.bone_symmetry else None)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_correction_kernel_equals_numpy_reference(motion, models, variant):
    """The kernel against :func:`posert.runtime.correction.reference.correct` (rays, the lateral
    step with its EMA and noise estimates, the bone depth and the distance step, each as the
    config says), on real motion seen through lenses with H36M's distortion and lifted by the
    committed lifter: several ticks (the EMAs, running lengths and trackers carry over), rows in
    another order than slots, a frame count per row (the running means' 1 / (n + 1)), hidden
    joints with NaN pixels, a row with one visible joint (no correction: its Δ̄ is kept) and a
    stream with another lens. Then the kernel's argument checks."""
    cfg = VARIANTS[variant]
    lifter = models[0]
    K = np.array([[1145.0494, 0.0, 512.5415], [0.0, 1143.7811, 515.4515], [0.0, 0.0, 1.0]])
    lens = np.array([-0.20709891, 0.24777518, -0.00142447, -0.0009757, -0.00307515])
    S, B, T = 5, 3, 12
    cams = [Camera(c.name, c.R, c.t, K, lens * (1 + 0.2 * i), 1000, 1002) for i, c in enumerate(ring_rig(n=B))]
    world = center_on_floor(motion[:40])
    views = [render(world, c)[0] for c in cams]  # (40, 17, 2) px each
    inp = np.stack([make_input(v[:27], np.ones((27, 17), np.float32), 1000, 1002) for v in views])
    with torch.no_grad():
        poses = lifter(torch.from_numpy(inp)).numpy() * 1000  # (B, 27, 17, 3) mm
    slots = np.array([4, 0, 2])
    states = CorrectionState.allocate(S), CorrectionState.allocate(S)  # the kernel's, the reference's
    for st in states:
        for b, s in enumerate(slots):
            st.reset(s, K, cams[b].dist)
    got, ref_state = states
    kernel = _kernel(got, cfg)
    rng = np.random.default_rng(0)
    before = None  # slot 1's Δ̄ before the frame without a valid correction
    for t in range(T):
        px, conf = np.zeros((S, 17, 2)), np.zeros((S, 17))
        for b, s in enumerate(slots):
            px[s] = views[b][t]
            conf[s] = rng.uniform(0.3, 1.0, 17)
        hide = rng.random((S, 17)) < 0.2
        conf[hide], px[hide] = 0.0, np.nan
        if t == 3:
            conf[slots[1], 1:] = 0.0  # one visible joint: this row gets no correction
        for st in states:
            st.px[:], st.conf[:] = px, conf
        pose = np.ascontiguousarray(poses[:, t][::-1])  # rows in reverse slot order
        rows = np.arange(B)[::-1].copy()
        count = t + np.array([0, 2, 5])  # frames each stream had: 1 / (n + 1) differs per row early on
        ref = correct(pose[rows], slots, count, ref_state, cfg)
        kernel.apply(pose, rows, slots, count)
        for f in dataclasses.fields(CorrectionState):
            np.testing.assert_allclose(getattr(got, f.name), getattr(ref_state, f.name), rtol=1e-9, atol=1e-9,
                                       err_msg=f.name)
        np.testing.assert_allclose(pose[rows], ref, atol=1e-3)  # float32 output, mm
        if t == 3:
            np.testing.assert_array_equal(got.lateral[slots[1]], before)  # no valid correction: Δ̄ kept
        if t == 2:
            before = got.lateral[slots[1]].copy()
    assert np.abs(ref_state.lateral).max() > 10  # mm: the lifter's pose was corrected
    if cfg.bone_depth:
        assert np.abs(ref_state.bone_delta[slots]).max() > 10  # mm: some bone's depth was corrected
        n, frames = ref_state.bone_count[slots][..., 0], ref_state.bone_count[slots][..., 1]  # by view; every frame 1
        assert 1 <= frames.min() and frames.max() < T and np.array_equal(frames, np.round(frames))
        plain = cfg.bone_view_power == 0
        assert (np.array_equal(n, frames) if plain else 0 < n.min() and np.all(n <= frames))
        if not plain:
            assert np.abs(n - np.round(n)).max() > 0.01  # weights below 1, not frame counts
        assert np.all(got.bone_count[[1, 3]] == 0) and np.all(got.bone_delta[[1, 3]] == 0)  # slots of no row
    if cfg.distance_index > 0:
        # every slot with a row tracks a distance (the row with one visible joint skips a frame), the
        # others none; the tracker moved the pose: its lead x − m over the EMA'd distance is not 0
        n = got.distance[:, 2]
        assert np.all(n[slots] >= T - 1) and np.all(n[[1, 3]] == 0) and np.all(got.distance[[1, 3]] == 0)
        assert np.abs(got.distance[slots, 0] - got.distance[slots, 3]).max() > 1.0  # mm
    if cfg.lateral_ema == "auto":
        # every slot with a row has both estimates, the others none; the gain, not 1 / (n + 1), set β
        assert np.all(np.isfinite(got.noise_var[slots])) and np.isnan(got.noise_var[[1, 3]]).all()
        assert np.all(np.isfinite(got.pixel_var[slots])) and np.isnan(got.pixel_var[[1, 3]]).all()
        v = np.minimum(got.noise_var[slots, 0], got.pixel_var[slots, 0])
        assert np.all(steady_state_gain(cfg.noise_q / v) > 2 / (count + 1))

    # the kernel's checks: the state's arrays, the parameters, the skeleton, the rows
    for bad, match in ((dict(noise_hist=np.zeros((S, 17, 2))), "noise_hist"),
                       (dict(bone_length=np.zeros((S, 16))), "bone_length"),
                       (dict(distance=np.zeros((S, 3))), "distance"),
                       (dict(lateral=np.zeros((S, 17, 3), np.float32)), "float64")):
        with pytest.raises((ValueError, TypeError), match=match):
            _kernel(dataclasses.replace(got, **bad), cfg)
    for field, value, match in (("noise_q", 0.0, "noise_q"), ("noise_tau", 1.5, "noise_tau"),
                                ("bone_view_cap", 0.5, "bone_view_cap"), ("bone_view_power", -1.0, "bone_view_power"),
                                ("distance_alpha", 0.0, "distance")):
        p = kernel_params(CorrectionConfig())
        setattr(p, field, value)
        with pytest.raises(ValueError, match=match):
            _C.CorrectionKernel(got, p, PARENTS_I64, MIRROR_I64)
    with pytest.raises(ValueError, match="mirror"):
        _C.CorrectionKernel(got, kernel_params(CorrectionConfig()), PARENTS_I64, PARENTS_I64)
    with pytest.raises(ValueError, match="parent"):
        _C.CorrectionKernel(got, kernel_params(CorrectionConfig()), PARENTS_I64[::-1].copy(), MIRROR_I64)
    with pytest.raises(ValueError, match="mirror"):  # pooling left and right needs their permutation
        _C.CorrectionKernel(got, kernel_params(CorrectionConfig()), PARENTS_I64, None)
    with pytest.raises(IndexError, match="slot"):
        kernel.apply(pose, rows, np.array([0, 1, S]), count)
    with pytest.raises(IndexError, match="row"):
        kernel.apply(pose, np.array([0, 1, B]), slots, count)
    with pytest.raises(TypeError, match="float32"):
        kernel.apply(pose.astype(np.float64), rows, slots, count)
