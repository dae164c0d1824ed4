"""Left/right flips: a detector that takes a person's front for their back for a few frames.

A 2D detector sometimes swaps every left joint with its right twin for one to a few frames (the
whole body mirrored: it took the front for the back) and then swaps back. BlazePose did so in 10
of the 60 frames of the committed clip's 177-px person (6 runs of 1–3 frames) and in 7 of the 230
frames of the Sports2D demo's 347-px person (runs of up to 4), and the detector-noise protocol
draws it (:class:`posert.data.dataset.NoiseModel`). The models see a mirrored person for those
frames, and the 3D jumps: on the committed 2-s clip the refined pose's own acceleration falls by a
third when the flips are undone (50.3 → 32.0 mm/frame² between video frames), and on the
detector-noise protocol the refined MPJPE by 5 mm (experiments/README.md, "Does undoing a
detector's left/right flips help, and how?").

Each stream keeps, for the six left/right pairs (hips, knees, ankles, shoulders, elbows, wrists),
the vector from its right joint to its left one (VideoPose3D's normalised screen coordinates) over
its last :data:`HISTORY` frames, and a running scale of that vector's frame-to-frame change (the
detector's jitter and the motion between two frames). A frame is flipped back (every joint
exchanged with its mirror, :data:`~posert.skeleton.FLIP_PERM`, confidences too) when at least
two pairs can vote and most of the voting pairs point against their reference:

- a pair votes when both its joints are shown now, its reference (the mean of its vectors over
  the last :data:`HISTORY` frames no older than :data:`MAX_FLIP_S`) exists, and the reference is
  longer than :data:`SEPARATION` × the pair's scale: two joints closer than that (the hips of a
  person seen side on) cannot say which is which;
- it points against its reference when the dot product of the two vectors is negative.

A person who turns round turns each pair's vector gradually: a reversal within one frame is the
detector's. A flip is undone for at most :data:`MAX_FLIP_S`; one that lasts longer is taken as
the detector's new labelling (the reference restarts from it), so that a stream that started on
a flipped frame, or a detector that is right after a wrong start, is followed within that time.
The flipped frames are counted (:class:`~posert.runtime.streams.StreamInfo` ``unflipped``).

The check runs in C++ (``posert._C.FlipKernel``, csrc/frames/flips.h); :func:`flips_reference`
is its NumPy definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posert import _C
from posert.skeleton import FLIP_PERM, LEFT, RIGHT

#: Frames of each pair's vector that make its reference.
HISTORY = 3
#: A flip is undone for at most this long (s), and a reference is no older. The longest flip of
#: the BlazePose recordings lasted 4 frames at 30 fps (0.13 s); the detector-noise protocol draws
#: up to 5 at the camera's rate (0.17 s at 30 fps).
MAX_FLIP_S = 0.2
#: A pair votes when its reference is longer than this many times its scale.
SEPARATION = 2.0
#: Weight of each new frame-to-frame change in a pair's running scale (a memory of ~20 frames);
#: a change is counted at most 3 × the scale, so a flip's own jump does not inflate it.
SCALE_RATE = 0.05

_L = np.asarray(LEFT, np.int64)
_R = np.asarray(RIGHT, np.int64)
_PERM = np.asarray(FLIP_PERM, np.int64)
_PAIRS = len(LEFT)


@dataclass
class FlipState:
    """The per-stream arrays of the check (S slots, H = :data:`HISTORY`, 6 pairs): ``vec`` (S, H,
    6, 2) float64 and ``ok`` (S, H, 6) uint8, each pair's left − right vector in the last frames
    and whether both joints were shown; ``at`` (S, H) float64, those frames' times (s); ``head``
    (S,) int64, the entry the next frame takes (the one before it is the previous frame's);
    ``scale`` (S, 6) float64, the running scale of each pair's frame-to-frame change (NaN before
    its first); ``since`` (S,) float64, when the flip being undone began (NaN: none)."""

    vec: np.ndarray
    ok: np.ndarray
    at: np.ndarray
    head: np.ndarray
    scale: np.ndarray
    since: np.ndarray

    @classmethod
    def allocate(cls, streams: int) -> FlipState:
        S = int(streams)
        st = cls(np.zeros((S, HISTORY, _PAIRS, 2)), np.zeros((S, HISTORY, _PAIRS), np.uint8),
                 np.zeros((S, HISTORY)), np.zeros(S, np.int64), np.zeros((S, _PAIRS)), np.zeros(S))
        for s in range(S):
            st.reset(s)
        return st

    def reset(self, slot: int) -> None:
        """Forget ``slot``'s frames (a new stream, or one that restarts)."""
        self.ok[slot] = 0
        self.at[slot] = -np.inf
        self.head[slot] = 0
        self.scale[slot] = np.nan
        self.since[slot] = np.nan


