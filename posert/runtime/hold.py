"""The bone hold: a joint the frame does not show keeps the bone it was last seen with.

A joint with confidence 0 (out of view, occluded, or dropped by the view margin) is still in
every reported pose, and the models' guess of it is poor: on the frames that cut the person off
it is 230–430 mm off, worse than holding the joint where it was last seen relative to its parent
(experiments/README.md, "Would holding a missing joint's last seen bone beat the models' guess?":
on every camera set and split measured, the missing joints' error fell, e.g. 208 → 114 mm on
the missing-joint protocol, and MPJPE and acceleration error with it). So after the correction
stage each missing joint is placed at its parent plus the bone vector (child − parent, camera
frame, mm) of the last frame that showed it, parents first, so a missing chain hangs from its
first shown joint. A joint never shown since the stream began (or restarted) keeps the models'
guess. The models and their caches never see the hold: it changes the reported pose only, before
the output guard checks it. ``TickResult.seen`` marks the joints it placed.
"""

from __future__ import annotations

import numpy as np

from posert.skeleton import NUM_JOINTS, PARENTS

_CHILD = np.arange(1, NUM_JOINTS)
_PARENT = np.array(PARENTS[1:], np.int64)


class BoneHold:
    """Per slot of ``streams``: ``bone`` (S, 17, 3) float32, each joint's last shown bone vector
    (row 0 unused), and ``has`` (S, 17) bool, whether it has one."""

    def __init__(self, streams: int):
        self.bone = np.zeros((streams, NUM_JOINTS, 3), np.float32)
        self.has = np.zeros((streams, NUM_JOINTS), bool)

    def reset(self, slot: int) -> None:
        """Forget ``slot``'s bones (a new stream, or one that restarts)."""
        self.has[slot] = False

    def apply(self, slots: np.ndarray, refined: np.ndarray, conf: np.ndarray) -> None:
        """Place the missing joints of refined (B, 17, 3) float32 mm (rows of ``slots`` (B,)) in
        place, conf (B, 17) the frames' confidences (0: missing); then store the bones of the joints
        shown, from the pose before the hold."""
        shown = conf[:, _CHILD] > 0  # (B, 16)
        bones = refined[:, _CHILD] - refined[:, _PARENT]  # the models' bones, before the hold
        if shown.all():  # the common case: nothing to hold, every bone to keep
            self.bone[slots, 1:] = bones
            self.has[slots, 1:] = True
            return
        missing = ~shown
        held = self.bone[slots]
        has = self.has[slots]
        for c in np.flatnonzero(missing.any(axis=0)):  # ascending: every parent before its children
            rows = missing[:, c] & has[:, c + 1]
            if rows.any():
                refined[rows, c + 1] = refined[rows, _PARENT[c]] + held[rows, c + 1]
        rows, cols = np.nonzero(shown)
        self.bone[slots[rows], cols + 1] = bones[rows, cols]
        self.has[slots[rows], cols + 1] = True
