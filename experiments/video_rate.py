"""Does the correction stage's noise estimate hold on 2D that reaches the models the way a video's
does: detected at the camera's rate and resampled to the models' 50 fps?

`posert run` (and a producer of `posert serve` at another rate) passes a 30 fps detector's 2D
through :class:`posert.video.resample.RateConverter`, which interpolates linearly between
detections. This script renders the validation motion through the four H36M cameras at
``--fps`` (the 3D interpolated to the camera's frame times), corrupts it with the detector-noise
protocol at that rate (:class:`posert.data.dataset.NoiseModel`, whose jitter was measured on a
30 fps video), resamples it as `posert run` does, streams it causally and scores the 50 fps
output against the motion at the model frames' times. The native protocol (`posert eval --noise
detector`: the noise drawn at 50 fps) is run beside it. Each row is one correction setting.

    python experiments/video_rate.py [--motion val_motion.npz] [--fps 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posert.config import PipelineConfig
from posert.data.dataset import NoiseModel, center_on_floor
from posert.data.sources import MODEL_FPS, cache_dir
from posert.evaluate import detector_view, eval_cameras, load_motion, score, stream_views
from posert.runtime import Pipeline
from posert.skeleton import ROOT
from posert.video.resample import RateConverter

SETTINGS = {"default": {}, "pixel noise off": {"correction.pixel_noise": False},
            "fixed beta 0.1": {"correction.lateral_ema": 0.1}, "correction off": {"correction.mode": "off"}}


def at_times(seq: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(T, 17, 3) at 50 fps → (len(t), 17, 3) linearly interpolated at times t (s)."""
    x = np.arange(len(seq)) / MODEL_FPS
    flat = seq.reshape(len(seq), -1)
    return np.stack([np.interp(t, x, flat[:, i]) for i in range(flat.shape[1])], axis=1).reshape(len(t), 17, 3)


def video_streams(seqs: dict, cams: list, fps: float, seed: int = 0, resample: bool = True,
                  detected=None) -> list[dict]:
    """Per (sequence, camera): the 50 fps 2D a video at ``fps`` gives after resampling, and the
    truth at those frames (camera frame, root-relative, mm). ``resample=False``: the detections
    as they come, one per model frame, and the truth at the camera's frame times. ``detected``:
    called with each view's detections at the camera's rate, (px (T, 17, 2), conf (T, 17)) →
    (px, conf), before anything else sees them (a filter of the front-end under test)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, seq in seqs.items():
        world = center_on_floor(seq)
        t_cam = np.arange(int((len(seq) - 1) / MODEL_FPS * fps) + 1) / fps
        world_cam = at_times(world, t_cam)
        for ci, cam in enumerate(cams):
            px, conf, cam3d, _ = detector_view(world_cam, cam, NoiseModel(), rng)
            if detected is not None:
                px, conf = detected(px, conf)
            if not resample:
                out.append({"id": (name, ci), "name": name, "px": px, "conf": conf,
                            "gt": cam3d - cam3d[:, ROOT:ROOT + 1], "size": (cam.width, cam.height)})
                continue
            conv, frames = RateConverter(), []
            for t, k, c in zip(t_cam, px, conf):
                frames += conv(float(t), k, c)
            n = len(frames)
            _, _, cam3d, _ = detector_view(world[:n], cam)
            out.append({"id": (name, ci), "name": name, "px": np.stack([f[1] for f in frames]),
                        "conf": np.stack([f[2] for f in frames]), "gt": cam3d - cam3d[:, ROOT:ROOT + 1],
                        "size": (cam.width, cam.height)})
    return out


def stream(cfg: PipelineConfig, streams: list[dict]) -> dict:
    """Stream every view through one Pipeline, all due streams in one tick; score per sequence."""
    with Pipeline(cfg.override({"max_streams": len(streams)})) as pipe:
        for s in streams:
            pipe.add_stream(s["id"], *s["size"])
        res, _ = stream_views(pipe, [(s["id"], s["px"], s["conf"]) for s in streams], progress=False)
    results = {}
    for name in dict.fromkeys(s["name"] for s in streams):
        mine = [s for s in streams if s["name"] == name]
        n = min(len(s["px"]) for s in mine)
        results[name] = {"lifted": np.stack([res[s["id"]][0][:n] for s in mine]),
                         "refined": np.stack([res[s["id"]][1][:n] for s in mine]),
                         "gt": np.stack([s["gt"][:n] for s in mine]).astype(np.float32),
                         "conf": np.stack([s["conf"][:n] for s in mine])}
    return score(results)["overall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--no-native", action="store_true", help="skip the 50 fps protocol")
    ap.add_argument("--as-detected", action="store_true",
                    help="also push the detections as they come, one per model frame (as posert serve does)")
    args = ap.parse_args()
    seqs, cams = load_motion(args.motion), eval_cameras("h36m")
    protocols = {f"{args.fps:g} fps, resampled": video_streams(seqs, cams, args.fps)}
    if args.as_detected:
        protocols[f"{args.fps:g} fps, as detected"] = video_streams(seqs, cams, args.fps, resample=False)
    if not args.no_native:
        protocols["50 fps"] = video_streams(seqs, cams, MODEL_FPS)
    for proto, streams in protocols.items():
        for name in args.settings:
            o = stream(PipelineConfig().override(SETTINGS[name]), streams)
            print(f"{proto:20s} {name:16s} lifter {o['lifter']['mpjpe']:6.1f} mm, accel {o['lifter']['accel']:6.2f} | "
                  f"refined {o['refined']['mpjpe']:6.1f} mm, P-MPJPE {o['refined']['p_mpjpe']:5.1f}, "
                  f"accel {o['refined']['accel']:6.2f} mm/frame²")


if __name__ == "__main__":
    main()
