"""The H36M-17 skeleton: joint order, kinematic tree, left/right pairs.

Joint order (Human3.6M 17-joint subset used by VideoPose3D and its successors)::

    0 pelvis  1 r_hip  2 r_knee  3 r_ankle  4 l_hip  5 l_knee  6 l_ankle  7 spine  8 thorax
    9 neck/nose  10 head  11 l_shoulder  12 l_elbow  13 l_wrist  14 r_shoulder  15 r_elbow  16 r_wrist
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
ROOT = 0

#: Parent of every joint (-1 for the root); bones are (parent, child) pairs.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
BONES: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS) if p >= 0)

LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
#: Permutation that mirrors a pose left↔right (apply together with x → −x).
FLIP_PERM: np.ndarray = np.arange(NUM_JOINTS)
FLIP_PERM[list(LEFT)] = RIGHT
FLIP_PERM[list(RIGHT)] = LEFT

#: Indices of the 17 joints kept from Human3.6M's 32 (as in VideoPose3D's ``remove_joints``).
H36M32_TO_17: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)


def bone_lengths(pose: np.ndarray) -> np.ndarray:
    """Length of every bone in :data:`BONES`.

    Args:
        pose: (..., 17, 3) joint positions in any length unit.
    Returns:
        (..., 16) bone lengths in the same unit.
    Raises:
        ValueError: if the last two axes are not (17, 3).
    """
    pose = np.asarray(pose)
    if pose.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected (..., {NUM_JOINTS}, 3) joints, got {pose.shape}")
    parent = np.array([p for p, _ in BONES])
    child = np.array([c for _, c in BONES])
    return np.linalg.norm(pose[..., child, :] - pose[..., parent, :], axis=-1)
