"""The streaming pipeline: per-stream ring buffers → batched lift → K DDIM refine steps.

The tick (DESIGN.md)::

    push(stream, kp2d (17, 2) px, conf (17,), t) → ring buffer of that stream (posert._C)
    tick(): gather windows of every stream with a new frame → y (B, N, 17, 3)
            lifter(y) → x_T (B, N, 17, 3)
            for each DDIM step k: ê = denoiser(y, x_k, t_k); x_{k−1} = fused DDIM update (posert._C)
            report frame N − 1 − delay of x_0 (refined) and of x_T (lifter only), in mm
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from posert import _C
from posert.models.diffusion import Schedule
from posert.skeleton import NUM_JOINTS, ROOT

CHANNELS = 3  # normalised x, y, confidence


@dataclass
class TickResult:
    """Output of one :meth:`Pipeline.tick`.

    Attributes:
        stream_ids: the streams served, in batch order.
        refined: (B, 17, 3) float32 refined poses, mm, camera frame, root-relative (pelvis = 0).
        lifted: (B, 17, 3) float32 lifter-only poses (x_T), same frame and units.
        timestamps: (B,) float64 timestamp of the reported frame of each stream.
    """

    stream_ids: list[Hashable]
    refined: np.ndarray
    lifted: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.stream_ids)

    def __getitem__(self, stream_id: Hashable) -> np.ndarray:
        """Refined (17, 3) pose (mm) of one stream; KeyError if it was not served."""
        try:
            return self.refined[self.stream_ids.index(stream_id)]
        except ValueError:
            raise KeyError(f"stream {stream_id!r} was not served in this tick") from None


class Pipeline:
    """Streaming 2D→3D lifting and diffusion refinement for many streams at once.

    Args:
        backend: ``"onnxruntime"`` (default, CPU), ``"torch"`` (reference) or a backend object
            (see :mod:`posert.runtime.backends`).
        max_streams: capacity; buffers for this many streams are allocated once.
        lifter, refiner: checkpoint paths (default: the committed ``checkpoints/``).
        threads: inference threads (default: one per core).
        ddim_steps: K, the number of DDIM steps (default: the checkpoint's). The denoiser is
            trained on every t in [1, T], so any 1 ≤ K ≤ T is valid.
        hypotheses: H (DiffHPE-style multi-hypothesis averaging). H > 1 folds H copies of every
            window into the batch, starts each from x_T + δ_h with δ_h ~ N(0, Σ_a|b) (the CND's
            residual covariance of the lifter error), runs the K steps once on the (H·B) batch
            and averages the H refined poses. The lifter runs once. ``seed`` fixes the draws.

    Input per frame: keypoints in pixels of an image of the stream's size, H36M-17 order, and a
    confidence per joint in [0, 1]; confidence 0 marks a missing joint (its coordinates are
    ignored and may be NaN). Output: see :class:`TickResult`.

    Bad input raises before anything is written, so one stream's bad frame never touches
    another stream's buffer: ``KeyError`` for an unknown stream, ``ValueError`` for a wrong
    shape, a NaN/inf coordinate on a visible joint, a confidence outside [0, 1], or a
    timestamp that does not increase.
    """

    def __init__(self, backend="onnxruntime", max_streams: int = 64, lifter: str | None = None,
                 refiner: str | None = None, threads: int | None = None, ddim_steps: int | None = None,
                 hypotheses: int = 1, seed: int = 0):
        if isinstance(backend, str):
            from posert.runtime.backends import create_backend

            backend = create_backend(backend, lifter, refiner, threads)
        self.backend = backend
        self.window, self.delay = backend.window, backend.delay
        self.schedule = backend.schedule if ddim_steps is None else Schedule(backend.schedule.T, ddim_steps)
        self._coefs = [self.schedule.ddim_coefficients(t, tp) for t, tp in self.schedule.pairs()]
        if hypotheses < 1:
            raise ValueError(f"hypotheses must be ≥ 1, got {hypotheses}")
        if hypotheses > 1 and getattr(backend, "cnd", None) is None:
            raise ValueError("hypotheses > 1 needs the refiner's CND (backend.cnd)")
        self.hypotheses = hypotheses
        self._rng = np.random.default_rng(seed)
        if hypotheses > 1:
            chol = backend.cnd.chol.astype(np.float32).copy()
            chol[ROOT] = 0.0  # the pelvis stays at the origin
            self._chol = chol
        self.max_streams = max_streams
        self._ring = _C.RingBuffer(max_streams, self.window, NUM_JOINTS, CHANNELS)
        self._slots: dict[Hashable, int] = {}
        self._ids: list[Hashable | None] = [None] * max_streams
        self._size = np.zeros((max_streams, 2), np.float32)  # (width, height) px
        self._last_t = np.full(max_streams, -np.inf)
        self._times = np.zeros((max_streams, self.window), np.float64)
        self._due = np.zeros(max_streams, bool)
        self._win = np.zeros((max_streams, self.window, NUM_JOINTS, CHANNELS), np.float32)
        self._frame = np.zeros((1, NUM_JOINTS, CHANNELS), np.float32)
        self._one = np.zeros(1, np.int32)

    @property
    def streams(self) -> list[Hashable]:
        return list(self._slots)

    def add_stream(self, stream_id: Hashable, width: int, height: int) -> None:
        """Register a stream whose keypoints come from ``width`` × ``height`` pixel images.

        Raises ValueError if the id exists, the size is not positive, or capacity is reached.
        """
        if stream_id in self._slots:
            raise ValueError(f"stream {stream_id!r} already exists")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}×{height}")
        free = [i for i, s in enumerate(self._ids) if s is None]
        if not free:
            raise ValueError(f"all {self.max_streams} stream slots are in use")
        slot = free[0]
        self._slots[stream_id], self._ids[slot] = slot, stream_id
        self._size[slot] = (width, height)
        self._last_t[slot] = -np.inf
        self._times[slot] = 0.0
        self._due[slot] = False
        self._ring.reset(slot)

    def remove_stream(self, stream_id: Hashable) -> None:
        """Forget a stream and free its slot (KeyError if unknown)."""
        slot = self._slot(stream_id)
        del self._slots[stream_id]
        self._ids[slot] = None
        self._due[slot] = False

    def _slot(self, stream_id: Hashable) -> int:
        try:
            return self._slots[stream_id]
        except (KeyError, TypeError):
            raise KeyError(f"unknown stream {stream_id!r}; call add_stream() first") from None

    def _prepare(self, slot: int, kp2d_px, conf, timestamp: float | None) -> float:
        """Validate one frame and write its normalised form to ``self._frame``; returns t."""
        kp = np.asarray(kp2d_px, dtype=np.float64)
        if kp.shape != (NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2), got {kp.shape}")
        c = np.ones(NUM_JOINTS) if conf is None else np.asarray(conf, dtype=np.float64)
        if c.shape != (NUM_JOINTS,):
            raise ValueError(f"conf must have shape ({NUM_JOINTS},), got {c.shape}")
        if not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 1)):
            raise ValueError("conf must be finite and in [0, 1]")
        visible = c > 0
        if not np.all(np.isfinite(kp[visible])):
            raise ValueError("kp2d_px has NaN/inf on a joint with confidence > 0 (set its confidence to 0)")
        if timestamp is None:
            t = 0.0 if not np.isfinite(self._last_t[slot]) else float(self._last_t[slot]) + 1.0
        else:
            t = float(timestamp)
        if not np.isfinite(t) or t <= self._last_t[slot]:
            raise ValueError(f"timestamp {t} does not increase (last {self._last_t[slot]})")
        w, h = self._size[slot]
        f = self._frame[0]
        f[:, 0] = np.where(visible, kp[:, 0] / w * 2 - 1, 0.0)
        f[:, 1] = np.where(visible, kp[:, 1] / w * 2 - h / w, 0.0)
        f[:, 2] = c
        return t

    def push(self, stream_id: Hashable, kp2d_px, conf=None, timestamp: float | None = None) -> None:
        """Append one frame to a stream.

        Args:
            kp2d_px: (17, 2) pixels, H36M-17 order.
            conf: (17,) confidences in [0, 1] (default all 1); 0 = missing joint.
            timestamp: seconds (or any increasing clock); default: previous + 1.
        """
        slot = self._slot(stream_id)
        t = self._prepare(slot, kp2d_px, conf, timestamp)
        self._one[0] = slot
        self._ring.push(self._one, self._frame)
        self._times[slot, :-1] = self._times[slot, 1:]
        self._times[slot, -1] = t
        self._last_t[slot] = t
        self._due[slot] = True

    def push_many(self, stream_ids: Sequence[Hashable], kp2d_px: np.ndarray, conf: np.ndarray | None = None,
                  timestamps: Sequence[float] | None = None) -> None:
        """Append one frame to each of several streams: kp2d_px (B, 17, 2), conf (B, 17).

        Every frame is validated before any is written; on error nothing is pushed.
        """
        kp = np.asarray(kp2d_px)
        if kp.ndim != 3 or kp.shape[0] != len(stream_ids):
            raise ValueError(f"kp2d_px must have shape ({len(stream_ids)}, 17, 2), got {kp.shape}")
        slots = [self._slot(s) for s in stream_ids]
        if len(set(slots)) != len(slots):
            raise ValueError("push_many: a stream appears twice")
        frames = np.empty((len(slots), NUM_JOINTS, CHANNELS), np.float32)
        ts = np.empty(len(slots))
        for i, slot in enumerate(slots):
            ts[i] = self._prepare(slot, kp[i], None if conf is None else conf[i],
                                  None if timestamps is None else timestamps[i])
            frames[i] = self._frame[0]
        idx = np.asarray(slots, np.int32)
        self._ring.push(idx, frames)
        self._times[idx, :-1] = self._times[idx, 1:]
        self._times[idx, -1] = ts
        self._last_t[idx] = ts
        self._due[idx] = True

    def tick(self) -> TickResult:
        """Lift and refine every stream that received a frame since the last tick."""
        slots = np.flatnonzero(self._due).astype(np.int32)
        B = len(slots)
        N, d = self.window, self.delay
        if B == 0:
            empty = np.zeros((0, NUM_JOINTS, 3), np.float32)
            return TickResult([], empty, empty.copy(), np.zeros(0))
        win = self._win[:B]
        self._ring.gather(slots, win)
        x_T = self.backend.lift(win)
        H = self.hypotheses
        if H == 1:
            y, x = win, np.array(x_T, dtype=np.float32, copy=True)
        else:  # fold H hypotheses into the batch: (H·B, N, J, C), hypothesis-major
            y = np.concatenate([win] * H)
            z = self._rng.standard_normal((H * B, N, NUM_JOINTS, 3)).astype(np.float32)
            x = np.concatenate([x_T] * H) + np.einsum("jab,hnjb->hnja", self._chol, z)
            x = np.ascontiguousarray(x, dtype=np.float32)
        for (t, _), coef in zip(self.schedule.pairs(), self._coefs):
            e = np.ascontiguousarray(self.backend.denoise(y, x, t), dtype=np.float32)
            _C.ddim_update(x, e, x, *coef)
        if H > 1:
            x = x.reshape(H, B, N, NUM_JOINTS, 3).mean(axis=0)
        self._due[slots] = False
        k = N - 1 - d
        return TickResult([self._ids[s] for s in slots], x[:, k] * 1000.0, x_T[:, k] * 1000.0,
                          self._times[slots, -1 - d])