class FlipFilter:
    """The check of a pipeline's ``streams`` slots (module docstring)."""

    def __init__(self, streams: int):
        self.state = FlipState.allocate(streams)
        self._kernel = _C.FlipKernel(self.state, _L, _R, _PERM, MAX_FLIP_S, SEPARATION, SCALE_RATE)

    def reset(self, slot: int) -> None:
        """Forget ``slot``'s frames."""
        self.state.reset(slot)

    def apply(self, slots: np.ndarray, frames: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Undo the flips in ``frames`` (B, 17, 3) float32, H36M-17 order: x, y in any image
        coordinates with equal units on both axes (pixels, or the normalised screen coordinates of
        :meth:`StreamTable.prepare <posert.runtime.streams.StreamTable.prepare>`) and the
        confidence (0: missing; its coordinates are not read). The frames of ``slots`` (B,) int,
        distinct, at times ``t`` (B,) s, changed in place and remembered. Returns (B,) bool: the
        frames flipped back (the caller mirrors anything else it holds of them). Raises ValueError
        or TypeError for arrays of another shape or dtype, IndexError for a slot out of range."""
        return self._kernel.apply(frames, np.asarray(slots, np.int64), np.asarray(t, np.float64)).astype(bool)


def flips_reference(state: FlipState, slots: np.ndarray, frames: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The NumPy definition of ``posert._C.FlipKernel.apply`` (csrc/frames/flips.h), on the same
    arguments (``state`` changed in place): for the tests that hold the kernel to it."""
    slots = np.asarray(slots, np.int64)
    t = np.asarray(t, np.float64)
    shown = frames[:, :, 2] > 0
    ok = shown[:, _L] & shown[:, _R]  # (B, 6)
    v = np.where(ok[:, :, None], frames[:, _L, :2].astype(np.float64) - frames[:, _R, :2].astype(np.float64), 0.0)
    hist_ok = (state.ok[slots] > 0) & (t[:, None] - state.at[slots] <= MAX_FLIP_S)[:, :, None]  # (B, H, 6)
    n = np.count_nonzero(hist_ok, axis=1)  # (B, 6)
    ref = np.zeros_like(v)
    for h in range(HISTORY):  # in the kernel's order of additions
        ref += np.where(hist_ok[:, h, :, None], state.vec[slots, h], 0.0)
    ref /= np.maximum(n, 1)[:, :, None]
    length = np.sqrt(ref[..., 0] * ref[..., 0] + ref[..., 1] * ref[..., 1])
    with np.errstate(invalid="ignore"):  # NaN scale: the pair does not vote yet
        vote = ok & (n > 0) & (length > SEPARATION * state.scale[slots])
    against = vote & (v[..., 0] * ref[..., 0] + v[..., 1] * ref[..., 1] < 0)
    votes = np.count_nonzero(vote, axis=1)
    flip = (votes >= 2) & (2 * np.count_nonzero(against, axis=1) > votes)
    since = state.since[slots]
    expired = flip & (t - since > MAX_FLIP_S)  # a NaN since (no flip going on) compares False
    flip &= ~expired
    state.at[slots[expired]] = -np.inf  # no longer a reference: the detector's labels become it
    frames[flip] = frames[flip][:, _PERM]
    v[flip] = -v[flip]
    state.since[slots] = np.where(flip, np.where(np.isnan(since), t, since), np.nan)
    h = state.head[slots]
    prev = (h - 1) % HISTORY  # the previous frame's entry, whatever its time
    last, last_ok = state.vec[slots, prev], state.ok[slots, prev] > 0
    both = ok & last_ok
    d = np.sqrt(((v - last) ** 2).sum(-1))
    old = state.scale[slots]
    new = np.where(np.isnan(old), d, old + SCALE_RATE * (np.minimum(d, 3.0 * old) - old))
    state.scale[slots] = np.where(both, new, old)
    state.vec[slots, h] = v
    state.ok[slots, h] = ok
    state.at[slots, h] = t
    state.head[slots] = (h + 1) % HISTORY
    return flip
