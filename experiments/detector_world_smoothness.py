"""How smooth is posert's 3D on real video, against the 3D the detector itself gives (MediaPipe's
world landmarks)?

No 3D truth exists for the clip, so this measures what can be measured without it: each
output's own acceleration (the mean per-joint norm of its second difference between consecutive
video frames, mm/frame²), its high-frequency residual (the distance to a 9-frame quadratic
Savitzky–Golay fit over the longest run of frames with a person), and how far posert and
MediaPipe agree (P-MPJPE between them). MediaPipe's world landmarks are mapped to H36M-17
(:func:`posert.skeleton.blazepose_to_h36m`) and made root-relative, in mm.

The landmarks come from a recording with ``landmarks`` (F, 33, 3) (pixels x, y and visibility,
NaN rows without a person, as ``posert run --record`` writes) and ``world`` (F, 33, 4) (metres
and visibility). Without ``--recording`` the script makes one with MediaPipe (the video
extra, ``mediapipe==0.10.21``, complexity 1, video mode) into experiments/out/. posert replays the
2D of the recording (:class:`posert.video.detect.RecordedDetector`), so both see the same
detections.

    python experiments/detector_world_smoothness.py [--video demo] [--recording F.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.signal import savgol_filter

from posert.metrics import accel_error, p_mpjpe
from posert.skeleton import ROOT, blazepose_to_h36m
from posert.video.detect import RecordedDetector
from posert.video.run import demo_video, open_video, run_video

OUT = Path(__file__).parent / "out"


def record(video: Path, dst: Path) -> None:
    """MediaPipe BlazePose on every frame of ``video``: pixel landmarks and world landmarks."""
    import mediapipe as mp

    pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, enable_segmentation=False,
                                  min_detection_confidence=0.5, min_tracking_confidence=0.5)
    frames, _, _ = open_video(video)
    px, world = [], []
    for rgb in frames:
        h, w = rgb.shape[:2]
        res = pose.process(np.ascontiguousarray(rgb))
        if res.pose_landmarks is None:
            px.append(np.full((33, 3), np.nan, np.float32))
            world.append(np.full((33, 4), np.nan, np.float32))
            continue
        px.append([[p.x * w, p.y * h, p.visibility] for p in res.pose_landmarks.landmark])
        world.append([[p.x, p.y, p.z, p.visibility] for p in res.pose_world_landmarks.landmark])
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, landmarks=np.asarray(px, np.float32), world=np.asarray(world, np.float32),
             detector=np.array("mediapipe-blazepose-1"))


def own_accel(p: np.ndarray) -> float:
    """(F, 17, 3) mm, NaN where none → the acceleration against a still pose, over the triples
    of consecutive frames that all hold one."""
    return accel_error(p, np.zeros_like(p), valid=np.isfinite(p).all(axis=(1, 2)))


def residual(p: np.ndarray) -> float:
    """Mean per-joint distance to a 9-frame quadratic Savitzky–Golay fit, longest finite run."""
    ok = np.isfinite(p).all(axis=(1, 2))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    q = p[starts[k]:ends[k]]
    return float(np.linalg.norm(q - savgol_filter(q, 9, 2, axis=0), axis=-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default="demo", help="video file, or 'demo' for the Sports2D demo clip")
    ap.add_argument("--recording", type=Path, help="landmarks + world landmarks (.npz); made with MediaPipe if absent")
    args = ap.parse_args()
    video = demo_video() if args.video == "demo" else Path(args.video)
    rec = args.recording or OUT / f"{video.stem}_mediapipe_world.npz"
    if not rec.exists():
        record(video, rec)
    with np.load(rec) as z:
        world = z["world"]
    run = run_video(video, detector=RecordedDetector(rec), progress=False)
    mp3d, _ = blazepose_to_h36m(world[..., :3], world[..., 3])
    mp3d = (mp3d.astype(np.float64) - mp3d[:, ROOT:ROOT + 1]) * 1000.0
    person = run.detected[:, None, None]
    outputs = {"posert refined": np.where(person, run.refined, np.nan),
               "posert lifter": np.where(person, run.lifted, np.nan), "MediaPipe world": mp3d}
    print(f"{video.name}: {run.frames} frames at {run.fps:g} fps, a person in {int(run.detected.sum())}; "
          f"correction β {run.config['correction']['lateral_ema']}")
    for name, p in outputs.items():
        print(f"  {name:16s} own acceleration {own_accel(p):6.2f} mm/frame², high-frequency residual "
              f"{residual(p):5.1f} mm")
    both = np.isfinite(outputs["posert refined"]).all(axis=(1, 2)) & np.isfinite(mp3d).all(axis=(1, 2))
    print(f"  MediaPipe / posert own acceleration: "
          f"{own_accel(mp3d) / own_accel(outputs['posert refined']):.2f}; P-MPJPE between them on "
          f"{int(both.sum())} frames: {p_mpjpe(outputs['posert refined'][both], mp3d[both]):.1f} mm")


if __name__ == "__main__":
    main()
