"""Output a robot can trust (docs/design.md, "Trust"): the input contract, per-stream state that
never outlives its stream, restarts, the output guard, batch invariance, one driving thread, and
the roaming stress protocol, on real motion through the committed models."""

import threading

import numpy as np
import pytest

from posert.camera import ring_rig
from posert.config import GuardConfig, PipelineConfig
from posert.roaming import roaming_protocol
from posert.runtime import Pipeline
from posert.runtime.guard import Guard, GuardState, Health, guard_reference, impossible
from posert.skeleton import REFERENCE_BONES_MM, STANDING_POSE_MM


def _pipe(backend="native", streams=6, **kw):
    return Pipeline(backend=backend, max_streams=streams, threads=1, workers=1, **kw)


def _run(pipe, sid, px, conf=None, t0=0, add=True):
    """Stream px (T, 17, 2) into stream ``sid`` from frame t0; returns its (refined, lifted, health)."""
    if add:
        pipe.add_stream(sid, 1000, 1000)
    out = []
    for t in range(len(px)):
        pipe.push(sid, px[t], None if conf is None else conf[t], (t0 + t) / 50)
        r = pipe.tick()
        i = r.stream_ids.index(sid)
        out.append((r.refined[i].copy(), r.lifted[i].copy(), r.health[i]))
    return [np.array(x) for x in zip(*out)]


def test_roaming_take_never_gives_a_non_finite_or_impossible_pose():
    """The committed CMU take carried along the roaming path (it walks behind every camera of the
    ring and 6.5 m out) with blackouts: every reported pose finite and possible, the frames out of
    view coasted and counted, every long absence a restart, back to a fresh stream's (or to the
    blackout-free stream's) accuracy within 0.5 s."""
    from tests.conftest import DATA

    with np.load(DATA / "cmu_01_01.npz") as z:
        motion = z["cmu_01_01"]
    rep = roaming_protocol({"cmu_01_01": motion}, ring_rig(), PipelineConfig().override({"backend.threads": 1}))
    assert rep["refined_nonfinite"] == rep["refined_impossible"] == rep["lifter_nonfinite"] == 0
    assert rep["lifter_impossible"] > 0  # the lifter alone does give impossible poses here: the guard is tested
    assert rep["health"]["coasting"] == rep["out_frames"] > 0.2 * rep["frames"]  # out of view: coasting, counted
    assert rep["health"]["no_pose"] == 0 and rep["restarts"] >= rep["view"]["returns"] >= 3
    for kind in ("blackout", "view"):
        assert rep[kind]["returns"] >= 3 and rep[kind]["recovery_max_s"] <= 0.5, (kind, rep[kind])
    assert rep["mpjpe_in_view"] < 150  # mm


def test_keypoints_beyond_float32_are_refused_and_a_reused_slot_starts_clean(real_views):
    """1e300 px (inf in float32) and 1e39 px are refused before anything is written; NaN on missing
    joints is ignored; a new stream in a removed stream's slot gives exactly what it gives in a
    fresh pipeline."""
    px = real_views[0]
    with _pipe() as pipe, _pipe() as fresh:
        pipe.add_stream("a", 1000, 1000)
        for t in range(10):
            kp, conf = px[0, t].copy(), np.ones(17, np.float32)
            kp[5], conf[5] = np.nan, 0.0  # a missing joint's coordinates may be anything
            pipe.push("a", kp, conf, t / 50)
            pipe.tick()
        for huge in (1e300, 1e39, -np.inf):
            kp = px[0, 10].astype(np.float64)
            kp[2, 0] = huge
            with pytest.raises(ValueError, match="NaN/inf|beyond float32"):
                pipe.push("a", kp, timestamp=10 / 50)
        assert pipe.stream_info("a").frames == 10
        pipe.remove_stream("a")
        got = _run(pipe, "b", px[1, :30])
        want = _run(fresh, "b", px[1, :30])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_any_hashable_is_a_stream_id_and_none_does_not_collide(real_views):
    px = real_views[0]
    ids = [None, 0, ("cam", 1), "a"]
    with _pipe() as pipe:
        for s in ids:
            pipe.add_stream(s, 1000, 1000)
        with pytest.raises(ValueError, match="exists"):
            pipe.add_stream(None, 1000, 1000)
        with pytest.raises(TypeError):
            pipe.add_stream(["unhashable"], 1000, 1000)
        for t in range(3):
            pipe.push_many(ids, px[:, t], None, [t / 50] * len(ids))
            r = pipe.tick()
            assert r.stream_ids == ids and len({r.refined[i].tobytes() for i in range(len(ids))}) == len(ids)
        assert pipe.stream_info(None).frames == 3 and pipe.stream_info(None).slot == 0
        pipe.remove_stream(None)
        with pytest.raises(KeyError):
            pipe.push(None, px[0, 3])
        assert pipe.streams == [0, ("cam", 1), "a"]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool, np.complex64, object, np.float16])
