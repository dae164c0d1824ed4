"""What a real detector's 2D track looks like, beside the detector-noise protocol of training and
``posert eval`` (:class:`posert.data.dataset.NoiseModel`).

For each BlazePose landmark recording (``posert run --record FILE``; the committed clip's is
tests/data/sports2d_clip_blazepose.npz), mapped to H36M-17 (:func:`posert.skeleton.blazepose_to_h36m`),
over the runs of frames with a person:

- the residual after a 9-frame quadratic Savitzky–Golay fit, per joint group: RMS per coordinate
  in px and per 1,000 px of the person's height (the jitter, plus motion the fit cannot follow);
- the residual's lag-1 autocorrelation (≈ 0: white, as the protocol assumes);
- the confidence (the lowest visibility of a joint's landmarks): 5th, 50th, 95th percentile;
- left/right swaps: a joint pair (hips, knees, ankles, shoulders, elbows, wrists) whose exchange
  brings both joints within half their own motion of the previous frame's; a frame where 4 or more
  of the 6 pairs swap at once is a whole-body flip (the detector took the person's front for the
  back, or back again), fewer is a limb swap;
- person switches: a pelvis jump of more than half the person's height in one frame.

With ``--motion`` the detector-noise protocol of training and ``posert eval`` is measured the same
way, on the validation motion through the four H36M cameras (dropout off: it is not a detector's).

    python experiments/detector_track.py tests/data/sports2d_clip_blazepose.npz [more.npz] [--motion val.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.signal import savgol_filter

from posert.skeleton import JOINT_NAMES, LEFT, RIGHT, blazepose_to_h36m

GROUPS = {
    "torso (pelvis, spine, thorax)": ["pelvis", "spine", "thorax"],
    "head (neck, head)": ["neck", "head"],
    "hips, shoulders": ["l_hip", "r_hip", "l_shoulder", "r_shoulder"],
    "knees, elbows": ["l_knee", "r_knee", "l_elbow", "r_elbow"],
    "ankles, wrists": ["l_ankle", "r_ankle", "l_wrist", "r_wrist"],
}


def runs(valid: np.ndarray, min_len: int = 9) -> list[slice]:
    """Slices of consecutive True frames at least ``min_len`` long."""
    out, start = [], None
    for t, v in enumerate(np.append(valid, False)):
        if v and start is None:
            start = t
        elif not v and start is not None:
            if t - start >= min_len:
                out.append(slice(start, t))
            start = None
    return out


def load_track(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A BlazePose landmark recording as H36M-17: px (F, 17, 2), conf (F, 17)."""
    with np.load(path) as z:
        lm = z["landmarks"].astype(np.float64)  # (F, 33, 3): x, y px, visibility
    return blazepose_to_h36m(lm[..., :2], lm[..., 2])


def track_stats(px: np.ndarray, conf: np.ndarray) -> dict:
    """The statistics above for one track: px (F, 17, 2) H36M-17 pixels, NaN where no person."""
    px = px.astype(np.float64)
    names = list(JOINT_NAMES)
    valid = np.isfinite(px).all(axis=(1, 2))
    height = np.nanmedian(np.ptp(px[valid][..., 1], axis=1))
    res, ac1 = {g: [] for g in GROUPS}, {g: [] for g in GROUPS}
    flips = limb_swaps = switches = frames = 0
    for s in runs(valid):
        seg = px[s]
        frames += len(seg)
        smooth = savgol_filter(seg, 9, 2, axis=0)
        r = seg - smooth
        for g, joints in GROUPS.items():
            idx = [names.index(j) for j in joints]
            res[g].append(r[:, idx].ravel())  # per coordinate, as the protocol's σ
            for j in idx:
                for d in range(2):
                    x = r[:, j, d] - r[:, j, d].mean()
                    if x.std() > 0:
                        ac1[g].append(float(np.corrcoef(x[:-1], x[1:])[0, 1]))
        for t in range(1, len(seg)):
            a, b = seg[t], seg[t - 1]
            if np.linalg.norm(a[0] - b[0]) > 0.5 * height:
                switches += 1
                continue
            swapped = 0
            for lj, rj in zip(LEFT, RIGHT):
                keep = np.linalg.norm(a[lj] - b[lj]) + np.linalg.norm(a[rj] - b[rj])
                cross = np.linalg.norm(a[lj] - b[rj]) + np.linalg.norm(a[rj] - b[lj])
                swapped += cross < 0.5 * keep
            flips += swapped >= 4
            limb_swaps += 0 < swapped < 4
    c = conf[valid]
    return {
        "frames": int(len(px)), "with_person": int(valid.sum()), "scored": frames, "height_px": float(height),
        "residual_px": {g: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for g, v in res.items() if v},
        "lag1": {g: float(np.median(v)) for g, v in ac1.items() if v},
        "confidence_p5_p50_p95": [float(q) for q in np.percentile(c, [5, 50, 95])],
        "flips": flips, "limb_swaps": limb_swaps, "person_switches": switches,
    }


def protocol_track(motion: Path) -> tuple[np.ndarray, np.ndarray]:
    """The detector-noise protocol (:class:`posert.data.dataset.NoiseModel`, as ``posert eval
    --noise detector`` applies it: one draw per sequence and camera) on the validation motion
    through the four H36M cameras, as one track with a missing frame between the pieces."""
    from posert.data.dataset import NoiseModel, center_on_floor
    from posert.evaluate import detector_view, eval_cameras

    rng, pieces, confs = np.random.default_rng(0), [], []
    with np.load(motion) as z:
        for k in z.files:
            world = center_on_floor(z[k])
            for cam in eval_cameras("h36m"):
                px, conf, _, _ = detector_view(world, cam, NoiseModel(p_drop=0.0), rng)
                pieces += [px, np.full((1, 17, 2), np.nan)]
                confs += [conf, np.zeros((1, 17))]
    return np.concatenate(pieces), np.concatenate(confs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", type=Path, nargs="+")
    ap.add_argument("--motion", type=Path, help="the validation motion: measure the protocol the same way")
    args = ap.parse_args()
    tracks = [(path.name, *load_track(path)) for path in args.recordings]
    if args.motion:
        tracks.append(("the detector-noise protocol on " + args.motion.name, *protocol_track(args.motion)))
    for name, px, conf in tracks:
        st = track_stats(px, conf)
        k = 1000.0 / st["height_px"]
        print(f"{name}: {st['frames']} frames, a person in {st['with_person']} ({st['scored']} scored), "
              f"height {st['height_px']:.0f} px; whole-body left/right flips {st['flips']}, limb swaps "
              f"{st['limb_swaps']}, person switches "
              f"{st['person_switches']}; confidence p5/p50/p95 "
              + " / ".join(f"{q:.2f}" for q in st["confidence_p5_p50_p95"]))
        for g, r in st["residual_px"].items():
            print(f"  {g:32s} residual {r:5.1f} px ({r * k:5.1f} per 1,000 px of height), lag-1 {st['lag1'][g]:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
