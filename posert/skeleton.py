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
#: (16,) int64 parent and child joint of every bone, in :data:`BONES` order: ``pose[..., BONE_CHILD, :]
#: - pose[..., BONE_PARENT, :]`` is every bone vector. Children are 1 … 16 in order, so bone b
#: ends at joint b + 1 and every parent comes before its children.
BONE_PARENT: np.ndarray = np.array([p for p, _ in BONES], np.int64)
BONE_CHILD: np.ndarray = np.array([c for _, c in BONES], np.int64)

LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
#: Permutation that mirrors a pose left↔right (apply together with x → −x).
FLIP_PERM: np.ndarray = np.arange(NUM_JOINTS)
FLIP_PERM[list(LEFT)] = RIGHT
FLIP_PERM[list(RIGHT)] = LEFT

#: A reference adult's bone lengths, mm, in :data:`BONES` order: the mean over every frame of the
#: training motion of ``posert data`` (CMU, climbing, mocapbank, DeepMimic, OMOMO).
REFERENCE_BONES_MM: np.ndarray = np.array([88.0, 400.0, 432.0, 88.0, 397.0, 432.0, 205.0, 277.0, 127.0, 97.0,
                                           172.0, 293.0, 238.0, 170.0, 296.0, 238.0])


def _standing_pose() -> np.ndarray:
    """That adult standing upright facing the camera, arms down: (17, 3) mm, camera frame (x right,
    y down, z forward), root-relative."""
    b = REFERENCE_BONES_MM
    step = {1: (-b[0], 0, 0), 2: (0, b[1], 0), 3: (0, b[2], 0), 4: (b[3], 0, 0), 5: (0, b[4], 0), 6: (0, b[5], 0),
            7: (0, -b[6], 0), 8: (0, -b[7], 0), 9: (0, -b[8], 0), 10: (0, -b[9], 0), 11: (b[10], 0, 0),
            12: (0, b[11], 0), 13: (0, b[12], 0), 14: (-b[13], 0, 0), 15: (0, b[14], 0), 16: (0, b[15], 0)}
    pose = np.zeros((17, 3))
    for j in range(1, 17):
        pose[j] = pose[PARENTS[j]] + step[j]
    return pose


#: :func:`_standing_pose`: what a stream reports before it has any valid pose of its own.
STANDING_POSE_MM: np.ndarray = _standing_pose()

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
    return np.linalg.norm(pose[..., BONE_CHILD, :] - pose[..., BONE_PARENT, :], axis=-1)


#: MediaPipe BlazePose's 33 landmarks (``mp.solutions.pose.PoseLandmark`` order).
BLAZEPOSE33_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)


def _blazepose_map() -> np.ndarray:
    """(17, 33) weights: every H36M-17 joint as an affine (weights sum to 1) combination of
    BlazePose landmarks, so it applies to pixels and to metric coordinates alike.

    pelvis = mid-hip; spine = midpoint of mid-hip and mid-shoulder; thorax = mid-shoulder;
    neck/nose = nose; head (H36M's head top) = mid-ear + 1.5 × (mid-eye − mid-mouth), i.e. about
    one eye-to-mouth distance above the ears. Limbs map one to one.
    """
    idx = {n: i for i, n in enumerate(BLAZEPOSE33_NAMES)}
    W = np.zeros((NUM_JOINTS, len(BLAZEPOSE33_NAMES)))

    def put(joint: str, **weights: float) -> None:
        for name, w in weights.items():
            W[JOINT_NAMES.index(joint), idx[name]] += w

    put("pelvis", left_hip=0.5, right_hip=0.5)
    for side, s in (("r", "right"), ("l", "left")):
        put(f"{side}_hip", **{f"{s}_hip": 1.0})
        put(f"{side}_knee", **{f"{s}_knee": 1.0})
        put(f"{side}_ankle", **{f"{s}_ankle": 1.0})
        put(f"{side}_shoulder", **{f"{s}_shoulder": 1.0})
        put(f"{side}_elbow", **{f"{s}_elbow": 1.0})
        put(f"{side}_wrist", **{f"{s}_wrist": 1.0})
    put("spine", left_hip=0.25, right_hip=0.25, left_shoulder=0.25, right_shoulder=0.25)
    put("thorax", left_shoulder=0.5, right_shoulder=0.5)
    put("neck", nose=1.0)
    put("head", left_ear=0.5, right_ear=0.5, left_eye=0.75, right_eye=0.75, mouth_left=-0.75, mouth_right=-0.75)
    assert np.allclose(W.sum(axis=1), 1.0)
    return W


#: (17, 33) affine map from BlazePose-33 landmarks to H36M-17 joints (see :func:`_blazepose_map`).
BLAZEPOSE33_TO_H36M: np.ndarray = _blazepose_map()


def blazepose_to_h36m(landmarks: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map BlazePose-33 landmarks to H36M-17 joints.

    Args:
        landmarks: (..., 33, D) positions in any unit (D = 2 for pixels, 3 for metres).
        visibility: (..., 33) BlazePose visibility in [0, 1].
    Returns:
        (joints (..., 17, D), confidence (..., 17)): a joint's confidence is the lowest visibility
        of the landmarks it is made of (a joint is only as reliable as its least visible part).
    Raises:
        ValueError: if the landmark axis is not 33 long or the shapes disagree.
    """
    lm, vis = np.asarray(landmarks, np.float64), np.asarray(visibility, np.float64)
    n = len(BLAZEPOSE33_NAMES)
    if lm.ndim < 2 or lm.shape[-2] != n or vis.shape != lm.shape[:-1]:
        raise ValueError(f"expected landmarks (..., {n}, D) and visibility (..., {n}), got {lm.shape}, {vis.shape}")
    joints = np.einsum("jl,...ld->...jd", BLAZEPOSE33_TO_H36M, lm)
    used = BLAZEPOSE33_TO_H36M != 0  # (17, 33)
    conf = np.where(used, vis[..., None, :], np.inf).min(axis=-1)
    return joints.astype(np.float32), np.clip(conf, 0.0, 1.0).astype(np.float32)
