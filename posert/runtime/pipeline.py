"""The streaming pipeline: many streams of 2D keypoints in, refined 3D poses out, one tick at a time.

A tick (docs/design.md, "The tick")::

    push(stream, kp2d (17, 2) px, conf (17,), t)   the stream's newest frame, validated and normalised
    tick():  the chain for every stream with a new frame, batched (posert.runtime.chain):
             lift → x_T − μ̄ → K × (denoise, cache push, DDIM update)
             the correction stage (posert.runtime.correction), per stream, with its camera
             the output guard (posert.runtime.guard): finite, possible poses, a health code each
             → TickResult: refined and lifted poses, mm, camera frame, root-relative
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from posert.camera import Camera
from posert.config import CorrectionConfig, PipelineConfig
from posert.models.diffusion import Schedule
from posert.runtime.backends.base import check_backend
from posert.runtime.chain import HostChain, ResidentChain
from posert.runtime.correction import Correction
from posert.runtime.flips import FlipFilter
from posert.runtime.guard import Guard, Health
from posert.runtime.hold import BoneHold
from posert.runtime.streams import StreamInfo, StreamTable
from posert.runtime.upright import UprightView
from posert.skeleton import FLIP_PERM, NUM_JOINTS

_OK, _COASTING, _RESET = int(Health.OK), int(Health.COASTING), int(Health.RESET)  # plain ints: the tick's hot path


@dataclass
class TickResult:
    """Output of one :meth:`Pipeline.tick`.

    Attributes:
        stream_ids: the streams served, in batch order.
        refined: (B, 17, 3) float32 refined poses, mm, camera frame, root-relative (pelvis = 0),
            after the correction stage for the streams it serves. Always finite and possible
            (the output guard): see ``health``.
        lifted: (B, 17, 3) float32 lifter-only poses (x_T), same frame and units, uncorrected.
        world: (B, 17, 3) float32 the refined poses in the world frame (z up), root-relative, mm:
            through the stream's camera orientation when it is known (``Camera.oriented``), else
            as a level camera sees them (:mod:`posert.runtime.upright`).
        timestamps: (B,) float64 timestamp of the reported frame of each stream.
        health: (B,) uint8 :class:`~posert.runtime.guard.Health` code of each pose.
        valid: (B,) bool, the pose comes from this frame and passed every check (OK or RESET).
        dropped: (B,) int32 visible joints of the frame that were out of view, taken as missing.
        seen: (B, 17) bool, the joints the stream's frame showed (confidence > 0 once the view
            margin and the upright view have dropped theirs). A joint not seen is held from its
            parent by the bone it was last shown with (:mod:`posert.runtime.hold`; the models'
            guess before then), 190–365 mm off on the camera classes' frames that cut the person
            off (``posert eval --cameras all``), so a robot should not act on it alone.
        latency_ms: the tick's own cost, ms: ``lift`` (the lifter step; NaN where the backend runs
            the tick as one launch), ``refine`` (the rest of the chain), ``correct`` (the correction
            stage and the guard) and ``tick`` (all of :meth:`Pipeline.tick`).
        output_time: ``time.time()`` when the tick returned, s: with wall-clock capture times as
            the timestamps, ``output_time - timestamps`` is each stream's capture→output latency.
    """

    stream_ids: list[Hashable]
    refined: np.ndarray
    lifted: np.ndarray
    timestamps: np.ndarray
    health: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    latency_ms: dict[str, float] = field(default_factory=dict)
    world: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_JOINTS, 3), np.float32))
    output_time: float = 0.0
    seen: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_JOINTS), bool))
    _buffers: dict[str, np.ndarray] | None = field(default=None, repr=False)

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
        config: a :class:`~posert.config.PipelineConfig` (default: every default).
        backend: a backend name (overrides ``config.backend.name``) or a backend object
            (:mod:`posert.runtime.backends.base`).
        max_streams, precision, threads, workers, lifter, refiner: shortcuts for the fields of
            ``config`` of the same name (:class:`~posert.config.BackendConfig`).
        correction: a :class:`~posert.config.CorrectionConfig`, or its ``mode`` alone (``guess``,
            ``given``, ``off``).

    Input per frame (the input contract): keypoints as a float32 or float64 array in pixels of an
    image of the stream's size, H36M-17 order, and a confidence per joint in [0, 1]; confidence 0
    marks a missing joint (its coordinates are ignored and may be NaN). A visible keypoint more
    than ``GuardConfig.view_margin`` image sizes outside the image is treated as missing and
    counted (``TickResult.dropped``, :meth:`stream_info`). A stream's first frames are lifted from
    the frames it has (no padding), as the models see a sequence start in training. Bad input
    raises before anything is written, so one stream's bad frame never touches another stream:
    KeyError for an unknown stream, TypeError for a dtype other than float, ValueError for a
    wrong shape, a NaN/inf (or beyond float32) coordinate on a visible joint, a confidence outside
    [0, 1] or a timestamp that does not increase.

    Output: every reported pose is finite and possible (the output guard), with a health code
    and a validity mask (:class:`TickResult`). A missing joint is still reported, held from its
    parent by the bone it was last shown with (:mod:`posert.runtime.hold`), and
    ``TickResult.seen`` says which joints the frame showed. A frame the detector mirrored (its
    front taken for its back, every left joint swapped with its right twin) for up to 0.2 s is
    flipped back before the models see it (:mod:`posert.runtime.flips`). A stream that coasts
    (too few visible joints) longer than ``GuardConfig.restart_after_s`` restarts when the person
    is back; a stream's state never outlives it (a new stream in its slot starts clean) and a
    stream's output does not depend on which other streams share its tick (bit for bit on the CPU
    backends).

    Threads: one thread drives a pipeline, the first one that uses it; a call from another
    thread raises RuntimeError (:meth:`adopt` hands it over). Use it as a context manager (or
    call :meth:`close`) to stop its shard worker thread.

    Raises ValueError for a config the backend cannot run (hypotheses or the CND mean without the
    refiner's CND, hypotheses on a resident backend) and whatever
    :func:`~posert.runtime.backends.create_backend` raises.
    """

    def __init__(self, config: PipelineConfig | None = None, /, *, backend=None, max_streams: int | None = None,
                 precision: str | None = None, threads: int | None = None, workers: int | None = None,
                 lifter: str | None = None, refiner: str | None = None,
                 correction: CorrectionConfig | str | None = None):
        cfg = (config or PipelineConfig()).override({
            "max_streams": max_streams, "backend.name": backend if isinstance(backend, str) else None,
            "backend.precision": precision, "backend.threads": threads, "backend.workers": workers,
            "backend.lifter": lifter, "backend.refiner": refiner,
            "correction.mode": correction if isinstance(correction, str) else None})
        if isinstance(correction, CorrectionConfig):
            cfg = replace(cfg, correction=correction)
        if backend is None or isinstance(backend, str):
            from posert.runtime.backends import create_backend

            backend = create_backend(cfg.backend)
        caps = check_backend(backend)
        self.backend = backend
        self.window = backend.window
        rc = cfg.refiner
        self.schedule = backend.schedule if rc.steps is None else Schedule(backend.schedule.T, rc.steps)
        cnd = backend.cnd
        if rc.hypotheses > 1 and (cnd is None or not caps.hypotheses):
            raise ValueError("hypotheses > 1 needs the refiner's CND and host caches (onnxruntime, native, torch, "
                             "tensorrt backends)")
        if rc.cnd_mean and cnd is None:
            raise ValueError("cnd_mean=True needs the refiner's CND (backend.cnd)")
        cnd_mean = bool(cnd.subtract_mean if rc.cnd_mean is None and cnd is not None else rc.cnd_mean)
        mean_ema = rc.mean_ema if rc.mean_ema is not None else (cnd.mean_ema if cnd is not None else 1.0)
        shift = None
        if cnd_mean:
            A, c = cnd.mean_map()
            shift = (A.astype(np.float32), c.astype(np.float32))
        S = cfg.max_streams
        self._streams = StreamTable(S, cfg.guard)
        if caps.kind == "resident":
            self._chain = ResidentChain(backend, S, self.schedule, shift, mean_ema)
        else:
            workers_ = cfg.backend.workers or HostChain.default_workers()
            self._chain = HostChain(backend, S, self.schedule, shift, mean_ema, rc.hypotheses, rc.seed, cnd, workers_,
                                    cfg.backend.min_shard)
        self._correction = Correction(cfg.correction, S)
        self._guard = Guard(cfg.guard, S)
        self._upright = UprightView(S)
        self._hold = BoneHold(S)
        self._flips = FlipFilter(S)
        self._owner: int | None = None
        #: called with every non-empty TickResult at the end of :meth:`tick` (on the driving thread)
        self.on_tick: Callable[[TickResult], None] | None = None
        #: the config as it runs: the checkpoint's K, CND mean and its EMA, and the workers filled in
        self.config = replace(cfg, refiner=replace(rc, steps=self.schedule.K, cnd_mean=cnd_mean,
                                                   mean_ema=float(mean_ema)),
                              backend=replace(cfg.backend, workers=self._chain.workers))

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the shard worker thread (also done at interpreter exit)."""
        self._chain.close()

    def adopt(self) -> None:
        """Make the calling thread the one that drives this pipeline."""
        self._owner = threading.get_ident()

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner != me:
            if self._owner is not None:
                raise RuntimeError("this Pipeline is driven by another thread; one thread drives a pipeline (use "
                                   "one pipeline per thread, or call adopt() from the thread that takes it over)")
            self._owner = me

    @property
    def streams(self) -> list[Hashable]:
        """The streams, in the order they were added."""
        return self._streams.ids

    @property
    def workers(self) -> int:
        """Shards a large tick runs as (1 or 2)."""
        return self._chain.workers

    @property
    def cache_dtype(self) -> np.dtype:
        """The element type of the key/value ring caches."""
        return np.dtype(self.backend.cache_dtype)

    def add_stream(self, stream_id: Hashable, width: int, height: int, camera: Camera | None = None) -> None:
        """Register a stream whose keypoints come from ``width`` × ``height`` pixel images.

        ``camera``: the calibrated camera the keypoints come from, for the correction stage (its
        ``K`` and ``dist`` are used); without one, :meth:`Camera.guess
        <posert.camera.Camera.guess>` for the image size stands in when the correction's mode is
        ``guess`` (the default). When its orientation is known (``camera.oriented``: ``R`` from
        extrinsics, world z up) the stream is lifted in its upright view (the roll removed) and its
        world-frame poses follow ``R`` (:mod:`posert.runtime.upright`).
        Raises ValueError if the id exists, the size is not positive, capacity is reached or the
        camera is not a valid intrinsic matrix and 5 distortion coefficients; TypeError for an
        unhashable id.
        """
        self._check_thread()
        slot = self._streams.add(stream_id, width, height)
        try:
            self._correction.attach(slot, width, height, camera)
        except ValueError:
            self._streams.remove(stream_id)
            raise
        self._upright.attach(slot, camera)
        self._start_over(slot)  # nothing of the slot's previous stream survives

    def _start_over(self, slot: int) -> None:
        """Clear everything a slot remembers of its frames (key/value caches and window, the
        correction's state but not its camera, the guard's bones and last pose, the held bones,
        the left/right references). A stream that restarts is cleared before anything of the
        frame that restarts it is kept (:meth:`push_many`)."""
        self._chain.reset(slot)
        self._correction.reset(slot)
        self._guard.state.reset(slot)
        self._hold.reset(slot)
        self._flips.reset(slot)

    def remove_stream(self, stream_id: Hashable) -> None:
        """Forget a stream and free its slot (KeyError if unknown)."""
        self._check_thread()
        self._streams.remove(stream_id)

    def stream_info(self, stream_id: Hashable) -> StreamInfo:
        """What a stream has been through: frames, out-of-view joints, coasted frames, restarts,
        resets, ticks without a pose, left/right flips undone
        (:class:`~posert.runtime.streams.StreamInfo`). KeyError if unknown."""
        return self._streams.stream_info(stream_id)

    def keypoint_noise(self, stream_id: Hashable) -> float:
        """The stream's 2D keypoint noise σ̂ (px, per axis) that sets its lateral β
        (:meth:`Correction.keypoint_noise <posert.runtime.correction.Correction.keypoint_noise>`).
        KeyError if unknown."""
        return self._correction.keypoint_noise(self._streams.slot(stream_id))

    def push(self, stream_id: Hashable, kp2d_px, conf=None, timestamp: float | None = None) -> None:
        """Give a stream its next frame (one frame per stream and tick): kp2d_px (17, 2) pixels,
        H36M-17 order; conf (17,) in [0, 1] (default all 1; 0 = missing joint); timestamp: the
        frame's capture time in seconds, increasing (default: the previous + 1/50 s). It must be in
        seconds: a stream restarts after ``GuardConfig.restart_after_s`` without a pose, and frame
        numbers as timestamps would restart it at every frame. Raises as :meth:`push_many`."""
        kp = np.asarray(kp2d_px)
        if kp.shape != (NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2), got {kp.shape}")
        self.push_many([stream_id], kp[None], None if conf is None else np.asarray(conf)[None],
                       None if timestamp is None else np.asarray([timestamp]))

    def push_many(self, stream_ids: Sequence[Hashable], kp2d_px: np.ndarray, conf: np.ndarray | None = None,
                  timestamps: Sequence[float] | None = None) -> None:
        """Give each of several streams its next frame: kp2d_px (B, 17, 2) pixels, conf (B, 17)
        in [0, 1] (default all 1), timestamps (B,) capture times in seconds (default: each
        stream's previous + 1/50 s; :meth:`push`).

        Every frame is validated before any is written; on error nothing is pushed. Raises
        KeyError for an unknown stream, ValueError for a stream named twice, a stream whose frame
        still waits for a tick, or a bad frame (the class docstring), naming the stream.
        """
        self._check_thread()
        kp = np.asarray(kp2d_px)
        if kp.ndim != 3 or kp.shape[0] != len(stream_ids):
            raise ValueError(f"kp2d_px must have shape ({len(stream_ids)}, 17, 2), got {kp.shape}")
        slots = self._streams.slots_for_push(stream_ids)
        frames, t, dropped = self._streams.prepare(slots, kp, conf, timestamps)
        restart = self._streams.restarting(slots, frames[:, :, 2], t)
        if restart.any():  # back after a long gap: a fresh start, before anything of this frame is kept
            for slot in slots[restart]:
                self._start_over(int(slot))
        flipped = self._flips.apply(slots, frames, t)
        if flipped.any():  # left/right flips undone: the pixels follow the frames
            kp = kp.copy()
            kp[flipped] = kp[flipped][:, FLIP_PERM]
            self._streams.counters[slots[flipped], 6] += 1
        self._upright.rectify(slots, kp.astype(np.float64, copy=False), frames, self._streams.size[slots])
        self._chain.store(slots, frames)
        self._streams.mark_due(slots, frames, t, dropped, restart)
        self._correction.store(slots, kp, frames[:, :, 2])

    def result_buffers(self) -> TickResult:
        """An empty :class:`TickResult` with arrays for ``max_streams`` streams, for
        ``tick(out=...)``: a control loop that reuses one never allocates a result per tick."""
        S = self._streams.capacity
        bufs = {"refined": np.zeros((S, NUM_JOINTS, 3), np.float32), "lifted": np.zeros((S, NUM_JOINTS, 3), np.float32),
                "world": np.zeros((S, NUM_JOINTS, 3), np.float32), "timestamps": np.zeros(S),
                "health": np.zeros(S, np.uint8), "valid": np.zeros(S, bool), "dropped": np.zeros(S, np.int32),
                "seen": np.zeros((S, NUM_JOINTS), bool)}
        return TickResult([], bufs["refined"][:0], bufs["lifted"][:0], bufs["timestamps"][:0],
                          seen=bufs["seen"][:0], _buffers=bufs)

    def tick(self, out: TickResult | None = None) -> TickResult:
        """Lift and refine the newest frame of every stream that received one since the last tick.

        ``out``: a :meth:`result_buffers` result to fill and return instead of a new one (its
        arrays are views of its buffers, valid until the next tick that reuses it). Calls
        ``self.on_tick(result)`` when set."""
        t0 = time.perf_counter()
        self._check_thread()
        st = self._streams
        due = st.due_slots()
        B = len(due)
        if out is not None and out._buffers is None:
            raise ValueError("tick(out=...) takes a TickResult from Pipeline.result_buffers()")
        if B == 0:
            empty = np.zeros((0, NUM_JOINTS, 3), np.float32)
            return TickResult([], empty, empty.copy(), np.zeros(0))
        x, x_T = self._chain.run(due, st.count)
        t1 = time.perf_counter()
        if out is None:
            refined, lifted = x * 1000.0, x_T * 1000.0
        else:
            refined = np.multiply(x, 1000.0, out=out._buffers["refined"][:B])
            lifted = np.multiply(x_T, 1000.0, out=out._buffers["lifted"][:B])
        self._upright.to_camera(due, refined)
        self._upright.to_camera(due, lifted)
        health = np.zeros(B, np.uint8) if out is None else out._buffers["health"][:B]  # OK = 0
        if out is not None:
            health[:] = 0
        if st.special:
            health[st.restart[due]] = _RESET
            health[st.coasting[due]] = _COASTING
        diverged = self._correction.apply(refined, due, st.count)
        if diverged is not None:
            health[diverged & (health != _COASTING)] = _RESET
        conf = st.conf[due]
        self._hold.apply(due, refined, conf)
        due64 = due.astype(np.int64)
        for r in np.flatnonzero(self._guard.apply(refined, lifted, conf, due64, health)):
            self._correction.reset(int(due[r]))  # its refined pose was impossible: the correction restarts
        self._hold.keep(due, refined, conf)
        st.advance(due, health)
        lift = self._chain.lift_ms
        if out is None:
            valid = (health == _OK) | (health == _RESET)
            world = self._upright.world(due, refined)
            res = TickResult(st.ids_of(due), refined, lifted, st.last_t[due].copy(), health, valid,
                             st.dropped[due].copy(), {}, world, seen=conf > 0)
        else:
            b = out._buffers
            valid = np.logical_or(health == _OK, health == _RESET, out=b["valid"][:B])
            world = b["world"][:B]
            world[:] = self._upright.world(due, refined)
            np.take(st.last_t, due, out=b["timestamps"][:B])
            np.take(st.dropped, due, out=b["dropped"][:B])
            seen = np.greater(conf, 0.0, out=b["seen"][:B])
            res = out
            res.stream_ids, res.refined, res.lifted, res.world = st.ids_of(due), refined, lifted, world
            res.timestamps, res.health, res.valid, res.dropped = b["timestamps"][:B], health, valid, b["dropped"][:B]
            res.seen = seen
        t2 = time.perf_counter()
        res.latency_ms = {"lift": lift, "refine": (t1 - t0) * 1e3 - (0.0 if np.isnan(lift) else lift),
                          "correct": (t2 - t1) * 1e3, "tick": (t2 - t0) * 1e3}
        res.output_time = time.time()
        if self.on_tick is not None:
            self.on_tick(res)
        return res

