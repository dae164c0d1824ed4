"""The roaming stress protocol: real motion carried along a path that leaves the cameras' view and
comes back, streamed as a real detector would see it.

A take's own motion (its pelvis drift kept) is translated along excursions from the rig's centre
out to ``reach_mm`` in the direction of one camera after another and back, at walking pace: the
person walks up to each camera in turn, past it (behind it: out of its view), far from the
cameras opposite, and back. Every camera's view is a stream; joints a camera cannot see
(:func:`posert.data.dataset.in_view`) are pushed as missing, and every :data:`BLACKOUT_EVERY_S` a
stream loses the person for 0.1–0.4 s (someone walking past the camera: every joint missing).
What it measures is what a robot needs from the output: no non-finite and no impossible pose
(:func:`posert.runtime.guard.impossible`), the frames each :class:`~posert.runtime.guard.Health`
code covered, and how long a stream takes to be as good again as it would be without the gap.

Recovery: a return is the first frame with at least ``GuardConfig.min_joints`` joints in view
after frames with fewer (the input is good again). The recovery time is the time from the return
until the stream's MPJPE stays within :data:`RECOVERY_TOL_MM` of a reference's on every later
frame of its stretch in view (at most ``horizon_s``) that shows every joint (on partial views
both are far off, by hundreds of mm at the image edge, and the difference says nothing). After a
blackout the reference is the same view streamed without blackouts (what the stream would have
given without the bad input); after the person was out of the camera's view, a fresh stream
started at the return. A stream that was out of view longer than ``GuardConfig.restart_after_s``
restarts at its return: it is the fresh stream.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from posert.camera import Camera
from posert.config import PipelineConfig
from posert.data.dataset import center_on_floor
from posert.evaluate import detector_view, health_counts, pose_counts
from posert.runtime import Pipeline
from posert.skeleton import NUM_JOINTS, ROOT

FPS = 50.0
#: A returning stream has recovered once its MPJPE (mm) is no worse than a fresh stream's by more
#: than this, on every frame after.
RECOVERY_TOL_MM = 10.0
#: A stream's blackouts (every joint missing, 0.1–0.4 s, shorter than a restart) start this often, s.
BLACKOUT_EVERY_S = 5.0


def roaming_path(frames: int, cameras: list[Camera], reach_mm: float = 6500.0,
                 speed_mm_s: float = 1300.0) -> np.ndarray:
    """The pelvis offset (frames, 2) float64 mm, world xy, of the excursions: from the origin to
    ``reach_mm`` towards camera 0's position and back, then towards camera 1's, and so on, each
    leg at ``speed_mm_s`` with a smooth (cosine) start and stop. Raises ValueError for no camera
    or a non-positive reach or speed."""
    if not cameras:
        raise ValueError("roaming_path needs at least one camera")
    if not (reach_mm > 0 and speed_mm_s > 0):
        raise ValueError("reach_mm and speed_mm_s must be > 0")
    leg = max(2, int(round(reach_mm / speed_mm_s * FPS)))
    out = np.zeros((frames, 2))
    for t in range(frames):
        k, i = divmod(t, 2 * leg)
        cam = cameras[k % len(cameras)]
        centre = -cam.R.T @ cam.t
        direction = centre[:2] / max(np.linalg.norm(centre[:2]), 1e-9)
        phase = i / leg if i < leg else 2.0 - i / leg  # 0 → 1 → 0
        out[t] = direction * reach_mm * 0.5 * (1 - np.cos(np.pi * phase))
    return out


def _returns(out: np.ndarray) -> list[tuple[int, int]]:
    """(return frame, end of its stretch in view) for every frame in view (not ``out``) that
    follows one out of view."""
    starts = np.flatnonzero(~out[1:] & out[:-1]) + 1
    ends = [t + int(np.argmax(out[t:])) if out[t:].any() else len(out) for t in starts]
    return list(zip(starts.tolist(), ends))


def _views(sequences, cameras, reach_mm, min_joints, noise, rng) -> list[dict]:
    """Every (sequence, camera) view: its 2D, confidences with and without blackouts, truth."""
    views = []
    every = int(BLACKOUT_EVERY_S * FPS)
    for name, seq in sequences.items():
        world = center_on_floor(seq)
        world[..., :2] += roaming_path(len(world), cameras, reach_mm)[:, None, :]
        for ci, cam in enumerate(cameras):
            px, seen, cam3d, unseen = detector_view(world, cam, noise, rng)
            blackout = np.zeros(len(px), bool)
            for t0 in range(int(rng.integers(every)), len(px), every):
                blackout[t0:t0 + int(rng.integers(int(0.1 * FPS), int(0.4 * FPS) + 1))] = True
            views.append({"id": (name, ci), "cam": cam, "px": px.astype(np.float32), "twin_conf": seen,
                          "conf": np.where(blackout[:, None], 0.0, seen).astype(np.float32),
                          "gt": cam3d - cam3d[:, ROOT:ROOT + 1], "unseen": unseen | blackout[:, None],
                          "out": (~unseen).sum(-1) < min_joints, "blackout": blackout})
    return views


def roaming_protocol(sequences: dict[str, np.ndarray], cameras: list[Camera], config: PipelineConfig | None = None,
                     reach_mm: float = 6500.0, horizon_s: float = 1.0, noise=None, seed: int = 0,
                     progress: bool = False) -> dict:
    """Stream every (sequence, camera) view of ``sequences`` (name → (T, 17, 3) world mm, z-up,
    50 fps) carried along :func:`roaming_path`, every view a stream of one pipeline of ``config``
    (with its references: the same view without blackouts, and fresh streams at the returns), and
    report what came out.

    Args:
        noise: None (the rendered 2D) or a callable ``(px (T, 17, 2), rng) -> (px, conf)``
            (:class:`~posert.data.dataset.NoiseModel`), applied before the out-of-view joints
            are marked missing.
        horizon_s: the longest stretch after a return over which recovery is measured.
    Returns a dict: ``frames`` (stream frames), ``refined_nonfinite``, ``refined_impossible``,
    ``lifter_nonfinite``, ``lifter_impossible`` (poses; the refined counts must be 0),
    ``out_of_view`` (fraction of joints pushed as missing), ``out_frames`` (frames with fewer
    than ``min_joints`` joints in view), ``health`` (frames per code name), ``restarts``,
    ``mpjpe_in_view`` (mm, refined, frames with every joint in view), and per kind of return
    (``blackout``, ``view``): ``returns``, ``recovery_p50_s``, ``recovery_max_s`` and ``events``
    (each return's stream, frame, gap before it and recovery time, s, and ``excess_mm``: the
    stream's MPJPE minus the reference's on each frame after the return, None on partial views).
    """
    config = config or PipelineConfig()
    views = _views(sequences, cameras, reach_mm, config.guard.min_joints, noise, np.random.default_rng(seed))
    horizon = max(1, int(round(horizon_s * FPS)))
    streams = {}  # stream id → (view, first frame, end, conf)
    events = []  # (kind, view, return frame, end, reference stream id)
    for v in views:
        streams[v["id"]] = (v, 0, len(v["px"]), v["conf"])
        streams[("twin", *v["id"])] = (v, 0, len(v["px"]), v["twin_conf"])
        v["low"] = (v["conf"] > 0).sum(-1) < config.guard.min_joints  # too few joints pushed to give a pose
        for k, (t0, end) in enumerate(_returns(v["low"])):
            end = min(end, t0 + horizon)
            if v["out"][t0 - 1]:  # the person was out of this camera's view
                ref = ("fresh", *v["id"], k)
                streams[ref] = (v, t0, end, v["conf"])
                events.append(("view", v, t0, end, ref))
            else:
                events.append(("blackout", v, t0, end, ("twin", *v["id"])))
    T = max(len(v["px"]) for v in views)
    busiest = max(sum(1 for _, a, b, _ in streams.values() if a <= t < b) for t in range(T))
    got = {sid: (np.zeros((len(v["px"]), NUM_JOINTS, 3), np.float32),
                 np.zeros((len(v["px"]), NUM_JOINTS, 3), np.float32), np.zeros(len(v["px"]), np.uint8))
           for sid, (v, *_) in streams.items()}
    restarts, main = 0, [v["id"] for v in views]
    with Pipeline(config.override({"max_streams": busiest})) as pipe:
        for t in tqdm(range(T), desc="roaming", unit="frame", disable=not progress):
            live = [sid for sid, (_, a, b, _) in streams.items() if a <= t < b]
            for sid in live:
                v, a, _, _ = streams[sid]
                if a == t:
                    pipe.add_stream(sid, v["cam"].width, v["cam"].height)
            pipe.push_many(live, np.stack([streams[s][0]["px"][t] for s in live]),
                           np.stack([streams[s][3][t] for s in live]), [t / FPS] * len(live))
            res = pipe.tick()
            for i, sid in enumerate(res.stream_ids):
                got[sid][0][t], got[sid][1][t], got[sid][2][t] = res.refined[i], res.lifted[i], res.health[i]
            for sid in live:
                if streams[sid][2] == t + 1:
                    if sid in main:
                        restarts += pipe.stream_info(sid).restarts
                    pipe.remove_stream(sid)
    refined = np.concatenate([got[s][0] for s in main])
    lifted = np.concatenate([got[s][1] for s in main])
    health = np.concatenate([got[s][2] for s in main])
    gt = np.concatenate([v["gt"] for v in views])
    full = np.concatenate([~v["unseen"].any(-1) for v in views])
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.linalg.norm(refined - gt, axis=-1).mean(-1)
    report = {
        "frames": int(len(refined)),
        **pose_counts(lifted, refined),
        "out_of_view": float(np.mean(np.concatenate([v["unseen"] for v in views]))),
        "out_frames": int(sum(v["low"].sum() for v in views)),
        "health": health_counts(health),
        "restarts": int(restarts),
        "mpjpe_in_view": float(err[full].mean()) if full.any() else float("nan"),
    }
    for kind in ("blackout", "view"):
        rec = []
        for _, v, t0, end, ref in (e for e in events if e[0] == kind):
            gt_v = v["gt"][t0:end]
            err_s = np.linalg.norm(got[v["id"]][0][t0:end] - gt_v, axis=-1).mean(-1)
            err_r = np.linalg.norm(got[ref][0][t0:end] - gt_v, axis=-1).mean(-1)
            whole = ~v["unseen"][t0:end].any(-1)  # partial views are not compared: both are far off there
            worse = np.flatnonzero(whole & ~(err_s <= err_r + RECOVERY_TOL_MM))
            good = np.flatnonzero(~v["low"][:t0])
            gap = t0 - (int(good[-1]) + 1 if len(good) else 0)
            excess = [round(float(d), 1) if w else None for d, w in zip(err_s - err_r, whole)]
            rec.append({"stream": repr(v["id"]), "frame": int(t0), "gap_s": gap / FPS,
                        "recovery_s": 0.0 if len(worse) == 0 else float((worse[-1] + 1) / FPS),
                        "excess_mm": excess})
        times = [e["recovery_s"] for e in rec]
        report[kind] = {"returns": len(rec), "recovery_p50_s": float(np.median(times)) if rec else float("nan"),
                        "recovery_max_s": float(np.max(times)) if rec else float("nan"), "events": rec}
    return report
