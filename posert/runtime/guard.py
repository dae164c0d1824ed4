"""The output guard: no pose a stream reports is non-finite or physically impossible.

Each tick, after the correction stage, every reported pose is repaired and checked
(``posert._C.GuardKernel``, csrc/guard; :func:`guard_reference` is its NumPy definition): a bone
longer than ``GuardConfig.max_bone_ratio`` times the stream's running length of that bone (learnt
from the bones it saw whole, and at most the reference adult's: a short bone's running length grows
with the models' noise) is shortened to that length along its direction, its child's subtree
following (a hidden joint is a guess and can be far off); then every coordinate must be
finite and every joint within ``max_reach_mm`` of the pelvis. A refined pose that fails is
replaced by the lifter's pose of the same frame (and the stream's correction state is cleared),
or, if that fails too, by the stream's last valid pose; the tick's :class:`Health` code and
validity mask say which. The lifter's own pose (``TickResult.lifted``, a diagnostic) is not
repaired: it is reported as the lifter gave it when it is finite and within reach, and as the
reported refined pose otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from posert import _C
from posert.config import GuardConfig
from posert.skeleton import BONE_CHILD, BONE_PARENT, NUM_JOINTS, PARENTS, REFERENCE_BONES_MM, STANDING_POSE_MM

#: Parent of every joint as the C++ kernel takes it: the root is its own parent.
_PARENTS = np.array([0, *PARENTS[1:]], np.int64)
_REST = STANDING_POSE_MM.astype(np.float32)


class Health(IntEnum):
    """What a reported pose is (``TickResult.health``; ``TickResult.valid`` is OK or RESET).

    - ``OK``: from this frame, through every stage, and it passed every check.
    - ``COASTING``: the frame had fewer than ``GuardConfig.min_joints`` visible joints (the
      person is out of view or hidden): the pose is the models' prediction from the stream's
      context. Not valid.
    - ``RESET``: from this frame, and the stream's state was cleared: it restarted after
      coasting longer than ``GuardConfig.restart_after_s``, or its correction diverged, or its
      refined pose failed the checks and the lifter's pose is reported.
    - ``NO_POSE``: no pose of this frame passed the checks: the stream's last valid pose (a
      standing reference pose before it has one) is reported. Not valid.
    """

    OK = 0
    COASTING = 1
    RESET = 2
    NO_POSE = 3


@dataclass(frozen=True)
class GuardState:
    """The guard's per-stream arrays (S slots): ``bone_ref`` (S, 16) float64 running bone lengths of
    the stream's valid poses, from the bones seen whole (mm; a reference adult's for a new stream),
    ``bone_n`` (S, 16) float64 how many frames fed each, ``last`` (S, 17, 3) float32 the last valid
    pose (mm), ``has_last`` (S,) uint8."""

    bone_ref: np.ndarray
    bone_n: np.ndarray
    last: np.ndarray
    has_last: np.ndarray

    @classmethod
    def allocate(cls, streams: int) -> GuardState:
        st = cls(np.zeros((streams, NUM_JOINTS - 1)), np.zeros((streams, NUM_JOINTS - 1)),
                 np.zeros((streams, NUM_JOINTS, 3), np.float32), np.zeros(streams, np.uint8))
        for s in range(streams):
            st.reset(s)
        return st

    def reset(self, slot: int) -> None:
        self.bone_ref[slot] = REFERENCE_BONES_MM
        self.bone_n[slot] = 0
        self.last[slot] = _REST
        self.has_last[slot] = 0


class Guard:
    """The guard of a pipeline's ``streams`` slots (``config``: its bounds)."""

    def __init__(self, config: GuardConfig, streams: int):
        self.config = config
        self.state = GuardState.allocate(streams)
        self._kernel = _C.GuardKernel(self.state, _PARENTS, _REST, config.max_reach_mm, config.max_bone_ratio)

    def apply(self, refined: np.ndarray, lifted: np.ndarray, conf: np.ndarray, slots: np.ndarray,
              health: np.ndarray) -> np.ndarray:
        """Repair and check refined and lifted (B, 17, 3) float32 mm of ``slots`` (B,) int64 in place,
        conf (B, 17) float32 the frames' confidences, updating ``health`` (B,) uint8 (in: OK,
        COASTING or RESET); returns (B,) bool, the rows whose lifted pose replaced the refined one
        (their correction state must be cleared)."""
        return self._kernel.apply(refined, lifted, conf, slots, health).astype(bool)