def test_non_float_keypoints_or_confidences_are_a_type_error(real_views, dtype):
    kp = real_views[0][0, 0]
    with _pipe() as pipe:
        pipe.add_stream("a", 1000, 1000)
        with pytest.raises(TypeError, match="float32 or float64"):
            pipe.push("a", kp.astype(dtype))
        with pytest.raises(TypeError, match="float32 or float64"):
            pipe.push("a", kp, np.ones(17, dtype))
        pipe.push("a", kp.tolist())  # a list of Python floats is float64
        assert len(pipe.tick()) == 1


def test_one_thread_drives_a_pipeline(real_views):
    kp = real_views[0][0, 0]
    errors = []
    with _pipe() as pipe:
        pipe.add_stream("a", 1000, 1000)

        def other():
            try:
                pipe.push("a", kp, timestamp=0.0)
            except RuntimeError as e:
                errors.append(str(e))

        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert errors and "another thread" in errors[0]
        assert pipe.stream_info("a").frames == 0 and len(pipe.tick()) == 0  # nothing was pushed

        def adopt_and_push():
            pipe.adopt()
            pipe.push("a", kp, timestamp=0.0)
            errors.append(len(pipe.tick()))

        th = threading.Thread(target=adopt_and_push)
        th.start()
        th.join()
        assert errors[-1] == 1
        with pytest.raises(RuntimeError, match="another thread"):
            pipe.tick()


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_a_streams_output_does_not_depend_on_its_neighbours(real_views, backend):
    """Bit for bit: stream 'a' alone in slot 0, and in slot 3 among five busy streams that come,
    go and tick at other rates."""
    px = real_views[0]
    with _pipe(backend) as alone:
        want = _run(alone, "a", px[0, :40])
    with _pipe(backend) as busy:
        for s in "wxy":
            busy.add_stream(s, 1000, 1000)
        busy.add_stream("a", 1000, 1000)
        busy.add_stream("z", 1000, 1000)
        got = []
        for t in range(40):
            ids = ["a"] + [s for k, s in enumerate("wxyz") if (t + k) % (k + 1) == 0 and s in busy.streams]
            busy.push_many(ids, np.stack([px[k % 4, t] for k in range(len(ids))]), None, [t / 50] * len(ids))
            r = busy.tick()
            i = r.stream_ids.index("a")
            got.append((r.refined[i].copy(), r.lifted[i].copy(), r.health[i]))
            if t == 20:
                busy.remove_stream("w")
        got = [np.array(x) for x in zip(*got)]
    assert busy.config.refiner.cnd_mean  # the CND mean's shift is the batched step that once mixed rows
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_stream_back_after_a_long_absence_is_a_fresh_stream(real_views):
    """Out of view longer than restart_after_s (every joint missing): the stream coasts (health
    COASTING, not valid), then restarts (RESET) and gives exactly what a new stream gives."""
    px = real_views[0][2]
    conf = np.ones((120, 17), np.float32)
    conf[40:80] = 0.0  # 0.8 s with nobody in view
    with _pipe() as pipe, _pipe() as fresh:
        pipe.add_stream("a", 1000, 1000)
        health, valid = [], []
        for t in range(120):
            pipe.push("a", px[t], conf[t], t / 50)
            r = pipe.tick()
            health.append(r.health[0])
            valid.append(r.valid[0])
            if t >= 80:
                valid[-1] = (valid[-1], r.refined[0].copy())
        info = pipe.stream_info("a")
        want = _run(fresh, "b", px[80:120], t0=80)[0]
    assert np.all(np.array(health[40:80]) == Health.COASTING) and not any(valid[40:80])
    assert health[80] == Health.RESET and all(h == Health.OK for h in health[81:])
    assert info.coasted == 40 and info.restarts == 1 and info.frames == 120
    np.testing.assert_array_equal(np.array([v[1] for v in valid[80:]]), want)


