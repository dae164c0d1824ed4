"""The bone hold: a joint the frame does not show keeps the bone it was last seen with.

A joint with confidence 0 (out of view, occluded, or dropped by the view margin) is still in
every reported pose, and the models' guess of it is poor: worse, on every protocol and split
measured, than holding it where it was last shown relative to its parent (experiments/README.md,
"Would holding a missing joint's last seen bone beat the models' guess?"). So after the
correction stage each missing joint is placed at its parent plus the bone vector (child −
parent, camera frame, mm) of the last frame that showed it, as that frame reported it (after the
output guard), parents first, so that a missing chain hangs from its first shown joint. A joint
not shown since the stream began (or restarted) keeps the models' guess. The models and their
caches never see the hold: it changes the reported pose only, before the output guard checks it.
``TickResult.seen`` marks the joints it placed.
"""

from __future__ import annotations

import numpy as np

from posert.skeleton import BONE_CHILD, BONE_PARENT, NUM_JOINTS


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
        """Place the missing joints (conf (B, 17), 0: missing) of refined (B, 17, 3) float32 mm,
        the rows of ``slots`` (B,), in place. Before the output guard."""
        missing = conf[:, BONE_CHILD] == 0  # (B, 16)
        if not missing.any():
            return
        held = self.bone[slots]
        has = self.has[slots]
        for b in np.flatnonzero(missing.any(axis=0)):  # ascending: every parent before its children
            j = BONE_CHILD[b]
            rows = missing[:, b] & has[:, j]
            if rows.any():
                refined[rows, j] = refined[rows, BONE_PARENT[b]] + held[rows, j]

    def keep(self, slots: np.ndarray, reported: np.ndarray, conf: np.ndarray) -> None:
        """Keep the bones of the joints shown from the poses reported (B, 17, 3) float32 mm, after
        the output guard: a bone the guard shortened is held as it was reported."""
        shown = conf[:, BONE_CHILD] > 0
        bones = reported[:, BONE_CHILD] - reported[:, BONE_PARENT]
        if shown.all():  # the common case; BONE_CHILD is joints 1 … 16
            self.bone[slots, 1:] = bones
            self.has[slots, 1:] = True
            return
        rows, cols = np.nonzero(shown)
        self.bone[slots[rows], BONE_CHILD[cols]] = bones[rows, cols]
        self.has[slots[rows], BONE_CHILD[cols]] = True
