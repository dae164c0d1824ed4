"""Would filtering a video's detections at the camera's rate, before `posert run` resamples them
to 50 fps, make the 3D smoother without making it less accurate?

The detector-noise protocol at ``--fps`` (as `video_rate.py` draws it) is filtered per joint and
coordinate by a constant-velocity Kalman filter (white acceleration of σ_a = ``a`` person heights
per s², measurement noise the protocol's own per-joint σ for a scale of 1: the measured BlazePose
profile, :data:`posert.data.dataset.DETECTOR_JITTER_PER_KPX`) at the camera's rate, then resampled
and streamed as `posert run` streams it (`config_for_rate`: the fixed β). A joint without a
detection is predicted, not updated. Each ``--a`` is one row; the first row is no filter.

It also prints what a stream could estimate by itself: the per-joint noise from third differences
and the motion's acceleration from second differences minus the noise's share (6 σ²).

    python experiments/video_prefilter.py [--motion val_motion.npz] [--fps 30] [--a 2 5 10 20 50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from video_rate import SETTINGS, stream, video_streams

from posert.config import PipelineConfig
from posert.data.dataset import DETECTOR_JITTER_PER_KPX
from posert.data.sources import cache_dir
from posert.evaluate import eval_cameras, load_motion


def kalman_cv(px: np.ndarray, conf: np.ndarray, fps: float, accel: float, sigma: np.ndarray) -> np.ndarray:
    """Causal constant-velocity Kalman filter of (T, J, 2) px at ``fps``; ``accel`` px/s² (σ of
    the white acceleration, the discrete model's Q = σ_a² [[dt⁴/4, dt³/2], [dt³/2, dt²]]),
    ``sigma`` (J,) px of measurement noise. Joints with confidence 0 are predicted only."""
    dt = 1.0 / fps
    F = np.array([[1.0, dt], [0.0, 1.0]])
    Q = accel ** 2 * np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]])
    r = np.repeat((sigma ** 2)[:, None], 2, axis=1)  # (17, 2)
    J = px.shape[1]
    x = np.zeros((J, 2, 2))  # joint, coordinate, (position, velocity)
    P = np.zeros((J, 2, 2, 2))
    started = np.zeros(J, bool)
    out = px.astype(np.float64).copy()
    for t in range(len(px)):
        x = x @ F.T
        P = F @ P @ F.T + Q
        vis = conf[t] > 0
        new = vis & ~started
        x[new, :, 0], x[new, :, 1] = px[t, new], 0.0
        P[new] = 0.0
        P[new, :, 0, 0], P[new, :, 1, 1] = r[new], 1e8
        started |= vis
        upd = vis & ~new
        S = P[upd][:, :, 0, 0] + r[upd]  # (n, 2)
        K = P[upd][:, :, :, 0] / S[..., None]  # (n, 2, 2): gain for (position, velocity)
        x[upd] += K * (px[t, upd] - x[upd][:, :, 0])[..., None]
        P[upd] -= K[..., :, None] * P[upd][:, :, 0:1, :]
        out[t, vis] = x[vis, :, 0]
    return out.astype(np.float32)


def stream_estimates(px: np.ndarray, conf: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per joint: noise σ (px) from the third differences (var = 20 σ²) and the motion's RMS
    acceleration (px/s²) from the second differences (var = a² dt⁴ + 6 σ², 0 where negative);
    robust variances (1.4826 MAD)² over the frames where the joint is seen throughout."""
    def rvar(d):
        return (1.4826 * np.median(np.abs(d - np.median(d)))) ** 2

    sig, acc = np.zeros(px.shape[1]), np.zeros(px.shape[1])
    ok = conf > 0
    for j in range(px.shape[1]):
        v = ok[:, j]
        d2 = np.diff(px[:, j], 2, axis=0)[v[2:] & v[1:-1] & v[:-2]].ravel()
        d3 = np.diff(px[:, j], 3, axis=0)[v[3:] & v[2:-1] & v[1:-2] & v[:-3]].ravel()
        sig[j] = np.sqrt(rvar(d3) / 20.0)
        acc[j] = np.sqrt(max(rvar(d2) - 6.0 * sig[j] ** 2, 0.0)) * fps ** 2
    return sig, acc


def prefilter(fps: float, a: float | None, log: list | None = None):
    """The ``detected`` hook of `video_rate.video_streams`: the Kalman filter of ``a`` person
    heights/s² (None: none); ``log`` gets each view's :func:`stream_estimates`, per 1,000 px of
    the person's height and in heights/s²."""
    def hook(px: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height = float(np.median(np.ptp(px[..., 1], axis=1)))
        if log is not None:
            sig, acc = stream_estimates(px, conf, fps)
            log.append((sig / height * 1000, acc / height))
        if a is not None:
            px = kalman_cv(px, conf, fps, a * height, np.asarray(DETECTOR_JITTER_PER_KPX) * height / 1000.0)
        return px, conf
    return hook


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--a", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0, 50.0],
                    help="the filter's acceleration σ, person heights per s²")
    args = ap.parse_args()
    seqs, cams = load_motion(args.motion), eval_cameras("h36m")
    cfg = PipelineConfig().override(SETTINGS["fixed beta 0.1"])  # what config_for_rate gives posert run
    for a in [None, *args.a]:
        log = [] if a is None else None
        o = stream(cfg, video_streams(seqs, cams, args.fps, detected=prefilter(args.fps, a, log)))
        if log:
            sig, acc = np.mean([s for s, _ in log], axis=0), np.mean([x for _, x in log], axis=0)
            print(f"estimated from the 2D alone: σ per 1,000 px {np.round(sig, 1).tolist()}; motion's RMS "
                  f"acceleration (heights/s²) {np.round(acc, 2).tolist()} (the profile: "
                  f"{np.round(DETECTOR_JITTER_PER_KPX, 1).tolist()})")
        print(f"{'no filter' if a is None else f'a = {a:g} heights/s²':22s} lifter {o['lifter']['mpjpe']:6.1f} mm, "
              f"accel {o['lifter']['accel']:6.2f} | refined {o['refined']['mpjpe']:6.1f} mm, P-MPJPE "
              f"{o['refined']['p_mpjpe']:5.1f}, accel {o['refined']['accel']:6.2f} mm/frame²", flush=True)


if __name__ == "__main__":
    main()
