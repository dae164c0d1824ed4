"""The streaming pipeline: one frame per stream and tick through the incremental lifter and
K incremental denoiser steps, with per-stream key/value ring caches.

The tick (DESIGN.md; issue 5)::

    push(stream, kp2d (17, 2) px, conf (17,), t) → that stream's newest normalised frame
    tick(): streams 0 … hi−1 (hi = 1 + the highest slot with a new frame) in one batch:
            lag (hi, M)     ← how old each ring slot of every stream is (empty slots masked)
            lifter step     → x_T (hi, 17, 3) and the new frame's keys/values → kv_push (posert._C)
            for each DDIM step k (own cache per k):
                denoiser step → ê and keys/values → kv_push; x ← fused DDIM update (posert._C)
            report x_0 (refined) and x_T (lifter only) of the streams with a new frame, in mm

The models' temporal attention uses relative positions over a fixed span, so every cached key and
value stays valid as the stream advances: a tick costs one frame of work whatever the receptive
field, and its output equals running the models on the whole stream at once (tested).
Cache storage is (2·layers, streams, 17, heads, M, C/heads); the first ``hi`` streams of every
layer are one contiguous block, which the backend reads in place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from posert import _C
from posert.camera import Camera
from posert.models.diffusion import Schedule
from posert.runtime.reprojection import (
    BONE_EMA,
    BONE_GATE,
    BONE_HORIZON,
    BONE_VIEW_CAP,
    BONE_VIEW_POWER,
    DISTANCE_INDEX,
    NOISE_FALLBACK,
    NOISE_MIN_JOINTS,
    NOISE_Q,
    NOISE_TAU,
)
from posert.skeleton import FLIP_PERM, NUM_JOINTS, PARENTS, ROOT

_PARENTS = np.array(PARENTS, np.int64)
_MIRROR = np.asarray(FLIP_PERM, np.int64)

CHANNELS = 3  # normalised x, y, confidence


def ring_lags(count: np.ndarray, M: int, out: np.ndarray | None = None) -> np.ndarray:
    """Lag of every ring slot for streams that have seen ``count`` (B,) frames before the new one:
    (B, M) int64, slot w holds frame m (m ≡ w mod M, the latest such m < count) at lag count − m
    in 1…M, or M + 1 where the slot is still empty. The new frame is then written to slot
    count mod M."""
    w = np.arange(M)
    n = count.astype(np.int64)[:, None]
    lag = (n - 1 - w) % M + 1
    lag[lag > n] = M + 1
    if out is not None:
        out[...] = lag
        return out
    return lag

def _rows_view(a: np.ndarray) -> np.ndarray:
    """(G, B, 17, heads, [M,] d) → (G, B, 17·heads, [M,] d), the layout of ``_C.kv_push``
    (a view when ``a`` is C-contiguous float32, else one copy)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3], *a.shape[4:])


