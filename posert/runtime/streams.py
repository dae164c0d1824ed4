"""The streams table of a pipeline: which stream holds which slot, and what each slot has seen."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from posert import _C
from posert.config import GuardConfig
from posert.data.sources import MODEL_FPS
from posert.skeleton import NUM_JOINTS

CHANNELS = 3  # a model input frame: normalised x, y and the confidence
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(value, name: str) -> np.ndarray:
    """``value`` as a float32 or float64 array (a list of Python floats becomes float64). Raises
    TypeError for any other dtype (integers, booleans, complex, objects): posert does not guess a
    cast."""
    a = value if isinstance(value, np.ndarray) else np.asarray(value)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype} (cast it explicitly)")
    return a


@dataclass
class StreamInfo:
    """What a stream has been through (``Pipeline.stream_info``).

    Attributes:
        slot: its slot; frames: frames ticked; dropped_joints: visible joints given out of view
            (beyond ``GuardConfig.view_margin``) and treated as missing; coasted: frames with fewer
            than ``GuardConfig.min_joints`` visible joints; restarts: times it restarted after
            coasting longer than ``GuardConfig.restart_after_s``; resets: ticks whose correction
            diverged or whose refined pose failed the guard; no_pose: ticks with no valid pose;
            unflipped: frames whose left and right joints were exchanged back (the detector had
            taken the front for the back, :mod:`posert.runtime.flips`).
    """

    slot: int
    frames: int = 0
    dropped_joints: int = 0
    coasted: int = 0
    restarts: int = 0
    resets: int = 0
    no_pose: int = 0
    unflipped: int = 0


class StreamTable:
    """Stream ids ↔ slots (0 … capacity − 1), each slot's image size, frame count and last
    timestamp, and the frames waiting for the next tick. Any hashable value is a stream id.

    New streams take the lowest free slot, so live streams stay packed at the front of the caches
    (a tick's batch covers slots 0 … highest due slot). Arrays, one entry per slot: ``size`` (S, 2)
    float32 (width, height) px, ``count`` (S,) int64 frames already through the models,
    ``last_t`` (S,) float64, ``due`` (S,) bool (a frame waits for the next tick), ``coasting``
    (S,) bool (that frame has too few visible joints), ``restart`` (S,) bool (the stream restarts
    with it), ``dropped`` (S,) int32 (its out-of-view joints).
    """

    def __init__(self, capacity: int, guard: GuardConfig | None = None):
        if capacity < 1:
            raise ValueError(f"max_streams must be ≥ 1, got {capacity}")
        self.capacity = S = int(capacity)
        self.special = False  # a waiting frame coasts, restarts or dropped joints (mark_due)
        self.guard = guard or GuardConfig()
        self._slot: dict[Hashable, int] = {}
        self._ids: list[Hashable] = [None] * S
        #: per slot: frames ticked, out-of-view joints, coasted frames, restarts, resets, ticks without a
        #: pose, frames whose left/right flip was undone
        self.counters = np.zeros((S, 7), np.int64)
        self.used = np.zeros(S, bool)
        self.size = np.zeros((S, 2), np.float32)
        self.count = np.zeros(S, np.int64)
        self.last_t = np.full(S, -np.inf)
        self.last_pose_t = np.full(S, -np.inf)  # the timestamp of the last frame with enough visible joints
        self.due = np.zeros(S, bool)
        self.coasting = np.zeros(S, bool)
        self.restart = np.zeros(S, bool)
        self.dropped = np.zeros(S, np.int32)
        self.conf = np.zeros((S, NUM_JOINTS), np.float32)  # the waiting frame's confidences

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, stream_id) -> bool:
        try:
            return stream_id in self._slot
        except TypeError:  # unhashable
            return False

    @property
    def ids(self) -> list[Hashable]:
        """The streams, in the order they were added."""
        return list(self._slot)

    def add(self, stream_id: Hashable, width: int, height: int) -> int:
        """Register a stream of ``width`` × ``height`` pixel images; returns its slot. Raises
        ValueError if the id exists, the size is not positive or every slot is taken, TypeError
        for an unhashable id."""
        if stream_id in self._slot:
            raise ValueError(f"stream {stream_id!r} already exists")
        if not (width > 0 and height > 0):
            raise ValueError(f"image size must be positive, got {width}×{height}")
        free = np.flatnonzero(~self.used)
        if len(free) == 0:
            raise ValueError(f"all {self.capacity} stream slots are in use")
        slot = int(free[0])
        self._slot[stream_id] = slot
        self._ids[slot] = stream_id
        self.counters[slot] = 0
        self.used[slot] = True
        self.size[slot] = (width, height)
        self.count[slot] = 0  # every cache slot of this stream now reads as empty
        self.last_t[slot] = self.last_pose_t[slot] = -np.inf
        self.due[slot] = self.coasting[slot] = self.restart[slot] = False
        self.dropped[slot] = 0
        return slot

    def remove(self, stream_id: Hashable) -> int:
        """Forget a stream; returns the slot it freed. KeyError if unknown."""
        slot = self.slot(stream_id)
        del self._slot[stream_id]
        self._ids[slot] = None
        self.used[slot] = False
        self.due[slot] = False
        return slot

    def slot(self, stream_id: Hashable) -> int:
        """The slot of a stream; KeyError if unknown."""
        try:
            return self._slot[stream_id]
        except (KeyError, TypeError):
            raise KeyError(f"unknown stream {stream_id!r}; call add_stream() first") from None

    def id_of(self, slot: int) -> Hashable:
        return self._ids[slot]

    def ids_of(self, slots: np.ndarray) -> list[Hashable]:
        ids = self._ids
        return [ids[s] for s in slots]

    def slots_for_push(self, stream_ids: Sequence[Hashable]) -> np.ndarray:
        """(B,) int64 slots of streams about to receive a frame. Raises KeyError for an unknown
        stream and ValueError for a stream named twice or one whose frame still waits."""
        slots = np.fromiter((self.slot(s) for s in stream_ids), np.int64, len(stream_ids))
        if len(slots) > 1 and len(np.unique(slots)) != len(slots):
            raise ValueError("push_many: a stream appears twice")
        waiting = self.due[slots]
        if waiting.any():
            sid = self._ids[slots[int(np.argmax(waiting))]]
            raise ValueError(f"stream {sid!r} already has a frame for this tick; call tick() first")
        return slots

    def prepare(self, slots: np.ndarray, kp2d_px, conf, timestamps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate the frames of ``slots`` (B,) and normalise them: kp2d_px (B, 17, 2) pixels,
        float32 or float64; conf (B, 17) float in [0, 1] or None (all visible); timestamps (B,)
        seconds, increasing per stream, or None (each stream's previous + 1/50 s). A visible joint
        out of view (beyond ``GuardConfig.view_margin`` image sizes outside the image) becomes
        missing. Returns the model inputs (B, 17, 3) float32 (VideoPose3D's normalised screen
        coordinates and the confidence), the timestamps (B,) float64 and the out-of-view joints
        (B,) int32. Writes nothing. Raises TypeError for a dtype other than float, ValueError
        naming the first offending stream for a NaN/inf (or beyond float32) coordinate on a
        visible joint, a confidence outside [0, 1] or a timestamp that does not increase."""
        B = len(slots)
        kp = float_array(kp2d_px, "kp2d_px")
        if kp.shape != (B, NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2) per frame, got {kp.shape[1:]}")
        kp = np.ascontiguousarray(kp, dtype=np.float64)
        c = None  # all visible
        if conf is not None:
            c = float_array(conf, "conf")
            if c.shape != (B, NUM_JOINTS):
                raise ValueError(f"conf must have shape ({NUM_JOINTS},) per frame, got {c.shape[1:]}")
            c = np.ascontiguousarray(c, dtype=np.float64)
        # confidences, NaN checks, the view bound and the normalisation of every frame in one C++ call
        f = np.empty((B, NUM_JOINTS, CHANNELS), np.float32)
        dropped = np.empty(B, np.int32)
        bad, code = _C.prepare_frames(kp, c, self.size, slots, float(self.guard.view_margin), f, dropped)
        if code:
            why = {1: "conf must be finite and in [0, 1]",
                   2: "kp2d_px has NaN/inf on a joint with confidence > 0 (set its confidence to 0)",
                   3: "kp2d_px has a coordinate beyond float32's range on a joint with confidence > 0"}[code]
            raise ValueError(f"stream {self._ids[slots[bad]]!r}: {why}")
        last = self.last_t[slots]
        if timestamps is None:
            t = np.where(np.isfinite(last), last + 1.0 / MODEL_FPS, 0.0)
        else:
            t = np.asarray(timestamps)
            if t.dtype.kind not in "iuf":
                raise TypeError(f"timestamps must be real numbers, got dtype {t.dtype}")
            t = t.astype(np.float64).reshape(-1)
            if t.shape != (B,):
                raise ValueError(f"need one timestamp per frame: {B}, got {t.shape[0]}")
        bad_t = ~np.isfinite(t) | (t <= last)
        if bad_t.any():
            i = int(np.argmax(bad_t))
            raise ValueError(f"stream {self._ids[slots[i]]!r}: timestamp {t[i]} does not increase (last {last[i]})")
        return f, t, dropped

    def mark_due(self, slots: np.ndarray, frames: np.ndarray, t: np.ndarray, dropped: np.ndarray,
                 restart: np.ndarray) -> None:
        """The prepared ``frames`` (B, 17, 3) of ``slots`` at times ``t`` wait for the next tick.
        A frame with fewer than ``GuardConfig.min_joints`` visible joints coasts; ``restart`` (B,)
        bool, :meth:`restarting` of these frames, asked before anything was written (the caller
        clears those streams' state): their caches now read as empty."""
        conf = frames[:, :, 2]
        coast = np.count_nonzero(conf, axis=1) < self.guard.min_joints
        self.last_t[slots] = t
        self.due[slots] = True
        self.coasting[slots] = coast
        self.dropped[slots] = dropped
        self.conf[slots] = conf
        n_coast = np.count_nonzero(coast)
        if not n_coast:  # the common case: every frame carries a pose
            self.last_pose_t[slots] = t
        else:
            self.last_pose_t[slots[~coast]] = t[~coast]
        self.restart[slots] = restart
        n_restart = np.count_nonzero(restart)
        # a frame that coasts, restarts or dropped joints: the tick reads the flags (else they are all 0)
        self.special = self.special or bool(n_coast or n_restart or np.count_nonzero(dropped))
        if n_restart:
            self.count[slots[restart]] = 0  # the stream's caches now read as empty

    def restarting(self, slots: np.ndarray, conf: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(B,) bool: which of the frames of ``slots`` (confidences conf (B, 17), times t (B,) s)
        restart their stream: a frame with at least ``GuardConfig.min_joints`` visible joints whose
        stream's last such frame is older than ``GuardConfig.restart_after_s``. Writes nothing."""
        late = t - self.last_pose_t[slots] > self.guard.restart_after_s
        if not late.any():  # the common case, kept cheap: this runs at every push
            return late
        coast = np.count_nonzero(conf, axis=1) < self.guard.min_joints
        return late & ~coast & (self.count[slots] > 0)

    def due_slots(self) -> np.ndarray:
        """(n,) int32 sorted slots with a frame waiting."""
        return np.flatnonzero(self.due).astype(np.int32)

    def advance(self, slots: np.ndarray, health: np.ndarray) -> None:
        """The frames of ``slots`` went through the models, with ``health`` (B,) codes
        (:class:`~posert.runtime.guard.Health`)."""
        self.count[slots] += 1
        self.due[slots] = False
        c = self.counters
        c[slots, 0] += 1
        special, self.special = self.special, False
        if not special and not np.count_nonzero(health):
            return
        dropped, coasting, restart = self.dropped[slots], self.coasting[slots], self.restart[slots]
        if np.count_nonzero(dropped):
            c[slots, 1] += dropped
        if np.count_nonzero(coasting):
            c[slots[coasting], 2] += 1
        if np.count_nonzero(restart):
            c[slots[restart], 3] += 1
        if np.count_nonzero(health):  # resets (not counted twice with a restart) and ticks without a pose
            c[slots[(health == 2) & ~restart], 4] += 1
            c[slots[health == 3], 5] += 1

    def stream_info(self, stream_id: Hashable) -> StreamInfo:
        """What a stream has been through (KeyError if unknown)."""
        slot = self.slot(stream_id)
        return StreamInfo(slot, *(int(v) for v in self.counters[slot]))
