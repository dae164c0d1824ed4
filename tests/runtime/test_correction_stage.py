"""The correction stage in the pipeline: its definition, its effect on real motion, its inputs and modes."""

import dataclasses

import numpy as np
import pytest

from posert.camera import Camera
from posert.config import CorrectionConfig
from posert.metrics import accel_error, mpjpe
from posert.runtime import Pipeline
from posert.runtime.backends.torch import TorchBackend
from posert.runtime.correction.reference import bone_depth_correction, lateral_correction
from tests.helpers import stream


def test_correction_follows_its_definition_and_lowers_error(given_pipe, real_views, cameras):
    """A stream added with its camera returns the refined pose + Δ̄, re-rooted: Δ̄ the causal EMA
    (weight β · confidence) of :func:`lateral_correction` of each refined pose, β = max(1/(n+1), the
    gain :func:`noise_gain` sets from the stream's own innovations) (the default
    ``lateral_ema="auto"``), then :func:`bone_depth_correction` (the default ``bone_depth``,
    EMA weight max(``bone_ema``, 1/(n+1))), exactly as recomputed here from a stream without
    a camera. With ground-truth 2D of real motion the estimated keypoint noise falls to well under
    a pixel (measured after 80 frames: 0.16 px from the innovations, whose first frames move
    more, and 0.11 px from the keypoints' third differences, :func:`pixel_noise`; the smaller
    counts), so β rises to > 0.95 and the output follows the 2D across the line of sight: the
    lateral part lowers MPJPE and acceleration error (fixture, 80 frames: measured 118.3 → 108.5
    mm, 3.27 → 2.84 mm/frame²) and the bone depth lowers MPJPE again (→ 97.0 mm) with
    acceleration error below the refiner's (2.86 against 3.27); last the distance tracker (the
    default ``distance_index``, :func:`distance_track`, :func:`distance_correction`) moves the
    pose in depth to the tracked distance (acceleration error 2.86 → 2.83). With 5 px of
    Gaussian jitter on the same 2D the estimate is 3.5 px (the part the refiner did not already
    follow) and β ≈ 0.15: acceleration error 22.9 mm/frame² against 79.7 for following every
    frame's 2D; a stream without a camera in the same ticks is untouched; ``lifted`` is never
    corrected; joints at confidence 0 with NaN pixels stay finite; a stream that reuses a slot
    starts from Δ̄ = 0, from empty bone lengths and from no
    noise estimate, and no distance."""
    from posert.runtime.correction.reference import (
        distance_correction,
        distance_track,
        noise_gain,
        pixel_noise,
    )

    bone_ema = CorrectionConfig().bone_ema

    px, gt = real_views
    c, T = 2, 80
    assert given_pipe.config.correction.lateral_ema == "auto"
    plain = stream(given_pipe, px[c], frames=T)
    # the camera's K only: its orientation would rectify the view (tests/runtime/test_upright.py)
    given_pipe.add_stream("cam", 1000, 1000, dataclasses.replace(cameras[c], oriented=False))
    given_pipe.add_stream("other", 1000, 1000)
    try:
        ticks = []
        for t in range(T):
            given_pipe.push_many(["cam", "other"], np.stack([px[c, t], px[c, t]]), timestamps=[t / 50] * 2)
            ticks.append(given_pipe.tick())
        sigma = given_pipe.keypoint_noise("cam")
        assert np.isnan(given_pipe.keypoint_noise("other"))  # no camera, no correction, no estimate
    finally:
        given_pipe.remove_stream("cam")
        given_pipe.remove_stream("other")
    base = np.stack([r["other"] for r in ticks])  # the same frames without a camera, same batch
    got = np.stack([r["cam"] for r in ticks])
    # the neighbour without a camera is what it is alone (up to ORT's batch-size rounding)
    np.testing.assert_allclose(base, np.stack([r.refined[0] for r in plain]), atol=1e-3)
    np.testing.assert_array_equal(np.stack([r.lifted[0] for r in ticks]), np.stack([r.lifted[1] for r in ticks]))
    rays = cameras[c].rays(px[c, :T])
    dbar = np.zeros((17, 3))
    lateral, bones, ref = np.empty((T, 17, 3)), np.empty((T, 17, 3)), np.empty((T, 17, 3))
    state = [np.zeros((1, 16, 2)), np.zeros((1, 16, 2)), np.zeros((1, 16))]  # bone lengths, counts, δ̄
    hist, var = np.full((1, 2, 17, 2), np.nan), np.full((1, 2), np.nan)
    dstate = np.zeros((1, 4))  # the distance tracker
    raw, raw_var = np.full((1, 3, 17, 2), np.nan), np.full((1, 2), np.nan)  # the keypoints' own noise
    ones = np.ones((1, 17))
    betas = []
    for t in range(T):
        delta, R = lateral_correction(base[t:t + 1].astype(np.float64), rays[t:t + 1], ones, return_position=True)
        delta = delta[0]
        raw, raw_var = pixel_noise(px[c, t:t + 1], ones, raw, raw_var)
        gain, hist, var = noise_gain(base[t:t + 1], rays[t:t + 1], ones, cameras[c].K[:1, 0], hist, var,
                                     other_var=raw_var[:, 0])
        assert R[0, 2] > 0  # every frame's correction is valid here
        w = max(gain[0], 1 / (t + 1))
        betas.append(w)
        dbar += w * (delta - dbar)
        lateral[t] = base[t] + dbar - (base[t, 0] + dbar[0])
        out, *state = bone_depth_correction(lateral[t:t + 1], rays[t:t + 1], ones, *state,
                                            np.array([max(bone_ema, 1 / (t + 1))]))
        bones[t] = out[0]
        dstate = distance_track(R[:, 2], np.array([w]), dstate)
        ref[t] = distance_correction(out, rays[t:t + 1], ones, dstate)[0]
    np.testing.assert_allclose(got, ref, atol=1e-3)  # mm
    assert sigma == pytest.approx(np.sqrt(min(var[0, 0], raw_var[0, 0]))) and sigma < 0.5  # px: ground-truth 2D
    # β rises over the first second (the refiner's first frames move more) and stays > 0.95: measured 0.953
    assert np.all(np.diff(betas[3:50]) > 0) and min(betas[55:]) > 0.95
    truth = gt[c, :T] * 1000
    assert mpjpe(lateral, truth) < mpjpe(base, truth) - 3.0
    assert accel_error(lateral, truth) < accel_error(base, truth)
    # the bone-length depth: measured 61.7 → 57.2 mm with the committed checkpoints (93.9 → 69.8
    # with those before them)
    assert mpjpe(bones, truth) < mpjpe(lateral, truth) - 3.0
    assert accel_error(bones, truth) < accel_error(base, truth)
    # the distance tracker: the pose no longer breathes with each frame's least-squares distance
    # (measured 2.80 → 2.77 mm/frame², 69.8 → 70.2 mm)
    assert accel_error(got, truth) < accel_error(bones, truth)
    assert abs(mpjpe(got, truth) - mpjpe(bones, truth)) < 1.0
    noisy = px[c, :T] + np.random.default_rng(0).normal(0.0, 5.0, px[c, :T].shape).astype(np.float32)
    jittery = stream_with_camera(given_pipe, noisy, cameras[c], keep=True)
    sigma_noisy = given_pipe.keypoint_noise("cam")
    given_pipe.remove_stream("cam")
    assert 2.5 < sigma_noisy < 6.0  # px: the part of the 5 px the refiner did not already follow
    # β ≈ 0.1 keeps the jitter out: far smoother than following each frame's 2D
    follow = noisy_follow(base, cameras[c].rays(noisy), ones)
    assert accel_error(jittery, truth) < 0.4 * accel_error(follow, truth)  # measured 22.9 against 79.7

    hidden = px[c, :T].copy()
    conf = np.ones((T, 17), np.float32)
    conf[:5, [15, 16]] = 0  # hidden from the start: these joints keep the Δ̄ their slot starts with
    conf[20:40, [12, 13]] = 0
    hidden[conf == 0] = np.nan
    first = stream_with_camera(given_pipe, hidden, cameras[c], conf)
    assert np.all(np.isfinite(first))
    # the slot is reused by a new stream: nothing of the previous stream's Δ̄ survives
    np.testing.assert_array_equal(stream_with_camera(given_pipe, hidden, cameras[c], conf), first)