@dataclass
class TickResult:
    """Output of one :meth:`Pipeline.tick`.

    Attributes:
        stream_ids: the streams served, in batch order.
        refined: (B, 17, 3) float32 refined poses, mm, camera frame, root-relative (pelvis = 0);
            for a stream added with a ``camera``, after the camera-aware correction
            (:meth:`Pipeline.add_stream`).
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
        backend: ``"auto"`` (default: ``"native"`` at fp32, else ``"onnxruntime"``), ``"native"``
            (CPU, posert's fused C++ step kernel, FP32), ``"onnxruntime"`` (CPU; FP32, FP16, INT8),
            ``"torch"`` (reference), ``"tensorrt"``, ``"cuda"`` (the whole tick as one CUDA graph on
            the GPU, H = 1) or a backend object (see :mod:`posert.runtime.backends`).
        max_streams: capacity; every buffer and cache for this many streams is allocated once.
        lifter, refiner: checkpoint paths (default: the committed ``checkpoints/``).
        threads: inference threads (default: one per core).
        ddim_steps: K, the number of DDIM steps (default: the checkpoint's). The denoiser is
            trained on every t in [1, T], so any 1 ≤ K ≤ T is valid.
        hypotheses: H (DiffHPE-style multi-hypothesis averaging). H > 1 folds H copies of every
            stream into the denoiser batch (each with its own caches), starts each from
            x_T + δ_h and averages the H refined poses; the lifter runs once. δ_h is drawn from
            the CND's residual covariance Σ_a|b and evolves per stream as the CND's AR(1) process
            (ρ of the refiner checkpoint), so a hypothesis is consistent in time instead of
            jittering from tick to tick. ``seed`` fixes the draws.
        workers: 1, or 2 to split a tick of at least ``2 · min_shard`` streams into two blocks
            that run concurrently (backends with ``concurrent_runs``: native and ONNX Runtime;
            H = 1 only). Default: 2 where the process may use ≥ 2 cores. One ORT thread per block
            beats ORT's own intra-op threads on these small graphs (benchmarks/RESULTS.md).
        precision: ``fp32`` (default), ``fp16`` or ``int8`` models, for a backend given by name.
        cnd_mean: subtract the CND's conditional mean from x_T before the DDIM steps
            (x_T − μ_a|b(y, x_T), one affine map per frame; :class:`~posert.models.diffusion.CND`).
            Default ``None``: as the refiner checkpoint says (``subtract_mean``, set for
            denoisers trained with ``--noise cnd0``, as the committed one is). ``lifted`` stays
            x_T. ValueError when True and the backend has no CND.
        mean_ema: α in (0, 1] of the causal EMA μ̄ of μ_a|b along each stream that is subtracted
            instead of μ_a|b itself (:class:`~posert.models.diffusion.CND`; α = 1: μ_a|b as it
            is). Default ``None``: the checkpoint's ``mean_ema`` (0.3 for the committed refiner,
            chosen on the validation motion: benchmarks/mean_ema.py). A stream's μ̄ restarts at
            its first frame. ValueError outside (0, 1].
        attention: for ``"onnxruntime"``, how the attention cores of a step run: ``auto``
            (default: ``kernel`` at fp32, else ``graph``), ``kernel`` (split step graphs with the
            C++ attention cores between them) or ``graph`` (one ONNX graph per step); see
            :meth:`~posert.runtime.backends.onnxruntime.OrtBackend.from_checkpoints`.
        reprojection: which streams get the camera-aware correction (:meth:`add_stream`):
            ``"guess"`` (default) every stream, with the ``camera`` it was added with or else
            :meth:`Camera.guess <posert.camera.Camera.guess>` intrinsics for its image size
            (measured within 0.3 mm of the calibration's effect: benchmarks/RESULTS.md,
            session 16); ``"given"`` only streams added with a ``camera``; ``"off"`` none (the
            refiner's output as it is). ValueError for anything else.
        reprojection_ema: β of the causal EMA of the camera-aware correction (:meth:`add_stream`).
            ``"auto"`` (default): per stream, the steady-state Kalman gain for the 2D noise
            estimated from that stream's innovations
            (:func:`~posert.runtime.reprojection.noise_gain`): near 1 for precise 2D (mocap,
            synthetic, ground truth), which is then followed as it is, and near 0.1 for a
            detector's 2–8 px of jitter, which it does not pass on (benchmarks/RESULTS.md,
            session 24). A float in (0, 1] fixes β for every stream (1: each frame's own
            correction; sessions 18–23 used 0.1). ValueError otherwise.
        bone_depth: after that correction, set each bone's extent along the line of sight from
            the stream's running mean bone lengths
            (:func:`~posert.runtime.reprojection.bone_depth_correction`; default on, for the
            streams that get the correction). The depth the 2D does not observe then follows the
            one thing about the person that does not change; benchmarks/bone_depth.py measures it.
        bone_view_power: each frame's weight in a bone's running length is min(1, e / L₀)^P,
            P = bone_view_power, e the bone's extent across the line of sight (what the 2D
            observes) and L₀ its running length so far
            (:data:`~posert.runtime.reprojection.BONE_VIEW_POWER`, 4, by default): the mean
            follows the frames where the 2D sees the bone at its full length. 0: every frame
            alike (session 21's plain mean). ValueError if negative or not finite.
        bone_view_cap: that L₀ is the weighted length itself capped at bone_view_cap times the
            plain running length (:data:`~posert.runtime.reprojection.BONE_VIEW_CAP`, 1.25, by
            default, session 23), so a bad first frame is forgotten; ``inf``: no cap (session
            22), where one bad start holds a bone's length wrong for seconds. ValueError if < 1
            or NaN.
        bone_symmetry: pool each left or right bone's running length with its mirror image's
            (default True; a person is left/right symmetric).
        distance_index: the tracking index λ of the α-β tracker through which each stream's
            distance R_z (the least-squares position the correction places the pose at) passes
            (:func:`~posert.runtime.reprojection.distance_filter`; default
            :data:`~posert.runtime.reprojection.DISTANCE_INDEX`, 1e-3). Every lateral coordinate
            scales with R_z, and a frame's own R_z jitters with the refined pose's depth errors
            (benchmarks/RESULTS.md, session 25). 0: each frame's own R_z (sessions 16–24).
            ValueError if negative or not finite.
        pixel_noise: with ``reprojection_ema="auto"``, also estimate the 2D noise from the
            keypoints' own third differences (:func:`~posert.runtime.reprojection.pixel_noise`)
            and let the smaller of that and the innovations' estimate set β (default True; False:
            the innovations alone, session 24, whose estimate rises to ~10 px where the refiner
            lags fast motion such as a backflip).

    Input per frame: keypoints in pixels of an image of the stream's size, H36M-17 order, and a
    confidence per joint in [0, 1]; confidence 0 marks a missing joint (its coordinates are
    ignored and may be NaN). Output: see :class:`TickResult`. A stream's first frames are lifted
    from the frames it has (no padding), exactly as the models see a sequence start in training.

    Bad input raises before anything is written, so one stream's bad frame never touches
    another stream's state: ``KeyError`` for an unknown stream, ``ValueError`` for a wrong
    shape, a NaN/inf coordinate on a visible joint, a confidence outside [0, 1], or a
    timestamp that does not increase.
    """

    REPROJECTION = ("guess", "given", "off")

    def __init__(self, backend="auto", max_streams: int = 64, lifter: str | None = None,
                 refiner: str | None = None, threads: int | None = None, ddim_steps: int | None = None,
                 hypotheses: int = 1, seed: int = 0, precision: str = "fp32", workers: int | None = None,
                 min_shard: int = 4, attention: str = "auto", cnd_mean: bool | None = None,
                 mean_ema: float | None = None, reprojection: str = "guess", reprojection_ema: float | str = "auto",
                 bone_depth: bool = True, bone_view_power: float = BONE_VIEW_POWER, bone_symmetry: bool = True,
                 bone_view_cap: float = BONE_VIEW_CAP, distance_index: float = DISTANCE_INDEX,
                 pixel_noise: bool = True):
        if isinstance(backend, str):
            from posert.runtime.backends import create_backend

            backend = create_backend(backend, lifter, refiner, threads, precision, attention)
        self.backend = backend
        self.window = backend.window
        self.schedule = backend.schedule if ddim_steps is None else Schedule(backend.schedule.T, ddim_steps)
        self._coefs = [self.schedule.ddim_coefficients(t, tp) for t, tp in self.schedule.pairs()]
        if hypotheses < 1:
            raise ValueError(f"hypotheses must be ≥ 1, got {hypotheses}")
        if hypotheses > 1 and getattr(backend, "cnd", None) is None:
            raise ValueError("hypotheses > 1 needs the refiner's CND (backend.cnd)")
        if max_streams < 1:
            raise ValueError(f"max_streams must be ≥ 1, got {max_streams}")
        self.hypotheses = H = hypotheses
        self._rng = np.random.default_rng(seed)
        if H > 1:
            self._cnd, self._rho = backend.cnd, float(backend.cnd.rho)
            self._delta = np.zeros((max_streams, H, NUM_JOINTS, 3), np.float32)
        self.max_streams = S = max_streams
        cnd = getattr(backend, "cnd", None)
        if cnd_mean and cnd is None:
            raise ValueError("cnd_mean=True needs the refiner's CND (backend.cnd)")
        self.cnd_mean = bool(cnd.subtract_mean if cnd_mean is None and cnd is not None else cnd_mean)
        if mean_ema is None:
            mean_ema = cnd.mean_ema if cnd is not None else 1.0
        self.mean_ema = float(mean_ema)
        if not 0.0 < self.mean_ema <= 1.0:
            raise ValueError(f"mean_ema must be in (0, 1], got {self.mean_ema}")
        if isinstance(reprojection_ema, str):
            if reprojection_ema != "auto":
                raise ValueError(f"reprojection_ema must be 'auto' or in (0, 1], got {reprojection_ema!r}")
        elif not 0.0 < reprojection_ema <= 1.0:
            raise ValueError(f"reprojection_ema must be 'auto' or in (0, 1], got {reprojection_ema}")
        else:
            reprojection_ema = float(reprojection_ema)
        self.reprojection_ema = reprojection_ema
        if reprojection not in self.REPROJECTION:
            raise ValueError(f"reprojection must be one of {self.REPROJECTION}, got {reprojection!r}")
        self.reprojection = reprojection
        self.bone_depth = bool(bone_depth)
        if not (np.isfinite(bone_view_power) and bone_view_power >= 0):
            raise ValueError(f"bone_view_power must be finite and ≥ 0, got {bone_view_power}")
        self.bone_view_power = float(bone_view_power)
        self.bone_symmetry = bool(bone_symmetry)
        if not bone_view_cap >= 1:
            raise ValueError(f"bone_view_cap must be ≥ 1 (inf: no cap), got {bone_view_cap}")
        self.bone_view_cap = float(bone_view_cap)
        if not (np.isfinite(distance_index) and distance_index >= 0):
            raise ValueError(f"distance_index must be finite and ≥ 0 (0: off), got {distance_index}")
        self.distance_index = float(distance_index)
        self.pixel_noise = bool(pixel_noise)
        shift = None
        if self.cnd_mean:
            A, c = cnd.mean_map()
            shift = (A.astype(np.float32), c.astype(np.float32))
        # A resident backend (the CUDA-graph one) owns the caches and runs whole ticks on its device.
        self._resident = bool(getattr(backend, "resident", False))
        self._shift = None if self._resident else shift
        if self._resident:
            if H > 1:
                raise ValueError("hypotheses > 1 runs on the host backends (onnxruntime, torch, tensorrt) only")
            backend.allocate(S, self.schedule.pairs(), self._coefs, shift, self.mean_ema)
        else:
            self._b = np.zeros((S, 5 * NUM_JOINTS), np.float32)  # [y, x_T] of a frame, for μ_a|b
            self._mu = np.zeros((S, NUM_JOINTS, 3), np.float32)
            self._mubar = np.zeros((S, NUM_JOINTS, 3), np.float32)  # μ̄, the causal EMA of μ_a|b per stream
            self._w = np.zeros(S, np.float32)  # this tick's EMA weight per slot (0: not due)
        lc, dc = backend.lifter_cache_shape, backend.denoiser_cache_shape
        C = 0 if self._resident else S  # no host caches next to a resident backend
        kv = getattr(backend, "cache_dtype", np.float32)  # the native backend's caches are float16
        self._lcache = np.zeros((lc[0], C, *lc[1:]), kv)
        self._dcache = [np.zeros((dc[0], C * H, *dc[1:]), kv) for _ in self._coefs]
        self._lag_l = np.zeros((C, lc[3]), np.int64)
        self._lag_d = np.zeros((C * H, dc[3]), np.int64)
        self._slots: dict[Hashable, int] = {}
        self._ids: list[Hashable | None] = [None] * S
        self._size = np.zeros((S, 2), np.float32)  # (width, height) px
        # camera-aware correction: intrinsics per slot, the newest pixels, and Δ̄ (mm) per slot
        self._has_cam = np.zeros(S, bool)
        self._K = np.tile(np.eye(3), (S, 1, 1))
        self._dist = np.zeros((S, 5))
        self._px = np.zeros((S, NUM_JOINTS, 2))
        self._pconf = np.zeros((S, NUM_JOINTS))
        self._dbar = np.zeros((S, NUM_JOINTS, 3))
        # per slot and bone: running mean lengths (mm; view-weighted, plain), their weights, δ̄ (mm)
        self._blen = np.zeros((S, NUM_JOINTS - 1, 2))
        self._bcount = np.zeros((S, NUM_JOINTS - 1, 2))
        self._bdelta = np.zeros((S, NUM_JOINTS - 1))
        self._nhist = np.full((S, 2, NUM_JOINTS, 2), np.nan)  # adaptive β: the last two innovations, px
        self._nvar = np.full((S, 2), np.nan)  # and the 2D noise variance (px²), frames it has seen
        self._nraw = np.full((S, 3, NUM_JOINTS, 2), np.nan)  # the last three frames' keypoints, px
        self._nrawvar = np.full((S, 2), np.nan)  # and the noise variance from their third differences
        self._dstate = np.zeros((S, 4))  # the distance tracker: R_z (mm), its velocity, updates
        self._last_t = np.full(S, -np.inf)
        self._count = np.zeros(S, np.int64)  # frames already in the caches
        self._due = np.zeros(S, bool)
        self._inp = np.zeros((S * H, NUM_JOINTS, CHANNELS), np.float32)  # newest frame (H copies when H > 1)
        self._x = np.zeros((S * H, NUM_JOINTS, 3), np.float32)  # the DDIM state x_k, updated in place
        # a fused backend's per-tick row arguments (native.py): x_T and cache-write rows per slot
        self._fused = bool(getattr(backend, "fused", False)) and not self._resident
        if self._fused:
            self._xT = np.zeros((S, NUM_JOINTS, 3), np.float32)
            self._wrows = np.full(S * H, -1, np.int32)
            self._coef_np = [np.array(c, np.float32) for c in self._coefs]
        self._lrows = _rows_view(self._lcache)  # (G, S, 17·heads, M, d) views for _C.kv_push
        self._drows = [_rows_view(c) for c in self._dcache]
        self._blocks: dict[tuple[int, int], dict] = {}
        self.min_shard = max(1, int(min_shard))
        if workers is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            workers = 2 if cores >= 2 else 1
        if workers not in (1, 2):
            raise ValueError(f"workers must be 1 or 2, got {workers}")
        concurrent = getattr(backend, "concurrent_runs", False) and H == 1
        self.workers = workers if concurrent else 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="posert-shard") if self.workers == 2 else None

    def close(self) -> None:
        """Stop the shard worker thread (also done at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def streams(self) -> list[Hashable]:
        return list(self._slots)

    def add_stream(self, stream_id: Hashable, width: int, height: int, camera: Camera | None = None) -> None:
        """Register a stream whose keypoints come from ``width`` × ``height`` pixel images.

        ``camera``: the calibrated camera the keypoints come from (its ``K`` and ``dist`` are
        used; ``R``, ``t`` and the image size are not); without one, :meth:`Camera.guess
        <posert.camera.Camera.guess>` for the image size stands in when the pipeline's
        ``reprojection`` is ``"guess"`` (the default). Each refined pose is then corrected
        toward its 2D: :func:`~posert.runtime.reprojection.ray_correction` moves every visible
        joint across its viewing direction onto its camera ray, keeping its depth (in C++ on the
        tick path). The per-joint correction Δ (mm) is smoothed along the stream,
        Δ̄ ← Δ̄ + w (Δ − Δ̄), with w = confidence · max(β, 1 / (n + 1)) at the stream's frame n
        (β = ``reprojection_ema``, by default the gain for this stream's estimated 2D noise,
        :func:`~posert.runtime.reprojection.noise_gain`; a running mean over the first 1/β
        frames), and the output is the refined pose + Δ̄, re-rooted. A missing joint keeps its
        Δ̄, and so does every joint of a frame whose correction is not valid (fewer than two
        joints, or the 2D puts the pose behind the camera). The 2D noise is the smaller of two
        running estimates, from the innovations and from the keypoints' own third differences
        (:func:`~posert.runtime.reprojection.pixel_noise`). With ``bone_depth`` (the default)
        each bone's extent along the line of sight is then set from the stream's running bone
        lengths (:func:`~posert.runtime.reprojection.bone_depth_correction`, EMA weight
        max(:data:`~posert.runtime.reprojection.BONE_EMA`, 1 / (n + 1)); the lengths weighted
        toward frames where the 2D sees the bone at its full length, left and right pooled).
        Last, with ``distance_index`` > 0 (the default), the pose moves in depth along its lines
        of sight to the stream's tracked distance
        (:func:`~posert.runtime.reprojection.distance_track`,
        :func:`~posert.runtime.reprojection.distance_correction`), so that it does not grow and
        shrink with each frame's least-squares distance. ``lifted`` is not corrected. With
        ``reprojection="off"``, or ``"given"`` and no camera,
        nothing changes.

        Raises ValueError if the id exists, the size is not positive, capacity is reached, or
        the camera's ``K`` is not a finite 3×3 upper-triangular matrix with positive focal
        lengths or its ``dist`` is not 5 finite numbers.
        """
        if stream_id in self._slots:
            raise ValueError(f"stream {stream_id!r} already exists")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}×{height}")
        if camera is None and self.reprojection == "guess":
            camera = Camera.guess(width, height)
        if self.reprojection == "off":
            camera = None
        if camera is not None:
            K, dist = np.asarray(camera.K, dtype=np.float64), np.asarray(camera.dist, dtype=np.float64)
            if (K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0
                    or np.any(K[[1, 2, 2], [0, 0, 1]] != 0) or K[2, 2] != 1):
                raise ValueError(f"camera.K must be a finite 3×3 intrinsic matrix [[fx, s, cx], [0, fy, cy], "
                                 f"[0, 0, 1]] with fx, fy > 0, got {camera.K!r}")
            if dist.shape != (5,) or not np.all(np.isfinite(dist)):
                raise ValueError(f"camera.dist must be 5 finite numbers (k1, k2, p1, p2, k3), got {camera.dist!r}")
        free = [i for i, s in enumerate(self._ids) if s is None]
        if not free:
            raise ValueError(f"all {self.max_streams} stream slots are in use")
        slot = free[0]  # lowest free slot: live streams stay packed at the front of the caches
        self._slots[stream_id], self._ids[slot] = slot, stream_id
        self._size[slot] = (width, height)
        self._has_cam[slot] = camera is not None
        if camera is not None:
            self._K[slot], self._dist[slot] = K, dist
        self._dbar[slot] = 0.0
        self._blen[slot] = self._bcount[slot] = self._bdelta[slot] = 0.0
        self._nhist[slot] = self._nvar[slot] = self._nraw[slot] = self._nrawvar[slot] = np.nan
        self._dstate[slot] = 0.0
        self._last_t[slot] = -np.inf
        self._count[slot] = 0  # every cache slot of this stream now reads as empty
        self._due[slot] = False

    def remove_stream(self, stream_id: Hashable) -> None:
        """Forget a stream and free its slot (KeyError if unknown)."""
        slot = self._slot(stream_id)
        del self._slots[stream_id]
        self._ids[slot] = None
        self._due[slot] = False

    def keypoint_noise(self, stream_id: Hashable) -> float:
        """The stream's 2D keypoint noise σ̂ (px, per axis) that sets its β with
        ``reprojection_ema="auto"`` (:func:`~posert.runtime.reprojection.noise_gain`): the smaller
        of two running estimates, from its innovations and from its keypoints' own third
        differences (:func:`~posert.runtime.reprojection.pixel_noise`; unless ``pixel_noise`` is
        False), e.g. ~0.1 px for ground-truth 2D and ~σ for a detector's Gaussian jitter of σ px.
        NaN before the stream's third frame, for a stream that gets no camera-aware correction,
        and with a fixed ``reprojection_ema``. KeyError if unknown."""
        slot = self._slot(stream_id)
        var = np.array([self._nvar[slot, 0], self._nrawvar[slot, 0]])
        return float(np.sqrt(np.nanmin(var))) if np.isfinite(var).any() else float("nan")

    def _slot(self, stream_id: Hashable) -> int:
        try:
            return self._slots[stream_id]
        except (KeyError, TypeError):
            raise KeyError(f"unknown stream {stream_id!r}; call add_stream() first") from None

    def _prepare(self, slots: np.ndarray, kp2d_px, conf, timestamps) -> tuple[np.ndarray, np.ndarray]:
        """Validate the frames of ``slots`` (B,) at once; returns their normalised form
        (B, 17, 3) float32 and timestamps (B,) float64. Writes nothing. The error names the
        first offending stream."""
        B = len(slots)
        kp = np.ascontiguousarray(kp2d_px, dtype=np.float64)
        if kp.shape != (B, NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2) per frame, got {kp.shape[1:]}")
        if conf is None:
            c = None  # all visible
        else:
            c = np.ascontiguousarray(conf, dtype=np.float64)
            if c.shape != (B, NUM_JOINTS):
                raise ValueError(f"conf must have shape ({NUM_JOINTS},) per frame, got {c.shape[1:]}")

        def fail(bad: np.ndarray, msg: str):
            raise ValueError(f"stream {self._ids[slots[int(np.argmax(bad))]]!r}: {msg}")

        # Confidences, NaN checks and the normalisation of every frame in one C++ call
        # (posert._C.prepare_frames; the same float64 arithmetic as normalize_screen).
        f = np.empty((B, NUM_JOINTS, CHANNELS), np.float32)
        bad, code = _C.prepare_frames(kp, c, self._size, slots, f)
        if code == 1:
            raise ValueError(f"stream {self._ids[slots[bad]]!r}: conf must be finite and in [0, 1]")
        if code == 2:
            raise ValueError(f"stream {self._ids[slots[bad]]!r}: kp2d_px has NaN/inf on a joint with confidence > 0 "
                             "(set its confidence to 0)")
        last = self._last_t[slots]
        if timestamps is None:
            t = np.where(np.isfinite(last), last + 1.0, 0.0)
        else:
            t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
            if t.shape != (B,):
                raise ValueError(f"need one timestamp per frame: {B}, got {t.shape[0]}")
        bad_t = ~np.isfinite(t) | (t <= last)
        if bad_t.any():
            i = int(np.argmax(bad_t))
            fail(bad_t, f"timestamp {t[i]} does not increase (last {last[i]})")
        return f, t

    def _store(self, slots: np.ndarray, frames: np.ndarray, t: np.ndarray) -> None:
        H = self.hypotheses
        if H == 1:
            self._inp[slots] = frames
        else:
            self._inp.reshape(self.max_streams, H, NUM_JOINTS, CHANNELS)[slots] = frames[:, None]
        self._last_t[slots] = t
        self._due[slots] = True

    def push(self, stream_id: Hashable, kp2d_px, conf=None, timestamp: float | None = None) -> None:
        """Give a stream its next frame (one frame per stream and tick).

        Args:
            kp2d_px: (17, 2) pixels, H36M-17 order.
            conf: (17,) confidences in [0, 1] (default all 1); 0 = missing joint.
            timestamp: seconds (or any increasing clock); default: previous + 1.
        Raises ValueError also if the stream already has a frame waiting for this tick.
        """
        kp = np.asarray(kp2d_px)
        if kp.shape != (NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2), got {kp.shape}")
        self.push_many([stream_id], kp[None], None if conf is None else np.asarray(conf)[None],
                       None if timestamp is None else [timestamp])

    def push_many(self, stream_ids: Sequence[Hashable], kp2d_px: np.ndarray, conf: np.ndarray | None = None,
                  timestamps: Sequence[float] | None = None) -> None:
        """Give each of several streams its next frame: kp2d_px (B, 17, 2) pixels, conf (B, 17)
        in [0, 1] (default all 1), timestamps (B,) (default: each stream's previous + 1).

        Every frame is validated (vectorised, no per-stream Python work beyond the id lookup)
        before any is written; on error nothing is pushed. Raises KeyError for an unknown stream,
        ValueError as :meth:`push` does, naming the offending stream.
        """
        kp = np.asarray(kp2d_px)
        if kp.ndim != 3 or kp.shape[0] != len(stream_ids):
            raise ValueError(f"kp2d_px must have shape ({len(stream_ids)}, 17, 2), got {kp.shape}")
        slots = np.fromiter((self._slot(s) for s in stream_ids), np.int64, len(stream_ids))
        if len(slots) > 1 and len(np.unique(slots)) != len(slots):
            raise ValueError("push_many: a stream appears twice")
        waiting = self._due[slots]
        if waiting.any():
            sid = self._ids[slots[int(np.argmax(waiting))]]
            raise ValueError(f"stream {sid!r} already has a frame for this tick; call tick() first")
        frames, t = self._prepare(slots, kp, conf, timestamps)
        self._store(slots, frames, t)
        cam = self._has_cam[slots]
        if cam.all():  # the pixels of streams with a camera, for the correction after the tick
            self._px[slots] = kp
            self._pconf[slots] = frames[:, :, 2]
        elif cam.any():
            self._px[slots[cam]] = kp[cam]
            self._pconf[slots[cam]] = frames[cam, :, 2]

    def tick(self) -> TickResult:
        """Lift and refine the newest frame of every stream that received one since the last tick.

        With ``workers`` = 2 and at least ``2 · min_shard`` streams due (H = 1), the due streams are
        split into two contiguous blocks of slots that run the whole chain concurrently, one on the
        calling thread and one on a worker thread (ONNX Runtime releases the GIL while it runs).
        Each row's arithmetic is the same as in one batch, so the output does not change (tested).
        """
        due = np.flatnonzero(self._due).astype(np.int32)
        if len(due) == 0:
            empty = np.zeros((0, NUM_JOINTS, 3), np.float32)
            return TickResult([], empty, empty.copy(), np.zeros(0))
        hi = int(due[-1]) + 1
        if self._resident:
            x, x_T = self.backend.run(hi, due, self._inp, self._count)
        elif self._pool is not None and len(due) >= 2 * self.min_shard:
            half = len(due) // 2
            cut = int(due[half])  # slots [0, cut) here, [cut, hi) on the worker
            other = self._pool.submit(self._run, cut, hi, due[half:])
            try:
                x_a, xT_a = self._run(0, cut, due[:half])
            finally:
                x_b, xT_b = other.result()  # never leave the worker writing after an error here
            x, x_T = np.concatenate([x_a, x_b]), np.concatenate([xT_a, xT_b])
        else:
            x, x_T = self._run(0, hi, due)
        refined = x * 1000.0
        if self._has_cam[due].any():
            self._reproject(due, refined)
        self._count[due] += 1
        self._due[due] = False
        return TickResult([self._ids[s] for s in due], refined, x_T * 1000.0, self._last_t[due].copy())

    def _reproject(self, due: np.ndarray, refined: np.ndarray) -> None:
        """The camera-aware correction (:meth:`add_stream`) of the rows of ``refined`` (len(due),
        17, 3) mm whose streams have a camera, in place, before ``_count`` advances: one C++ call
        (``posert._C.reproject``; the NumPy form, :func:`ray_correction`, is its tested reference)."""
        has = self._has_cam[due]
        rows = np.arange(len(due)) if has.all() else np.flatnonzero(has)
        slots = due[rows].astype(np.int64)
        first = 1.0 / (self._count[slots] + 1.0)
        auto = self.reprojection_ema == "auto"
        weight = first if auto else np.maximum(self.reprojection_ema, first)
        noise = dict(noise_hist=self._nhist, noise_var=self._nvar, noise_q=NOISE_Q, noise_tau=NOISE_TAU,
                     noise_fallback=NOISE_FALLBACK, noise_min_joints=NOISE_MIN_JOINTS) if auto else {}
        if auto and self.pixel_noise:
            noise.update(noise_raw=self._nraw, noise_raw_var=self._nrawvar)
        if self.distance_index > 0:
            noise.update(distance=self._dstate, distance_index=self.distance_index)
        if self.bone_depth:
            _C.reproject(refined, rows, slots, self._px, self._pconf, self._K, self._dist, self._dbar, weight,
                         parents=_PARENTS, bone_length=self._blen, bone_count=self._bcount, bone_delta=self._bdelta,
                         gate=BONE_GATE, horizon=float(BONE_HORIZON), view_power=self.bone_view_power,
                         mirror=_MIRROR if self.bone_symmetry else None, view_cap=self.bone_view_cap,
                         bone_ema=np.maximum(BONE_EMA, first), **noise)
        else:
            _C.reproject(refined, rows, slots, self._px, self._pconf, self._K, self._dist, self._dbar, weight, **noise)

    def _block(self, lo: int, hi: int) -> dict:
        """The views of every buffer a block of slots [lo, hi) feeds the backend, made once per
        block and reused (the ORT backend then finds its I/O binding by object identity)."""
        v = self._blocks.get((lo, hi))
        if v is None:
            if len(self._blocks) > 256:  # stream churn: drop old blocks (views are cheap to remake)
                self._blocks.clear()
            H, lc = self.hypotheses, self._lcache
            a, b = lo * H, hi * H
            v = {"inp_l": self._inp[a:b:H] if H > 1 else self._inp[lo:hi], "lag_l": self._lag_l[lo:hi],
                 "lcaches": [lc[g, lo:hi] for g in range(lc.shape[0])],
                 "x": self._x[a:b], "inp_d": self._inp[a:b], "lag_d": self._lag_d[a:b],
                 "dcaches": [[c[g, a:b] for g in range(c.shape[0])] for c in self._dcache]}
            self._blocks[(lo, hi)] = v
        return v

    def _run(self, lo: int, hi: int, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chain for the block of slots [lo, hi): returns (refined, x_T), (len(due), 17, 3)
        metres, of the ``due`` slots (absolute indices in [lo, hi)). Reads and writes only rows
        of that block, so two blocks may run at once."""
        if self._fused:
            return self._run_fused(lo, hi, due)
        H = self.hypotheses
        v = self._block(lo, hi)
        count = self._count[lo:hi]
        lc = self._lcache
        ring_lags(count, lc.shape[4], v["lag_l"])
        x_T, kv = self.backend.lift_step(v["inp_l"], v["lag_l"], v["lcaches"])
        _C.kv_push(self._lrows, _rows_view(kv), due, (self._count[due] % lc.shape[4]).astype(np.int32), lo)
        x = v["x"]  # the same buffer every tick: the backend's input bindings stay valid
        if H == 1:
            np.copyto(x, x_T)
            rows = due
        else:
            assert lo == 0, "hypotheses run unsharded"
            self._hypotheses(x_T, due, hi, x)
            rows = (due[:, None] * H + np.arange(H, dtype=np.int32)).reshape(-1)
        self._shift_x(lo, hi, due, v, x_T, x)
        M = self._dcache[0].shape[4]
        lag_d = ring_lags(np.repeat(count, H) if H > 1 else count, M, v["lag_d"])
        pos = (np.repeat(self._count[due], H) % M).astype(np.int32)
        for (t, _), coef, store, caches in zip(self.schedule.pairs(), self._coefs, self._drows, v["dcaches"]):
            e, kv = self.backend.denoise_step(v["inp_d"], x, t, lag_d, caches)
            _C.kv_push(store, _rows_view(kv), rows, pos, lo * H)
            _C.ddim_update(x, np.ascontiguousarray(e, dtype=np.float32), x, *coef)
        if H > 1:
            x = x.reshape(hi - lo, H, NUM_JOINTS, 3).mean(axis=1)
        return x[due - lo], x_T[due - lo]  # copies: x_T may be a buffer the backend reuses

    def _shift_x(self, lo: int, hi: int, due: np.ndarray, v: dict, x_T: np.ndarray, x: np.ndarray) -> None:
        """x ← x − μ̄ for every row of the block [lo, hi) (no-op without the CND shift): μ = μ_a|b(y,
        x_T) of each slot's newest frame, μ̄ its causal EMA per stream (preallocated buffers)."""
        if self._shift is None:
            return
        H = self.hypotheses
        A, c = self._shift
        b, mu = self._b[lo:hi], self._mu[lo:hi]
        b[:, :2 * NUM_JOINTS] = v["inp_l"][..., :2].reshape(hi - lo, -1)
        b[:, 2 * NUM_JOINTS:] = x_T.reshape(hi - lo, -1)
        np.matmul(b, A, out=mu.reshape(hi - lo, -1))
        mu += c.reshape(NUM_JOINTS, 3)
        # μ̄ ← μ̄ + w (μ − μ̄), w = mean_ema for due streams and 0 for the others; at a stream's
        # first frame μ̄ = μ exactly (nothing of the slot's previous stream survives)
        w, mubar = self._w[lo:hi], self._mubar[lo:hi]
        w[:] = 0.0
        w[due - lo] = self.mean_ema
        first = due[self._count[due] == 0] - lo
        mubar[first] = mu[first]
        mu -= mubar
        mu *= w[:, None, None]
        mubar += mu
        x.reshape(hi - lo, H, NUM_JOINTS, 3)[...] -= mubar[:, None]

    def _run_fused(self, lo: int, hi: int, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_run` on a fused backend (:mod:`~posert.runtime.backends.native`): the lifter and
        each denoiser step are one kernel call that writes the due rows' caches and, for the
        denoiser, updates x in place; the same arithmetic as the step-by-step chain."""
        H = self.hypotheses
        v = self._block(lo, hi)
        count = self._count[lo:hi]
        rows = self._wrows[lo:hi]
        rows[:] = -1
        rows[due - lo] = due
        x_T = self._xT[lo:hi]
        be = self.backend
        be.lift_fused(v["inp_l"], x_T, None, count, rows, self._lcache, lo)
        x = v["x"]
        if H == 1:
            np.copyto(x, x_T)
            count_d, rows_d = count, rows
        else:
            assert lo == 0, "hypotheses run unsharded"
            self._hypotheses(x_T, due, hi, x)
            count_d = np.repeat(count, H)
            rows_d = self._wrows[:hi * H]
            rows_d[:] = -1
            rows_d[(due[:, None] * H + np.arange(H)).reshape(-1)] = 0
        self._shift_x(lo, hi, due, v, x_T, x)
        for (t, _), coef, cache in zip(self.schedule.pairs(), self._coef_np, self._dcache):
            be.denoise_fused(v["inp_d"], x, t, coef, count_d, rows_d, cache, lo * H)
        if H > 1:
            x = x.reshape(hi - lo, H, NUM_JOINTS, 3).mean(axis=1)
        return x[due - lo], x_T[due - lo]  # fancy indexing: copies

    def _hypotheses(self, x_T: np.ndarray, due: np.ndarray, hi: int, out: np.ndarray) -> None:
        """Write x_T + δ_h for the (hi·H) denoiser rows into ``out``; δ advances one AR(1) step
        for due streams."""
        H = self.hypotheses
        z = self._cnd.draw_residual(self._rng.standard_normal((len(due), H, NUM_JOINTS, 3)).astype(np.float32))
        z[:, :, ROOT] = 0.0  # the pelvis stays at the origin
        first = (self._count[due] == 0)[:, None, None, None]
        rho = self._rho
        d = self._delta[due]
        self._delta[due] = np.where(first, z, rho * d + math.sqrt(1 - rho * rho) * z)
        out.reshape(hi, H, NUM_JOINTS, 3)[...] = x_T[:, None] + self._delta[:hi]
