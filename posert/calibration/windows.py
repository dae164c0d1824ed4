"""Calibration windows of real training motion, and the step-model inputs they produce.

INT8 calibration needs the tensors the step models meet while streaming: the new frame *and*
the key/value caches filled by the frames before it. So calibration streams short windows of
real motion through the FP32 pipeline and records every ``stride``-th tick's inputs of the lifter
step and of each denoiser step (:class:`RecordingBackend`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posert.camera import Camera, random_camera
from posert.data.dataset import NoiseModel, OcclusionModel, center_on_floor, render
from posert.skeleton import ROOT

PROTOCOLS = ("none", "detector", "occlusion")


@dataclass(frozen=True)
class CalibrationWindow:
    """One calibration window: 2D of ``length`` consecutive frames of a real training sequence.

    Attributes:
        name: ``"<sequence>@<start>/<camera>/<protocol>"`` (for reports).
        px: (L, 17, 2) float32 pixels (NaN where ``conf`` is 0).
        conf: (L, 17) float32 confidences in [0, 1].
        width, height: image size of the camera, pixels.
    """

    name: str
    px: np.ndarray
    conf: np.ndarray
    width: int
    height: int


def calibration_windows(sequences: dict[str, np.ndarray], cameras: list[Camera], n: int = 256, length: int = 40,
                        seed: int = 0) -> list[CalibrationWindow]:
    """Draw ``n`` reproducible windows of ``length`` frames from real training motion.

    Sequences are chosen ∝ their length (every source appears), the camera is one of the real
    ``cameras`` (H36M training extrinsics) or a random one with real intrinsics (half each), and
    the 2D protocol cycles through ground truth, detector noise and missing joints/limbs, so the
    calibration ranges cover every input the runtime is evaluated on.

    Args:
        sequences: ``{name: (T, 17, 3)}`` world positions, mm, z-up, 50 fps (training split only).
        cameras: real cameras to render through.
    Raises ValueError if no sequence has ``length`` frames.
    """
    names = [k for k, s in sequences.items() if len(s) >= length]
    if not names:
        raise ValueError(f"no training sequence has {length} frames")
    rng = np.random.default_rng(seed)
    w = np.array([len(sequences[k]) for k in names], np.float64)
    noise = {"detector": NoiseModel(), "occlusion": OcclusionModel(p_start=0.08)}
    out = []
    for i in range(n):
        name = names[rng.choice(len(names), p=w / w.sum())]
        seq = center_on_floor(sequences[name])
        start = int(rng.integers(0, len(seq) - length + 1))
        world = seq[start:start + length]
        if rng.random() < 0.5:
            cam = cameras[rng.integers(len(cameras))]
        else:
            cam = random_camera(rng, world[0, ROOT], cameras)
        px, _ = render(world, cam)
        protocol = PROTOCOLS[i % len(PROTOCOLS)]
        conf = np.ones(px.shape[:2], np.float32)
        if protocol != "none":
            px, conf = noise[protocol](px, rng)
        out.append(CalibrationWindow(f"{name}@{start}/{cam.name}/{protocol}", px, conf, cam.width, cam.height))
    return out


class RecordingBackend:
    """Wraps a backend and records the named inputs of its step calls (copies, as ONNX feeds).

    ``lifter_feeds``: dicts with ``inp``, ``lag``, ``cache_*``; ``denoiser_feeds``: with ``inp``,
    ``x_t``, ``t``, ``lag``, ``cache_*``. Recording is on while ``recording`` is True.
    """

    def __init__(self, inner):
        self.inner = inner
        self.recording = False
        self.lifter_feeds: list[dict[str, np.ndarray]] = []
        self.denoiser_feeds: list[dict[str, np.ndarray]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @staticmethod
    def _caches(caches) -> dict[str, np.ndarray]:
        return {f"cache_{i}": np.array(c, np.float32) for i, c in enumerate(caches)}

    def lift_step(self, inp, lag, caches):
        if self.recording:
            self.lifter_feeds.append({"inp": np.array(inp, np.float32), "lag": np.array(lag, np.int64),
                                      **self._caches(caches)})
        return self.inner.lift_step(inp, lag, caches)

    def denoise_step(self, inp, x_t, t, lag, caches):
        if self.recording:
            self.denoiser_feeds.append({"inp": np.array(inp, np.float32), "x_t": np.array(x_t, np.float32),
                                        "t": np.full(len(inp), t, np.float32), "lag": np.array(lag, np.int64),
                                        **self._caches(caches)})
        return self.inner.denoise_step(inp, x_t, t, lag, caches)


def record_step_inputs(backend, windows: list[CalibrationWindow], stride: int = 4, batch: int = 128):
    """Stream ``windows`` (``batch`` at a time, each its own stream) through a
    :class:`~posert.runtime.Pipeline` on ``backend`` and record the step models' inputs of every
    ``stride``-th tick (from the first frame on, so caches from empty to full are covered).

    Returns (lifter_feeds, denoiser_feeds): lists of ONNX feed dicts (see
    :class:`RecordingBackend`), batches of up to ``batch`` rows.
    """
    from posert.runtime import Pipeline

    rec = RecordingBackend(backend)
    with Pipeline(backend=rec, max_streams=batch) as pipe:
        for b0 in range(0, len(windows), batch):
            chunk = windows[b0:b0 + batch]
            ids = list(range(len(chunk)))
            for i, w in zip(ids, chunk):
                pipe.add_stream(i, w.width, w.height)
            L = min(len(w.px) for w in chunk)
            for t in range(L):
                rec.recording = (t % stride) == stride - 1
                pipe.push_many(ids, np.stack([w.px[t] for w in chunk]), np.stack([w.conf[t] for w in chunk]))
                pipe.tick()
            rec.recording = False
            for i in ids:
                pipe.remove_stream(i)
    return rec.lifter_feeds, rec.denoiser_feeds