def stream_with_camera(pipe, px, camera, conf=None, keep=False):
    """Stream ``px`` as "cam" with ``camera``; removes it afterwards unless ``keep``."""
    pipe.add_stream("cam", 1000, 1000, camera)
    try:
        out = []
        for t in range(len(px)):
            pipe.push("cam", px[t], None if conf is None else conf[t], t / 50)
            out.append(pipe.tick()["cam"])
        return np.stack(out)
    finally:
        if not keep:
            pipe.remove_stream("cam")


def noisy_follow(base, rays, ones):
    """Each frame of ``base`` put on its own rays (β = 1, no bone depth): what following every
    frame's 2D gives."""
    out = base + np.concatenate([lateral_correction(base[t:t + 1].astype(np.float64), rays[t:t + 1], ones)
                                 for t in range(len(base))])
    return out - out[:, :1]


def test_correction_inputs_are_validated(ort_pipe, cameras):

    cam = cameras[0]
    bad_k = Camera("bad", cam.R, cam.t, np.diag([0.0, 1145.0, 1.0]), cam.dist, 1000, 1000)
    bad_d = Camera("bad", cam.R, cam.t, cam.K, np.array([0.1, np.nan, 0, 0, 0]), 1000, 1000)
    for bad in (bad_k, bad_d):
        with pytest.raises(ValueError, match="camera"):
            ort_pipe.add_stream("x", 1000, 1000, bad)
        assert "x" not in ort_pipe.streams
    for bad in (0.0, "fast"):
        with pytest.raises(ValueError, match="lateral_ema"):
            CorrectionConfig(lateral_ema=bad)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bone_view_power"):
            CorrectionConfig(bone_view_power=bad)
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="bone_view_cap"):
            CorrectionConfig(bone_view_cap=bad)
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="distance_index"):
            CorrectionConfig(distance_index=bad)