def repair(pose: np.ndarray, bone_ref: np.ndarray, max_reach_mm: float, max_bone_ratio: float) -> bool:
    """Shorten every bone of ``pose`` (17, 3) float32 mm longer than ``max_bone_ratio`` × the
    smaller of bone_ref (16,) and the reference adult's length (:data:`REFERENCE_BONES_MM`) in place
    (parents first, the child's subtree following), then: is it finite and within ``max_reach_mm``
    of its pelvis?"""
    orig = pose.astype(np.float64)
    moved = np.zeros(NUM_JOINTS, bool)
    for j in range(1, NUM_JOINTS):
        q = _PARENTS[j]
        v = orig[j] - orig[q]
        b2 = float(v @ v)
        if not np.isfinite(b2):
            return False
        bound = max_bone_ratio * min(bone_ref[j - 1], REFERENCE_BONES_MM[j - 1])
        shorten = b2 > bound * bound
        moved[j] = moved[q] or shorten
        if moved[j]:
            k = bound / np.sqrt(b2) if shorten else 1.0
            pose[j] = (pose[q].astype(np.float64) + v * k).astype(np.float32)
    return within_reach(pose, max_reach_mm)


def within_reach(pose: np.ndarray, max_reach_mm: float) -> bool:
    """Is every coordinate of ``pose`` (17, 3) mm, root-relative, finite and every joint within
    ``max_reach_mm`` of the origin (its pelvis: a pose whose pelvis is elsewhere is out of reach)?"""
    with np.errstate(invalid="ignore", over="ignore"):
        d = pose.astype(np.float64)
        return bool(np.isfinite(pose).all() and ((d * d).sum(-1) <= max_reach_mm * max_reach_mm).all())


def impossible(poses: np.ndarray, max_reach_mm: float = GuardConfig.max_reach_mm,
               max_bone_ratio: float = GuardConfig.max_bone_ratio) -> np.ndarray:
    """Which of ``poses`` (..., 17, 3) mm, root-relative, no person could take: a coordinate that
    is not finite, a joint more than ``max_reach_mm`` from the origin (the pelvis), or a bone longer than
    ``max_bone_ratio`` × its length in :data:`~posert.skeleton.REFERENCE_BONES_MM`. Returns a
    (...,) bool array; what ``posert eval`` counts and the roaming benchmark asserts is 0."""
    p = np.asarray(poses, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        reach = np.linalg.norm(p, axis=-1).max(-1)
        bones = np.linalg.norm(p[..., BONE_CHILD, :] - p[..., BONE_PARENT, :], axis=-1)
        too_long = (bones > max_bone_ratio * REFERENCE_BONES_MM * (1 + 1e-6)).any(-1)  # float32 rounding
        return ~np.isfinite(p).all((-1, -2)) | ~(reach <= max_reach_mm) | too_long


def guard_reference(refined: np.ndarray, lifted: np.ndarray, conf: np.ndarray, slots: np.ndarray,
                    health: np.ndarray, state: GuardState, config: GuardConfig) -> np.ndarray:
    """The NumPy definition of ``posert._C.GuardKernel.apply`` (csrc/guard/guard.h), on the same
    arguments, updating them and ``state`` in place; returns refit (B,) bool."""
    refit = np.zeros(len(slots), bool)
    args = (config.max_reach_mm, config.max_bone_ratio)
    for r, s in enumerate(slots):
        lifted_ok = within_reach(lifted[r], config.max_reach_mm)  # the lifter's own pose: not repaired
        if not repair(refined[r], state.bone_ref[s], *args):
            ok = False
            if lifted_ok:
                refined[r] = lifted[r]
                ok = repair(refined[r], state.bone_ref[s], *args)
            if ok:
                refit[r] = True
                if health[r] != Health.COASTING:
                    health[r] = Health.RESET
            else:
                refined[r] = state.last[s] if state.has_last[s] else _REST
                health[r] = Health.NO_POSE
        if not lifted_ok:
            lifted[r] = refined[r]
        if health[r] in (Health.OK, Health.RESET):
            seen = (conf[r, BONE_CHILD] > 0) & (conf[r, BONE_PARENT] > 0)
            bones = np.linalg.norm(refined[r, BONE_CHILD].astype(np.float64) - refined[r, BONE_PARENT], axis=-1)
            n = state.bone_n[s]
            w = np.where(n < 100, 1.0 / (n + 1.0), 0.01)
            state.bone_ref[s] = np.where(seen, state.bone_ref[s] + w * (bones - state.bone_ref[s]), state.bone_ref[s])
            state.bone_n[s] = n + seen
            state.last[s] = refined[r]
            state.has_last[s] = 1
    return refit