def test_keypoints_far_outside_the_image_are_missing_and_counted(real_views):
    """A visible joint more than view_margin image sizes outside the image is taken as missing: the
    same output as that joint pushed with confidence 0, counted in TickResult.dropped, and
    reported as not seen (TickResult.seen)."""
    px = real_views[0][1, :20]
    far, conf = px.copy(), np.ones((20, 17), np.float32)
    far[10:, 4] = (-2500.0, 400.0)  # 2.5 image widths left of the image, "visible"
    conf[10:, 4] = 0.0
    with _pipe() as a, _pipe() as b:
        a.add_stream("s", 1000, 1000)
        dropped, seen = [], []
        out_a = []
        for t in range(20):
            a.push("s", far[t], timestamp=t / 50)
            r = a.tick()
            dropped.append(int(r.dropped[0]))
            seen.append(r.seen[0].copy())
            out_a.append(r.refined[0].copy())
        out_b = _run(b, "s", px, conf)[0]
        assert a.stream_info("s").dropped_joints == 10
    assert dropped == [0] * 10 + [1] * 10
    np.testing.assert_array_equal(np.array(seen), conf > 0)
    np.testing.assert_array_equal(np.array(out_a), out_b)


def test_guard_kernel_equals_its_numpy_definition(real_views, models):
    """posert._C.GuardKernel against runtime.guard.guard_reference on real lifted poses made
    impossible in every way the guard knows: a head a metre from its neck, a NaN, a joint 3 m
    out (refined and lifted: shortened back), a whole pose at 1e30 (no pose: the last valid one);
    then the state it keeps."""
    import torch

    from posert.data.dataset import make_input

    px = real_views[0]
    inp = np.stack([make_input(px[c, :27], np.ones((27, 17), np.float32), 1000, 1000) for c in range(4)])
    with torch.no_grad():
        poses = models[0](torch.from_numpy(inp)).numpy()[:, -6:] * 1000  # (4, 6, 17, 3) mm
    cfg = GuardConfig()
    kernel, ref_state = Guard(cfg, 5), GuardState.allocate(5)
    slots = np.array([3, 0, 4, 1], np.int64)
    rng = np.random.default_rng(0)
    seen_health = set()
    for t in range(6):
        refined = (poses[:, t] + rng.normal(0, 20, poses[:, t].shape)).astype(np.float32)
        lifted = poses[:, t].astype(np.float32).copy()
        conf = (rng.random((4, 17)) > 0.1).astype(np.float32)
        health = np.array([Health.OK, Health.COASTING, Health.OK, Health.RESET], np.uint8)
        if t >= 1:
            refined[0, 10] = refined[0, 9] + (0, -1000, 0)  # the head a metre above the neck: repaired
        if t >= 2:
            refined[1, 3] = np.nan  # not finite: the lifter's pose instead
        if t >= 3:
            refined[2, 16] += 3000
            lifted[2, 16] += 3000  # a forearm 3 m long: the refined pose is shortened back
        if t == 4:
            refined[3], lifted[3] = 1e30, 1e30
        args = [refined, lifted, conf, slots, health]
        mine = [a.copy() for a in args]
        refit = kernel.apply(*args)
        want = guard_reference(*mine, ref_state, cfg)
        np.testing.assert_array_equal(refit, want)
        for g, w in zip(args, mine):
            np.testing.assert_array_equal(g, w)
        for f in ("bone_ref", "bone_n", "last", "has_last"):
            np.testing.assert_allclose(getattr(kernel.state, f), getattr(ref_state, f), rtol=1e-12, err_msg=f)
        assert not impossible(refined).any() and np.isfinite(lifted).all()
        seen_health |= set(health.tolist())
    assert seen_health == {Health.OK, Health.COASTING, Health.RESET, Health.NO_POSE}
    bones = np.linalg.norm(refined[0, 10] - refined[0, 9])
    assert bones <= 2 * REFERENCE_BONES_MM[9] * (1 + 1e-6)
    assert np.array_equal(kernel.state.last[slots[2]], refined[2])  # its last valid pose: the repaired one