def test_default_pipeline_corrects_every_stream_with_guessed_intrinsics(ort_pipe, given_pipe, real_views):
    """``correction="guess"`` (the default) gives a stream added without a camera exactly the
    correction of :meth:`Camera.guess` for its image size; ``"off"`` and ``"given"`` leave it
    alone; an unknown mode is refused."""

    px = real_views[0][1]
    default = stream(ort_pipe, px, frames=30)
    given_pipe.add_stream("s", 1000, 1000, Camera.guess(1000, 1000))
    explicit, plain = [], stream(given_pipe, px, "p", frames=30)
    try:
        for t in range(30):
            given_pipe.push("s", px[t], timestamp=t / 50)
            explicit.append(given_pipe.tick()["s"])
    finally:
        given_pipe.remove_stream("s")
    np.testing.assert_array_equal(np.stack([r.refined[0] for r in default]), np.stack(explicit))
    assert np.abs(np.stack(explicit) - np.stack([r.refined[0] for r in plain])).max() > 5.0  # mm
    np.testing.assert_array_equal(np.stack([r.lifted[0] for r in default]), np.stack([r.lifted[0] for r in plain]))
    assert ort_pipe.config.correction.mode == "guess"
    with pytest.raises(ValueError, match="correction.mode"):
        Pipeline(backend=TorchBackend.from_checkpoints(), max_streams=1, correction="always")
    with pytest.raises(ValueError, match="image size"):
        Camera.guess(0, 10)
