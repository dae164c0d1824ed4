"""DeepMimic's humanoid motion clips (shipped in the pybullet wheel's ``pybullet_data``), by forward
kinematics through the humanoid's URDF, as H36M-17.

Clip format (``data/motions/humanoid3d_*.txt``, JSON ``{"Loop", "Frames"}``), one row of 44 numbers
per frame (DeepMimic's humanoid3d layout): frame duration (s); root position (3, metres, y-up);
then local rotations in the order root, chest, neck, right hip (quaternions w, x, y, z), right
knee (angle, rad), right ankle, right shoulder (quaternions), right elbow (angle), left hip,
left knee, left ankle, left shoulder, left elbow. Knees and elbows turn about their joint's
``<axis>`` (z). The URDF's joint offsets are 4× the character's size (pybullet loads it with
``globalScaling=0.25``); positions in the clips are already in metres. Character frame: x
forward, y up, z to the character's right.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from posert.skeleton import JOINT_NAMES

URDF_SCALE = 0.25
#: Spherical (quaternion) and revolute (angle) joints in clip order, after the root quaternion.
CLIP_JOINTS: tuple[tuple[str, int], ...] = (
    ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4), ("right_shoulder", 4),
    ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)
ROW = 1 + 3 + 4 + sum(n for _, n in CLIP_JOINTS)  # 44


def parse_urdf_joints(text: str) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """``{joint: (parent link, origin xyz (3,), axis (3,))}`` of a URDF (child link = joint name in
    this humanoid). Raises ValueError when a joint has no parent or origin."""
    out = {}
    for m in re.finditer(r'<joint\s+name\s*=\s*"(\w+)".*?</joint>', text, re.S):
        body = m.group(0)
        parent = re.search(r'<parent\s+link\s*=\s*"(\w+)"', body)
        origin = re.search(r'<origin[^>]*xyz\s*=\s*"([^"]+)"', body)
        if parent is None or origin is None:
            raise ValueError(f"URDF joint {m.group(1)!r} lacks a parent or an origin")
        axis = re.search(r'<axis\s+xyz\s*=\s*"([^"]+)"', body)
        out[m.group(1)] = (parent.group(1), np.array(origin.group(1).split(), float),
                           np.array(axis.group(1).split(), float) if axis else np.array([0.0, 0.0, 1.0]))
    return out


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) → (..., 3, 3) rotation matrices (normalised first)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def axis_angle_to_matrix(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation about a unit ``axis`` (3,) by ``angle`` (...,) rad → (..., 3, 3) (Rodrigues)."""
    a = axis / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def clip_to_h36m(frames: np.ndarray, joints: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(T, 44) clip rows → (T, 17, 3) H36M-17 joints, metres, y-up world.

    pelvis = root (the midpoint of the hip joints); spine = chest joint; thorax = neck joint;
    neck/nose and head = points of the head (the neck link's sphere, centre 0.175 m above the
    neck joint): nose 0.1375 m up and 0.075 m forward, head top 0.25 m up.
    Raises ValueError for rows that are not 44 long.
    """
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 2 or frames.shape[1] != ROW:
        raise ValueError(f"expected (T, {ROW}) clip rows, got {frames.shape}")
    T = len(frames)
    rot = {"root": quat_to_matrix(frames[:, 4:8])}
    i = 8
    for name, n in CLIP_JOINTS:
        local = quat_to_matrix(frames[:, i:i + 4]) if n == 4 else axis_angle_to_matrix(joints[name][2], frames[:, i])
        rot[name] = local
        i += n
    pos = {"root": frames[:, 1:4]}
    world = {"root": rot["root"]}
    for name, _ in CLIP_JOINTS:  # parents come before children in clip order
        parent, origin, _ = joints[name]
        pos[name] = pos[parent] + world[parent] @ (origin * URDF_SCALE)
        world[name] = world[parent] @ rot[name]
    for side in ("right", "left"):  # wrists: fixed joints below the elbows
        parent, origin, _ = joints[f"{side}_wrist"]
        pos[f"{side}_wrist"] = pos[parent] + world[parent] @ (origin * URDF_SCALE)

    def head_point(x: float, y: float) -> np.ndarray:
        return pos["neck"] + world["neck"] @ np.array([x, y, 0.0])

    named = {"pelvis": pos["root"], "spine": pos["chest"], "thorax": pos["neck"],
             "neck": head_point(0.075, 0.1375), "head": head_point(0.025, 0.25)}
    for side, pre in (("r", "right"), ("l", "left")):
        named.update({f"{side}_hip": pos[f"{pre}_hip"], f"{side}_knee": pos[f"{pre}_knee"],
                      f"{side}_ankle": pos[f"{pre}_ankle"], f"{side}_shoulder": pos[f"{pre}_shoulder"],
                      f"{side}_elbow": pos[f"{pre}_elbow"], f"{side}_wrist": pos[f"{pre}_wrist"]})
    out = np.stack([named[j] for j in JOINT_NAMES], axis=1)
    assert out.shape == (T, len(JOINT_NAMES), 3)
    return out


def load_clip(path: Path) -> tuple[np.ndarray, float]:
    """Read a clip file → ((T, 44) rows, fps from the first frame's duration)."""
    data = json.loads(Path(path).read_text())
    frames = np.asarray(data["Frames"], np.float64)
    dt = float(frames[0, 0])
    if not dt > 0:
        raise ValueError(f"{path}: frame duration {dt}")
    return frames, 1.0 / dt
