"""How much do a detector's left/right flips cost, and how much of it does the runtime's check
(posert.runtime.flips) undo?

1. The detector-noise protocol (`video_rate.py`'s streams: the validation or held-out motion
   through the four H36M cameras, at 50 fps and at a camera's rate resampled as `posert run`
   does) with the check on and off, and with the protocol's own flips and limb swaps off (what a
   perfect check could give).
2. The check's decisions against injected flips (1–5 frames every second) on the committed CMU
   take (training motion) through the ring rig, exact 2D and under the protocol's jitter, for
   several ``SEPARATION`` values: mirrored frames undone, and frames flipped that were not.
3. The real BlazePose recordings (``--recording``, as `detector_world_smoothness.py` reads them):
   the frames the check flips back.

    python experiments/left_right_flips.py [--motion val_motion.npz] [--fps 30] [--recording F.npz ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import video_rate
from video_rate import SETTINGS, stream, video_streams

from posert.camera import ring_rig
from posert.config import PipelineConfig
from posert.data import dataset
from posert.data.dataset import NoiseModel, center_on_floor, render
from posert.data.sources import MODEL_FPS, cache_dir
from posert.evaluate import eval_cameras, load_motion
from posert.runtime import flips
from posert.runtime.flips import FlipFilter
from posert.skeleton import FLIP_PERM, blazepose_to_h36m

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_01_01.npz"


def protocol_rows(seqs: dict, fps: float) -> None:
    """Part 1: refined and lifter MPJPE with the check on / off / the protocol without flips."""
    cams = eval_cameras("h36m")
    cfg = PipelineConfig().override(SETTINGS["fixed beta 0.1"] if fps != MODEL_FPS else {})
    original_apply = FlipFilter.apply
    for name, noise, check in (("check on", {}, True), ("check off", {}, False),
                               ("no flips or swaps drawn", {"flip_rate": 0.0, "swap_rate": 0.0}, False)):
        video_rate.NoiseModel = lambda kw=noise: dataset.NoiseModel(**kw)
        FlipFilter.apply = original_apply if check else (lambda self, slots, fr, t: np.zeros(len(slots), bool))
        try:
            o = stream(cfg, video_streams(seqs, cams, fps))
        finally:
            FlipFilter.apply = original_apply
            video_rate.NoiseModel = dataset.NoiseModel
        print(f"{fps:g} fps{' (resampled)' if fps != MODEL_FPS else ''}, {name:24s} lifter "
              f"{o['lifter']['mpjpe']:6.1f} mm | refined {o['refined']['mpjpe']:6.1f} mm, P-MPJPE "
              f"{o['refined']['p_mpjpe']:5.1f}, accel {o['refined']['accel']:6.2f} mm/frame²", flush=True)


def injected_rows(separations: list[float], draws: int = 5) -> None:
    """Part 2: injected flips on the training take, exact 2D and under the protocol's jitter."""
    with np.load(FIXTURE) as z:
        world = center_on_floor(z["cmu_01_01"])
    default = flips.SEPARATION
    for sep in separations:
        flips.SEPARATION = sep
        for label, noisy in (("exact 2D", False), ("jitter", True)):
            inj_n = found = false = frames = 0
            for seed in range(draws if noisy else 1):
                for ci, cam in enumerate(ring_rig()):
                    rng = np.random.default_rng([seed, ci])
                    px, _ = render(world, cam)
                    conf = np.ones(px.shape[:2], np.float32)
                    if noisy:
                        px, conf = NoiseModel(flip_rate=0.0, swap_rate=0.0)(px, rng)
                    T = len(px)
                    inj = np.zeros(T, bool)
                    for s in range(25, T - 10, 50):
                        inj[s:s + rng.integers(1, 6)] = True
                    fr = np.concatenate([px, conf[..., None]], -1).astype(np.float32)
                    fr[inj] = fr[inj][:, FLIP_PERM]
                    ff = FlipFilter(1)
                    f = np.array([ff.apply(np.array([0]), fr[t:t + 1], np.array([t / MODEL_FPS]))[0] for t in range(T)])
                    inj_n, found = inj_n + inj.sum(), found + (f & inj).sum()
                    false, frames = false + (f & ~inj).sum(), frames + T
            print(f"separation {sep:g}, {label:8s}: {found} of {inj_n} mirrored frames undone "
                  f"({found / inj_n:.0%}), {false} of {frames} other frames flipped", flush=True)
    flips.SEPARATION = default


def recording_rows(paths: list[Path]) -> None:
    """Part 3: the frames of real BlazePose tracks that the check flips back."""
    for p in paths:
        with np.load(p) as z:
            lm = z["landmarks"]
            fps = float(z["fps"]) if "fps" in z.files else 30.0
        kp, conf = blazepose_to_h36m(lm[..., :2], lm[..., 2])
        shown = np.isfinite(kp).all(axis=-1)
        fr = np.concatenate([np.nan_to_num(kp), np.where(shown, conf, 0.0)[..., None]], -1).astype(np.float32)
        ff, out = FlipFilter(1), []
        for i in np.flatnonzero(shown.any(axis=1)):
            if ff.apply(np.array([0]), fr[i:i + 1], np.array([i / fps]))[0]:
                out.append(int(i))
        height = float(np.nanmedian(np.ptp(np.where(shown[..., None], kp, np.nan)[..., 1], axis=1)))
        print(f"{p.name}: {len(lm)} frames at {fps:g} fps, a {height:.0f}-px person; flipped back: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--fps", type=float, nargs="+", default=[MODEL_FPS, 30.0])
    ap.add_argument("--separation", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--recording", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    seqs = load_motion(args.motion)
    for fps in args.fps:
        protocol_rows(seqs, fps)
    injected_rows(args.separation)
    recording_rows(args.recording)


if __name__ == "__main__":
    main()
