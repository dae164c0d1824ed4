"""Streaming evaluation on real motion: render 2D through cameras, stream every sequence frame by
frame through a :class:`~posert.runtime.Pipeline` (causal, all streams batched per tick), and
score the lifter alone and the refined output."""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from posert.camera import Camera
from posert.data.dataset import center_on_floor, in_view, render
from posert.metrics import accel_error, alignment_rotation, mpjpe, p_mpjpe
from posert.rigs import CAMERA_SETS as RIG_SETS
from posert.rigs import CLASSES, class_rig
from posert.runtime.guard import Health, impossible
from posert.skeleton import NUM_JOINTS, ROOT

#: The Human3.6M subjects whose camera extrinsics render the training motion, and the one whose
#: four cameras render every evaluation (``posert eval --cameras h36m``).
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
EVAL_SUBJECT = "S9"
#: ``posert eval --cameras``: the four real H36M cameras of :data:`EVAL_SUBJECT`, a fixed
#: synthetic four-camera rig (no download: tests), the eight cameras of one class of
#: :mod:`posert.rigs` (level, pitched, rolled, portrait, phone), or every class.
CAMERA_SETS = RIG_SETS
#: What :func:`score` reports of the lifter and the refined output (mm; accel mm/frame²; degrees).
METRICS = ("mpjpe", "p_mpjpe", "accel", "rotation_deg", "mpjpe_rotated")
#: Cameras per class in a class's evaluation rig.
CLASS_RIG_SIZE = 8


def h36m_cameras(subjects) -> list[Camera]:
    """The real Human3.6M cameras (four per subject) of ``subjects``, fetched once (DATA.md)."""
    from posert.camera import load_h36m_cameras
    from posert.data.sources import h36m_camera_file

    path = h36m_camera_file()
    return [c for s in subjects for c in load_h36m_cameras(path, s)]


def eval_cameras(kind: str = "h36m") -> list[Camera]:
    """The cameras of an evaluation protocol (:data:`CAMERA_SETS` but ``all``: see
    :func:`eval_camera_sets`). ValueError for another kind."""
    from posert.camera import ring_rig

    if kind not in CAMERA_SETS or kind == "all":
        raise ValueError(f"cameras must be one of {tuple(k for k in CAMERA_SETS if k != 'all')}, got {kind!r}")
    if kind in CLASSES:
        return class_rig(kind, CLASS_RIG_SIZE)
    return h36m_cameras([EVAL_SUBJECT]) if kind == "h36m" else ring_rig()


def eval_camera_sets(kind: str = "h36m") -> dict[str, list[Camera]]:
    """{name: cameras} of ``posert eval --cameras kind``: one set, or with ``all`` one per camera
    class of :mod:`posert.rigs`. ValueError for an unknown kind."""
    if kind == "all":
        return {c: eval_cameras(c) for c in CLASSES}
    return {kind: eval_cameras(kind)}


def bench_sequence(motion=None) -> tuple[str, np.ndarray]:
    """(name, (T, 17, 3) mm) of the longest sequence of a motion file (default: the validation
    motion of ``posert data``), the stream ``posert bench`` measures."""
    from pathlib import Path

    from posert.data.build import VAL_MOTION_NAME, build_dataset

    path = Path(motion) if motion else build_dataset().parent / VAL_MOTION_NAME
    seqs = load_motion(path)
    name = max(seqs, key=lambda k: len(seqs[k]))
    return name, np.asarray(seqs[name])


def load_motion(path) -> dict[str, np.ndarray]:
    """Read an ``--motion`` file: an ``.npz`` archive in which every array is one (T, 17, 3) float
    sequence, mm, z-up world, 50 fps.

    Raises FileNotFoundError for a missing file, ValueError for a file that is not an ``.npz``
    archive (a single ``.npy`` array, a corrupt or foreign file), one without arrays, an array of
    another shape, a dtype other than float, or non-finite values.
    """
    import zipfile
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no motion file at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{path} holds a single array, not an .npz archive of named (T, 17, 3) sequences")
    if not magic.startswith(b"PK"):
        raise ValueError(f"{path} is not an .npz archive (a zip of named (T, 17, 3) arrays)")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz archive of sequences ({' '.join(str(e).split())})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive of named (T, 17, 3) sequences")
    out = {}
    with z:
        if not z.files:
            raise ValueError(f"{path} holds no sequences")
        for name in z.files:
            try:
                seq = z[name]
            except (ValueError, OSError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path}:{name}: unreadable ({' '.join(str(e).split())})") from None
            if seq.dtype.kind != "f":
                raise ValueError(f"{path}:{name}: expected float coordinates, got dtype {seq.dtype}")
            if seq.ndim != 3 or seq.shape[1:] != (NUM_JOINTS, 3) or len(seq) < 3:
                raise ValueError(f"{path}:{name}: expected (T ≥ 3, 17, 3), got {seq.shape}")
            seq = seq.astype(np.float32)
            if not np.all(np.isfinite(seq)):
                raise ValueError(f"{path}:{name}: non-finite values")
            out[name] = seq
    return out


