"""Video front-end on a real clip: the Sports2D demo's jumping jacks (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posert.skeleton import BLAZEPOSE33_NAMES, BLAZEPOSE33_TO_H36M, BONES, JOINT_NAMES, blazepose_to_h36m, bone_lengths
from posert.video.detect import RecordedDetector, detection_from_blazepose
from posert.video.resample import RateConverter

DATA = Path(__file__).parents[1] / "data"
CLIP = DATA / "sports2d_clip.mp4"
LANDMARKS = DATA / "sports2d_clip_blazepose.npz"

#: Plausible adult bone lengths, mm (Drillis & Contini segment proportions for 1.45–2.0 m, with
#: margin for joint-definition differences between skeletons). Keyed by (parent, child) names.
HUMAN_BONE_MM = {
    "hip": (50, 200), "knee": (250, 560), "ankle": (250, 560), "spine": (120, 350), "thorax": (120, 350),
    "neck": (60, 300), "head": (30, 250), "shoulder": (80, 260), "elbow": (150, 420), "wrist": (120, 360),
}


def _bone_kind(child: str) -> str:
    return child.split("_")[-1]


@pytest.fixture(scope="module")
def landmarks() -> np.ndarray:
    with np.load(LANDMARKS) as z:
        return z["landmarks"]


def test_blazepose_map_is_affine_and_uses_named_landmarks(landmarks):
    assert BLAZEPOSE33_TO_H36M.shape == (17, 33)
    np.testing.assert_allclose(BLAZEPOSE33_TO_H36M.sum(axis=1), 1.0)
    lm = landmarks[30]
    kp, conf = blazepose_to_h36m(lm[:, :2], lm[:, 2])
    idx = {n: i for i, n in enumerate(BLAZEPOSE33_NAMES)}
    np.testing.assert_allclose(kp[0], (lm[idx["left_hip"], :2] + lm[idx["right_hip"], :2]) / 2, atol=1e-4)
    np.testing.assert_allclose(kp[JOINT_NAMES.index("l_wrist")], lm[idx["left_wrist"], :2], atol=1e-4)
    assert conf[0] == pytest.approx(min(lm[idx["left_hip"], 2], lm[idx["right_hip"], 2]))
    # a standing person: head above the nose above the thorax above the pelvis (image y points down)
    y = kp[:, 1]
    assert y[JOINT_NAMES.index("head")] < y[JOINT_NAMES.index("neck")] < y[JOINT_NAMES.index("thorax")] < y[0]
    with pytest.raises(ValueError):
        blazepose_to_h36m(lm[:17, :2], lm[:17, 2])


def test_low_visibility_joints_become_missing(landmarks):
    raw = landmarks[5].copy()
    raw[BLAZEPOSE33_NAMES.index("left_wrist"), 2] = 0.1
    det = detection_from_blazepose(raw, min_visibility=0.3)
    assert det.conf[JOINT_NAMES.index("l_wrist")] == 0.0
    assert det.conf[JOINT_NAMES.index("r_wrist")] > 0.0


def test_rate_converter_30_to_50_fps_interpolates_causally():
    conv = RateConverter(50.0)
    kp = lambda t: np.stack([np.full(17, 100.0 + 300.0 * t), np.full(17, 50.0)], axis=-1)  # linear motion
    out = []
    for i in range(31):  # one second at 30 fps
        conf = np.ones(17, np.float32)
        conf[3] = 0.0 if i == 10 else 1.0
        out += [(i / 30, *o) for o in conv(i / 30, kp(i / 30), conf)]
    taus = np.array([o[1] for o in out])
    np.testing.assert_allclose(taus, np.arange(51) / 50.0, atol=1e-9)  # every 50 fps frame, once
    for t_in, tau, k, c in out:
        assert tau <= t_in + 1e-9  # causal: never a frame from the future
        vis = c > 0
        np.testing.assert_allclose(k[vis], kp(tau)[vis], atol=1e-3)
    # joint 3 is missing at video frame 10 (t = 1/3 s): model frames between frames 9 and 11 lose it
    for _, tau, _k, c in out:
        if 9 / 30 < tau < 11 / 30:
            assert c[3] == 0.0
    with pytest.raises(ValueError):
        conv(0.5, kp(0.5), np.ones(17))  # time went back


def test_resampled_video_2d_takes_the_fallback_beta(landmarks, motion, cameras):
    """Detections resampled to 50 fps share their jitter between interpolated frames, and the
    adaptive β's noise estimate reads them as more precise than they are: the CMU take seen at
    25 fps with the detector protocol's jitter (σ 2.6 px on the torso … 17.4 px on the wrists and
    ankles, no flips or outliers) reads σ̂ 1.6 px resampled, against 4.7 px for the same
    detections pushed one per frame (measured). The correction then follows the jitter.
    ``config_for_rate`` gives such 2D the fallback β, and on the committed clip's BlazePose track
    the refined pose is smoother (measured 19.8 against 26.3 mm/frame² at 50 fps). At 50 fps, and
    with a fixed β, the config is kept."""
    from posert.config import PipelineConfig
    from posert.data.dataset import NoiseModel, center_on_floor, render
    from posert.metrics import accel_error
    from posert.runtime import Pipeline
    from posert.video.resample import config_for_rate

    cam = cameras[0]
    px, _ = render(center_on_floor(motion)[::2], cam)  # 25 fps
    px, conf = NoiseModel(scale=(1.0, 1.0), flip_rate=0.0, swap_rate=0.0, p_outlier=0.0, p_drop=0.0)(
        px, np.random.default_rng(0))
    conv, sigma_of = RateConverter(), {}
    for name, fr in (("detections", [(i / 50.0, k, c) for i, (k, c) in enumerate(zip(px, conf))]),
                     ("resampled", [f for i, (k, c) in enumerate(zip(px, conf)) for f in conv(i / 25.0, k, c)])):
        with Pipeline(max_streams=1) as pipe:
            pipe.add_stream("take", cam.width, cam.height)
            for t, k, c in fr:
                pipe.push("take", k, c, t)
                pipe.tick()
            sigma_of[name] = pipe.keypoint_noise("take")
    assert sigma_of["resampled"] < 0.5 * sigma_of["detections"]

    dets = [detection_from_blazepose(raw) for raw in landmarks]
    conv, frames = RateConverter(), []
    for i, det in enumerate(dets):
        frames += conv(i / 30.0, det.kp2d, det.conf)
    out, sigma = {}, {}
    for name, cfg in (("auto", PipelineConfig()), ("video", config_for_rate(None, 30.0))):
        with Pipeline(cfg, max_streams=1) as pipe:
            pipe.add_stream("clip", 320, 240)
            refined = []
            for t, kp, conf in frames:
                pipe.push("clip", kp, conf, t)
                refined.append(pipe.tick().refined[0].copy())
            sigma[name] = pipe.keypoint_noise("clip")
        out[name] = np.stack(refined)[10:]  # past the first frames' start-up
    assert np.isnan(sigma["video"])  # a fixed β: no estimate is kept
    assert np.isfinite(out["video"]).all()
    own_accel = {k: accel_error(p, np.zeros_like(p)) for k, p in out.items()}  # against a still pose
    assert own_accel["video"] < 0.9 * own_accel["auto"]
    assert config_for_rate(None, 30.0).correction.lateral_ema == PipelineConfig().correction.noise_fallback
    assert config_for_rate(None, 50.0) == PipelineConfig()
    fixed = PipelineConfig().override({"correction.lateral_ema": 0.3})
    assert config_for_rate(fixed, 25.0) is fixed
    with pytest.raises(ValueError, match="fps"):
        config_for_rate(None, 0.0)


def test_recorded_detector_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, landmarks=np.zeros((4, 17, 3), np.float32))
    with pytest.raises(ValueError, match="33"):
        RecordedDetector(bad)


@pytest.mark.slow
def test_run_video_on_real_clip(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v3 as iio

    from posert.video.run import STAGES, run_video

    run = run_video(CLIP, out_mp4=tmp_path / "out.mp4", out_json=tmp_path / "out.json", out_png=tmp_path / "out.png",
                    detector=RecordedDetector(LANDMARKS), progress=False)
    assert run.frames == 60 and run.fps == pytest.approx(30.0) and run.size == (320, 240)
    assert run.detected.all()  # the person is found in every frame
    assert run.model_frames == 99  # 59/30 s at 50 fps, plus the first frame
    assert np.all(np.isfinite(run.refined)) and np.all(np.isfinite(run.lifted))
    np.testing.assert_allclose(run.refined[:, 0], 0.0, atol=1e-3)  # root-relative
    lengths = np.median(bone_lengths(run.refined), axis=0)
    for (p, c), mm in zip(BONES, lengths):
        lo, hi = HUMAN_BONE_MM[_bone_kind(JOINT_NAMES[c])]
        assert lo <= mm <= hi, f"{JOINT_NAMES[p]}–{JOINT_NAMES[c]}: {mm:.0f} mm outside [{lo}, {hi}]"
    # jumping jacks: the wrists go above the head and come down again, in 3D as in 2D (y down)
    wrist_over_head = run.refined[:, [13, 16], 1].min(axis=1) - run.refined[:, 10, 1]
    assert wrist_over_head.min() < -50 and wrist_over_head.max() > 300
    # outputs
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(STAGES) <= set(report["latency_ms"])
    assert report["frames_with_person"] == 60 and len(report["frames"]) == 60
    assert np.array(report["frames"][-1]["refined_mm"]).shape == (17, 3)
    # a 30 fps clip is resampled: the correction ran with the fallback β (config_for_rate)
    assert report["config"]["correction"]["lateral_ema"] == pytest.approx(0.1)
    # the detector mirrors this small person now and then; the pipeline flipped those frames back
    assert report["unflipped_model_frames"] == run.unflipped_frames >= 10
    # the joints each pose's frame showed: the BlazePose visibilities the pipeline kept
    np.testing.assert_array_equal(np.array([f["seen"] for f in report["frames"]], bool), run.conf > 0)
    video = iio.imread(tmp_path / "out.mp4", plugin="FFMPEG")
    assert video.shape[0] == 60 and video.shape[1] == 480
    sheet = iio.imread(tmp_path / "out.png")
    assert sheet.ndim == 3 and sheet.shape[1] == 1400


def test_run_video_missing_file_is_a_clear_error(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    from posert.video.run import run_video

    with pytest.raises(FileNotFoundError):
        run_video(tmp_path / "nope.mp4", detector=RecordedDetector(LANDMARKS), progress=False)


def test_mediapipe_front_end_matches_the_recording(landmarks):
    pytest.importorskip("mediapipe", reason="MediaPipe is not installed (pip install 'posert[video]')")
    import imageio.v3 as iio

    from posert.video.detect import MediaPipePose

    det = MediaPipePose()
    found = []
    for i, frame in enumerate(iio.imiter(CLIP, plugin="FFMPEG")):
        d = det(frame)
        found.append(d is not None)
        if d is not None:
            assert np.abs(d.raw[:, :2] - landmarks[i, :, :2]).mean() < 3.0  # px
    det.close()
    assert sum(found) >= 57


def test_bad_detections_never_reach_the_pipeline(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    from posert.video.detect import Detection
    from posert.video.run import run_video

    replay = RecordedDetector(LANDMARKS)

    def flaky(frame):
        det = replay(frame)
        i = replay._i
        if i % 10 == 3:
            det.kp2d[13] = np.nan  # NaN on a joint reported as visible
            det.conf[16] = 7.0  # out-of-range confidence
        if i % 10 == 7:
            return Detection(det.kp2d, np.zeros(17, np.float32))  # nothing visible: no person
        return det

    run = run_video(CLIP, detector=flaky, progress=False)
    assert np.all(np.isfinite(run.refined[run.detected]))
    assert run.detected.sum() == 54 and run.conf[2, 13] == 0.0 and run.conf[2, 16] == 1.0
    with pytest.raises(ValueError, match="kp2d"):
        run_video(CLIP, detector=lambda f: Detection(np.zeros((33, 2)), np.ones(33)), progress=False)


def test_run_with_a_calibration_reports_world_frame_poses(tmp_path, capsys):
    """`posert run --calib` on the committed clip with its (assumed, level) calibration: the JSON
    says the camera was oriented and carries world-frame poses (z up) that are the camera-frame
    poses turned by the calibration's R; the jumping person stands upright in it."""
    pytest.importorskip("imageio_ffmpeg")
    from posert.camera import load_calibration
    from posert.cli import main

    calib = Path(__file__).parents[1] / "data" / "sports2d_clip_calib.yaml"
    out = tmp_path / "run.json"
    assert main(["run", "--video", str(CLIP), "--detections", str(LANDMARKS), "--calib", str(calib),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["camera"] == "oriented" and "world_mm" in report["units"]
    cam = np.array([f["refined_mm"] for f in report["frames"]])
    world = np.array([f["world_mm"] for f in report["frames"]])
    R = load_calibration(calib).R
    np.testing.assert_allclose(world, cam @ R, atol=0.02)  # mm: the JSON's 2-decimal rounding
    head_above_pelvis = world[:, 10, 2] - world[:, 0, 2]
    assert np.all(head_above_pelvis > 400)  # upright, world z up
    bad = tmp_path / "wrong_size.yaml"
    bad.write_text(calib.read_text().replace("image_width: 320", "image_width: 640"))
    assert main(["run", "--video", str(CLIP), "--detections", str(LANDMARKS), "--calib", str(bad)]) == 1
    assert "640×240" in capsys.readouterr().err


def test_a_stand_in_camera_processes_the_newest_frame_and_counts_the_rest(tmp_path):
    """The committed clip read at its own 30 fps as a camera delivers it, through a front-end
    slower than a frame period (50 ms): only the newest frame is processed, the frames it missed
    are dropped and counted, nothing queues (capture → 3D stays about one processing time)."""
    pytest.importorskip("imageio_ffmpeg")
    import time as _time

    from posert.video.run import run_video

    recorded = RecordedDetector(LANDMARKS)

    class Slow:
        name = "recorded, 50 ms"

        def __call__(self, frame):
            _time.sleep(0.05)
            return recorded(frame)

    run = run_video(CLIP, detector=Slow(), realtime=True, progress=False, out_json=tmp_path / "live.json")
    assert run.live and run.frames + run.dropped_frames == 60
    assert 15 <= run.frames <= 45 and run.dropped_frames >= 15  # ~50 ms per frame against 33 ms frames
    idx = run.source_index
    assert np.all(np.diff(idx) >= 1) and idx.max() >= 55  # newest first, to the clip's end
    assert np.nanpercentile(run.capture_ms, 99) < 200  # ms: no queue builds up
    report = json.loads((tmp_path / "live.json").read_text())
    assert report["live"]["dropped_frames"] == run.dropped_frames
