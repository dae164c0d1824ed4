"""The streams table of a pipeline: which stream holds which slot, and what each slot has seen."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from posert import _C
from posert.skeleton import NUM_JOINTS

CHANNELS = 3  # a model input frame: normalised x, y and the confidence


class StreamTable:
    """Stream ids ↔ slots (0 … capacity − 1), each slot's image size, frame count and last
    timestamp, and the frames waiting for the next tick. Any hashable value is a stream id.

    New streams take the lowest free slot, so live streams stay packed at the front of the caches
    (a tick's batch covers slots 0 … highest due slot). Arrays, one entry per slot: ``size`` (S, 2)
    float32 (width, height) px, ``count`` (S,) int64 frames already through the models,
    ``last_t`` (S,) float64, ``due`` (S,) bool (a frame waits for the next tick).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"max_streams must be ≥ 1, got {capacity}")
        self.capacity = S = int(capacity)
        self._slot: dict[Hashable, int] = {}
        self._ids: list[Hashable] = [None] * S
        self.used = np.zeros(S, bool)
        self.size = np.zeros((S, 2), np.float32)
        self.count = np.zeros(S, np.int64)
        self.last_t = np.full(S, -np.inf)
        self.due = np.zeros(S, bool)

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
        self.used[slot] = True
        self.size[slot] = (width, height)
        self.count[slot] = 0  # every cache slot of this stream now reads as empty
        self.last_t[slot] = -np.inf
        self.due[slot] = False
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

    def prepare(self, slots: np.ndarray, kp2d_px, conf, timestamps) -> tuple[np.ndarray, np.ndarray]:
        """Validate the frames of ``slots`` (B,) and normalise them: kp2d_px (B, 17, 2) pixels,
        conf (B, 17) in [0, 1] or None (all visible), timestamps (B,) increasing per stream or
        None (each stream's previous + 1). Returns the model inputs (B, 17, 3) float32 (VideoPose3D's
        normalised screen coordinates and the confidence) and the timestamps (B,) float64. Writes
        nothing. Raises ValueError naming the first offending stream."""
        B = len(slots)
        kp = np.ascontiguousarray(kp2d_px, dtype=np.float64)
        if kp.shape != (B, NUM_JOINTS, 2):
            raise ValueError(f"kp2d_px must have shape ({NUM_JOINTS}, 2) per frame, got {kp.shape[1:]}")
        c = None  # all visible
        if conf is not None:
            c = np.ascontiguousarray(conf, dtype=np.float64)
            if c.shape != (B, NUM_JOINTS):
                raise ValueError(f"conf must have shape ({NUM_JOINTS},) per frame, got {c.shape[1:]}")
        # confidences, NaN checks and the normalisation of every frame in one C++ call
        f = np.empty((B, NUM_JOINTS, CHANNELS), np.float32)
        bad, code = _C.prepare_frames(kp, c, self.size, slots, f)
        if code == 1:
            raise ValueError(f"stream {self._ids[slots[bad]]!r}: conf must be finite and in [0, 1]")
        if code == 2:
            raise ValueError(f"stream {self._ids[slots[bad]]!r}: kp2d_px has NaN/inf on a joint with confidence > 0 "
                             "(set its confidence to 0)")
        last = self.last_t[slots]
        if timestamps is None:
            t = np.where(np.isfinite(last), last + 1.0, 0.0)
        else:
            t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
            if t.shape != (B,):
                raise ValueError(f"need one timestamp per frame: {B}, got {t.shape[0]}")
        bad_t = ~np.isfinite(t) | (t <= last)
        if bad_t.any():
            i = int(np.argmax(bad_t))
            raise ValueError(f"stream {self._ids[slots[i]]!r}: timestamp {t[i]} does not increase (last {last[i]})")
        return f, t

    def mark_due(self, slots: np.ndarray, t: np.ndarray) -> None:
        """The frames of ``slots`` at times ``t`` wait for the next tick."""
        self.last_t[slots] = t
        self.due[slots] = True

    def due_slots(self) -> np.ndarray:
        """(n,) int32 sorted slots with a frame waiting."""
        return np.flatnonzero(self.due).astype(np.int32)

    def advance(self, slots: np.ndarray) -> None:
        """The frames of ``slots`` went through the models."""
        self.count[slots] += 1
        self.due[slots] = False