def detector_view(world: np.ndarray, cam: Camera, noise=None, rng: np.random.Generator | None = None):
    """What a 2D detector gives of a (T, 17, 3) world sequence (mm) seen through ``cam``: pixels
    (T, 17, 2) float32 (after ``noise``, a callable ``(px, rng) -> (px, conf)``), confidences
    (T, 17) float32 with the joints it cannot see (:func:`~posert.data.dataset.in_view`) at 0, the camera-frame
    positions (T, 17, 3) mm, and that (T, 17) bool out-of-view mask."""
    px, cam3d = render(world, cam)
    unseen = ~in_view(px, cam3d, cam)
    conf = np.ones(px.shape[:2], np.float32)
    if noise is not None:
        px, conf = noise(px, rng)
    return px.astype(np.float32), np.where(unseen, 0.0, conf).astype(np.float32), cam3d, unseen


def _scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """pred, gt: (C, T, 17, 3) mm root-relative, C cameras. Frames whose prediction is not finite
    are left out (``score`` counts them); the acceleration uses the triples of finite frames."""
    ok = np.isfinite(pred).all(axis=(-1, -2))
    if not ok.any():
        return dict.fromkeys(METRICS, float("nan"))
    pm, angles, rotated, acc = [], [], [], []
    for p, g, o in zip(pred, gt, ok):  # one stream (camera) at a time
        if o.any():
            pm.append(p_mpjpe(p[o], g[o]))
            R, angle = alignment_rotation(p[o], g[o])  # one rotation aligns the stream's whole sequence
            angles.append(angle)
            rotated.append(np.linalg.norm(p[o] @ R.T - g[o], axis=-1).reshape(-1))
        if len(p) >= 3:
            a = accel_error(p, g, valid=o)
            if not np.isnan(a):
                acc.append(a)
    return {"mpjpe": mpjpe(pred[ok], gt[ok]), "p_mpjpe": float(np.mean(pm)),
            "accel": float(np.mean(acc)) if acc else float("nan"),
            "rotation_deg": float(np.mean(angles)), "mpjpe_rotated": float(np.concatenate(rotated).mean())}


def stream_sequences(pipeline, sequences: dict[str, np.ndarray], cameras: list[Camera],
                     noise=None, seed: int = 0, progress: bool = True, camera_aware: bool = False):
    """Stream every (sequence, camera) pair as its own stream, frame by frame, all due streams
    batched in one tick.

    Args:
        noise: None (ground-truth 2D) or a callable ``(px (T, 17, 2), rng) -> (px, conf)`` such as
            :class:`~posert.data.dataset.NoiseModel` or :class:`~posert.data.dataset.OcclusionModel`.
        camera_aware: add every stream with its calibrated camera, for the pipeline's camera-aware
            correction (:meth:`~posert.runtime.Pipeline.add_stream`); otherwise without one (the
            pipeline then guesses intrinsics, or does not correct: its ``reprojection``).
    Joints a camera cannot see (:func:`~posert.data.dataset.in_view`: behind it, or outside its image) are pushed as
    missing (confidence 0), as a real detector would give them.

    Returns (results, tick_ms): results[name] = dict of (C, T, 17, 3) arrays ``lifted``,
    ``refined``, ``gt`` (mm, camera frame, root-relative), ``px`` (C, T, 17, 2) the pushed 2D
    (pixels, after ``noise``), ``conf`` (C, T, 17), ``out_of_view`` (C, T, 17) bool and
    ``health`` (C, T) uint8 (:class:`~posert.runtime.guard.Health`); tick_ms = per-tick latencies.
    """
    rng = np.random.default_rng(seed)
    streams = []
    for name, seq in sequences.items():
        world = center_on_floor(seq)
        for ci, cam in enumerate(cameras):
            px, conf, cam3d, unseen = detector_view(world, cam, noise, rng)
            sid = (name, ci)
            pipeline.add_stream(sid, cam.width, cam.height, cam if camera_aware else None)
            streams.append((sid, px, conf, cam3d - cam3d[:, ROOT:ROOT + 1], unseen))
    out, tick_ms = stream_views(pipeline, [s[:3] for s in streams], progress)
    for sid, *_ in streams:
        pipeline.remove_stream(sid)
    results = {}
    for name in sequences:
        mine = [s for s in streams if s[0][0] == name]
        results[name] = {"lifted": np.stack([out[s[0]][0] for s in mine]),
                         "refined": np.stack([out[s[0]][1] for s in mine]),
                         "gt": np.stack([s[3] for s in mine]).astype(np.float32),
                         "px": np.stack([s[1] for s in mine]).astype(np.float32),
                         "conf": np.stack([s[2] for s in mine]),
                         "out_of_view": np.stack([s[4] for s in mine]),
                         "health": np.stack([out[s[0]][2] for s in mine])}
    return results, tick_ms


