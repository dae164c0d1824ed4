"""A BVH reader with vectorised forward kinematics.

BVH (Biovision Hierarchy): a joint tree with per-joint offsets, then one line of channel values per
frame. Rotations are Euler angles in degrees, composed in the order the channels are listed
(intrinsic, so ``Zrotation Xrotation Yrotation`` gives ``R = Rz @ Rx @ Ry``); a joint's global
transform is ``parent_global @ [R_local | offset]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass
class BvhJoint:
    name: str
    parent: int
    offset: np.ndarray
    channels: list[str] = field(default_factory=list)
    channel_start: int = 0


@dataclass
class Bvh:
    """A parsed BVH file.

    Attributes:
        joints: joints in file order; end sites are joints named ``<parent>_end`` with no channels.
        motion: (T, C) float64 channel values.
        frame_time: seconds per frame.
    """

    joints: list[BvhJoint]
    motion: np.ndarray
    frame_time: float

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    def forward_kinematics(self) -> np.ndarray:
        """Global joint positions, (T, num_joints, 3) float64, in the file's units and axes."""
        T = self.motion.shape[0]
        n = len(self.joints)
        pos = np.zeros((T, n, 3))
        rot = np.zeros((T, n, 3, 3))
        for i, j in enumerate(self.joints):
            local_t = np.broadcast_to(j.offset, (T, 3)).copy()
            local_r = np.broadcast_to(np.eye(3), (T, 3, 3))
            pos_ch = [c for c in j.channels if c.endswith("position")]
            rot_ch = [c for c in j.channels if c.endswith("rotation")]
            for c in pos_ch:
                axis = "XYZ".index(c[0])
                local_t[:, axis] = self.motion[:, j.channel_start + j.channels.index(c)]
            if j.parent < 0 and pos_ch:
                local_t += j.offset
            if rot_ch:
                cols = [j.channel_start + j.channels.index(c) for c in rot_ch]
                order = "".join(c[0] for c in rot_ch)
                local_r = Rotation.from_euler(order.upper(), self.motion[:, cols], degrees=True).as_matrix()
            if j.parent < 0:
                pos[:, i] = local_t
                rot[:, i] = local_r
            else:
                pr = rot[:, j.parent]
                pos[:, i] = pos[:, j.parent] + np.einsum("tab,tb->ta", pr, local_t)
                rot[:, i] = pr @ local_r
        return pos


def parse_bvh(path: str | Path) -> Bvh:
    """Parse a BVH file.

    Raises:
        ValueError: on a malformed hierarchy or a motion block whose width does not match.
    """
    tokens = Path(path).read_text().split()
    joints: list[BvhJoint] = []
    stack: list[int] = []
    n_channels = 0
    i = 0
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError(f"{path}: not a BVH file (no HIERARCHY)")
    i = 1
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            joints.append(BvhJoint(tokens[i + 1], stack[-1] if stack else -1, np.zeros(3)))
            i += 2
        elif tok == "End":
            joints.append(BvhJoint(joints[stack[-1]].name + "_end", stack[-1], np.zeros(3)))
            i += 2
        elif tok == "{":
            stack.append(len(joints) - 1)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            joints[-1].offset = np.array([float(v) for v in tokens[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            k = int(tokens[i + 1])
            joints[-1].channels = tokens[i + 2:i + 2 + k]
            joints[-1].channel_start = n_channels
            n_channels += k
            i += 2 + k
        else:
            raise ValueError(f"{path}: unexpected token {tok!r} in HIERARCHY")
    if stack:
        raise ValueError(f"{path}: unbalanced braces in HIERARCHY")
    # MOTION Frames: N Frame Time: dt values...
    n_frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    values = np.array(tokens[i + 6:], dtype=np.float64)
    if values.size != n_frames * n_channels:
        raise ValueError(f"{path}: {values.size} motion values for {n_frames} frames × {n_channels} channels")
    return Bvh(joints, values.reshape(n_frames, n_channels), frame_time)