def test_correction_divergence_clears_the_slot_and_keeps_the_refiners_pose(real_views, models):
    """A slot whose correction state left human bounds (a 100 m lateral offset) is cleared as
    CorrectionState.reset clears it (its camera kept), its pose is the refiner's, and the row is
    flagged; the other row is corrected as usual."""
    from posert.runtime.correction import Correction
    from posert.runtime.correction.state import CorrectionState

    cams = ring_rig()
    corr = Correction(PipelineConfig().correction, 3)
    for s in range(2):
        corr.attach(s, 1000, 1000, cams[s])
    px = real_views[0]
    pose = np.tile(STANDING_POSE_MM.astype(np.float32), (2, 1, 1))
    slots = np.array([0, 1])
    count = np.full(3, 50, np.int64)  # a stream 1 s old: its Δ̄ moves by β, not replaced
    corr.store(slots, px[:2, 0].astype(np.float64), np.ones((2, 17)))
    corr.state.lateral[1] = 1e5
    out = pose.copy()
    reset = corr.apply(out, slots, count)
    assert reset is not None and reset.tolist() == [False, True]
    np.testing.assert_array_equal(out[1], pose[1])
    assert not np.array_equal(out[0], pose[0])
    want = CorrectionState.allocate(3)
    want.reset(1, corr.state.K[1], corr.state.dist[1])
    for f in ("lateral", "bone_length", "bone_count", "bone_delta", "noise_var", "pixel_var", "distance"):
        np.testing.assert_array_equal(getattr(corr.state, f)[1], getattr(want, f)[1], err_msg=f)


def test_a_hidden_arm_keeps_the_bones_it_was_last_shown_with(real_views):
    """The bone hold (posert.runtime.hold): while a walker's right elbow and wrist are hidden, each
    hangs from its parent by the bone vector of the last frame that showed it, nearer the truth
    than the lifter's own guess of those frames; the joints shown are untouched by it, and a new
    stream in the same slot starts without the old stream's bones."""
    px, gt = real_views
    conf = np.ones((60, 17), np.float32)
    conf[30:, [15, 16]] = 0.0
    with _pipe(streams=1) as a:
        refined, lifted, _ = _run(a, "s", px[0, :60], conf)
        a.remove_stream("s")
        fresh, fresh_lifted, _ = _run(a, "t", px[0, :60], conf)  # the same slot, a new stream
    for j, p in ((15, 14), (16, 15)):
        want = refined[29, j] - refined[29, p]
        np.testing.assert_allclose(refined[30:, j] - refined[30:, p], np.broadcast_to(want, (30, 3)), atol=1e-3)
    truth = gt[0, 30:60, 15:17] * 1000.0
    held = np.linalg.norm(refined[30:, 15:17] - truth, axis=-1).mean()
    guessed = np.linalg.norm(lifted[30:, 15:17] - truth, axis=-1).mean()
    assert held < guessed
    np.testing.assert_array_equal(fresh, refined)  # nothing of stream "s" was held over into "t"