def stream_views(pipeline, views: list, progress: bool = True) -> tuple[dict, np.ndarray]:
    """Push frame t of every view that has one, all in one tick, for t = 0, 1, … (timestamps
    t / 50 s: one model frame each), as :func:`stream_sequences` streams its renderings.

    Args:
        views: [(stream id, px (T, 17, 2) pixels, conf (T, 17))], each stream already added to
            ``pipeline``; T may differ between views.
    Returns (out, tick_ms): out[stream id] = (lifted (T, 17, 3) float32 mm, refined (T, 17, 3)
    float32 mm, health (T,) uint8), and tick_ms (ticks,) the latency of every tick.
    """
    out = {sid: (np.zeros((len(px), NUM_JOINTS, 3), np.float32), np.zeros((len(px), NUM_JOINTS, 3), np.float32),
                 np.zeros(len(px), np.uint8)) for sid, px, _ in views}
    tick_ms = []
    for t in tqdm(range(max(len(px) for _, px, _ in views)), desc="streaming", unit="frame", disable=not progress):
        live = [v for v in views if t < len(v[1])]
        pipeline.push_many([v[0] for v in live], np.stack([v[1][t] for v in live]), np.stack([v[2][t] for v in live]),
                           [t / 50.0] * len(live))
        t0 = time.perf_counter()
        res = pipeline.tick()
        tick_ms.append((time.perf_counter() - t0) * 1e3)
        for i, sid in enumerate(res.stream_ids):
            out[sid][0][t] = res.lifted[i]
            out[sid][1][t] = res.refined[i]
            out[sid][2][t] = res.health[i]
    return out, np.array(tick_ms)


def pose_counts(lifted: np.ndarray, refined: np.ndarray) -> dict[str, int]:
    """The poses a robot must never receive among ``lifted`` and ``refined`` (..., 17, 3) mm,
    root-relative: ``lifter_nonfinite``, ``lifter_impossible``, ``refined_nonfinite``,
    ``refined_impossible`` (:func:`~posert.runtime.guard.impossible`; the refined ones must be 0)."""
    out = {}
    for name, poses in (("lifter", lifted), ("refined", refined)):
        out[f"{name}_nonfinite"] = int((~np.isfinite(poses).all((-1, -2))).sum())
        out[f"{name}_impossible"] = int(impossible(poses).sum())
    return out


def health_counts(codes: np.ndarray) -> dict[str, int]:
    """{code name: frames} of :class:`~posert.runtime.guard.Health` codes (any shape, uint8)."""
    return {h.name.lower(): int((codes == h).sum()) for h in Health}


def score(results: dict) -> dict:
    """Score the output of :func:`stream_sequences`. Returns::

        {"overall": {"lifter": {mpjpe, p_mpjpe, accel, rotation_deg, mpjpe_rotated}, "refined": {...}},
         "sequences": {name: {"lifter": {...}, "refined": {...}, "frames": T}}}

    mpjpe/p_mpjpe in mm, accel in mm/frame²; rotation_deg: the angle of the one rotation that best
    aligns a stream's whole output to the truth (:func:`~posert.metrics.alignment_rotation`: its
    global orientation error), mpjpe_rotated the MPJPE after it; overall = frame-weighted mean over
    sequences, over the frames whose output is finite. ``overall["trust"]`` counts, over all streams' frames:
    ``frames``, ``nonfinite`` and ``impossible`` (:func:`~posert.runtime.guard.impossible`) lifter
    and refined poses (both must be 0), the fraction of joints ``out_of_view`` (pushed as missing)
    and the frames of each :class:`~posert.runtime.guard.Health` code (when recorded).
    When some joints are missing (confidence 0), ``overall["missing"]`` adds the fraction of
    frames with a missing joint and the MPJPE of lifter and refined output on the frames where
    every joint is visible, and on those with a missing joint; and on the latter, the mean error
    of the joints shown and of the joints missing (``*_mm_joints_shown`` / ``*_mm_joints_missing``:
    what ``TickResult.seen`` tells a robot apart).
    """
    report: dict = {"sequences": {}}
    for name, r in results.items():
        report["sequences"][name] = {"lifter": _scores(r["lifted"], r["gt"]),
                                     "refined": _scores(r["refined"], r["gt"]), "frames": int(r["gt"].shape[1])}
    frames = np.array([v["frames"] for v in report["sequences"].values()], np.float64)
    report["overall"] = {
        kind: {m: float(np.average([v[kind][m] for v in report["sequences"].values()], weights=frames))
               for m in METRICS} for kind in ("lifter", "refined")}
    rs = list(results.values())
    every = {k: np.concatenate([r[k].reshape(-1, NUM_JOINTS, 3) for r in rs]) for k in ("lifted", "refined")}
    trust = {"frames": int(sum(r["gt"].shape[0] * r["gt"].shape[1] for r in rs)),
             **pose_counts(every["lifted"], every["refined"])}
    if all("out_of_view" in r for r in rs):
        trust["out_of_view"] = float(np.mean(np.concatenate([r["out_of_view"].reshape(-1) for r in rs])))
    if all("health" in r for r in rs):
        trust["health"] = health_counts(np.concatenate([r["health"].reshape(-1) for r in rs]))
    report["overall"]["trust"] = trust
    conf = np.concatenate([r["conf"].reshape(-1, NUM_JOINTS) for r in results.values()])
    if (conf == 0).any():
        vis = (conf > 0).all(axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            joint_err = {k: np.concatenate([np.linalg.norm(r[k] - r["gt"], axis=-1).reshape(-1, NUM_JOINTS)
                                            for r in results.values()]) for k in ("lifted", "refined")}
        err = {k: e.mean(-1) for k, e in joint_err.items()}
        names = (("lifted", "lifter"), ("refined", "refined"))
        fin = {k: np.isfinite(e) for k, e in err.items()}
        part = {k: ~vis & f for k, f in fin.items()}  # finite frames with a missing joint
        shown = conf > 0
        report["overall"]["missing"] = {
            "frames_with_missing_joint": float(1 - vis.mean()),
            **{f"{name}_mpjpe_visible_frames": float(err[k][vis & fin[k]].mean()) for k, name in names},
            **{f"{name}_mpjpe_missing_frames": float(err[k][part[k]].mean()) for k, name in names},
            **{f"{name}_mm_joints_shown": float(joint_err[k][part[k]][shown[part[k]]].mean()) for k, name in names},
            **{f"{name}_mm_joints_missing": float(joint_err[k][part[k]][~shown[part[k]]].mean())
               for k, name in names}}
    return report


def markdown_cells(overall: dict) -> str:
    """The cells a benchmark's Markdown row gives for ``score(...)["overall"]``: lifter MPJPE
    (P-MPJPE), refined MPJPE (P-MPJPE), their ratio, lifter and refined acceleration error and
    their ratio, and the refined MPJPE on frames whose joints are all visible ("–" when no joint
    was missing). mm and mm/frame²."""
    L, R = overall["lifter"], overall["refined"]
    vis = f"{overall['missing']['refined_mpjpe_visible_frames']:.1f}" if "missing" in overall else "–"
    return (f"{L['mpjpe']:.1f} ({L['p_mpjpe']:.1f}) | {R['mpjpe']:.1f} ({R['p_mpjpe']:.1f}) | "
            f"{R['mpjpe'] / L['mpjpe']:.3f} | {L['accel']:.2f} | {R['accel']:.2f} | "
            f"{R['accel'] / L['accel']:.2f} | {vis}")


def evaluate(pipeline, sequences: dict[str, np.ndarray], cameras: list[Camera] | dict[str, list[Camera]],
             noise=None, seed: int = 0, progress: bool = True, camera_aware: bool = False) -> dict:
    """Stream ``sequences`` through ``pipeline`` (:func:`stream_sequences`) and :func:`score` them;
    adds ``"tick_ms": {"p50", "p99", "streams"}``, the latency of the batched ticks.

    ``cameras`` may be {class: cameras} (:func:`eval_camera_sets`): each set is streamed in turn
    and the report gains ``"classes": {class: score(...)["overall"]}``; ``overall`` and
    ``sequences`` then cover every set. The pipeline needs ``len(sequences)`` × the largest set's
    cameras streams."""
    sets = cameras if isinstance(cameras, dict) else {"": cameras}
    merged, classes, ticks = {}, {}, []
    for k, (cls, cams) in enumerate(sets.items()):
        results, tick_ms = stream_sequences(pipeline, sequences, cams, noise, seed + k, progress, camera_aware)
        if len(sets) > 1:
            classes[cls] = score(results)["overall"]
        merged.update({f"{name}@{cls}" if len(sets) > 1 else name: r for name, r in results.items()})
        ticks.append(tick_ms)
    report = score(merged)
    if classes:
        report["classes"] = classes
    tick_ms = np.concatenate(ticks)
    report["tick_ms"] = {"p50": float(np.percentile(tick_ms, 50)), "p99": float(np.percentile(tick_ms, 99)),
                         "streams": len(sequences) * max(len(c) for c in sets.values())}
    return report
