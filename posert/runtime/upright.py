"""The upright view: streams whose camera orientation is known are lifted with the roll removed.

A camera that rolls shows a person the models must turn upright themselves; one that looks down
shows a person whose lean and the camera's tilt a 2D pose alone cannot tell apart. When a
stream's camera has a real orientation (``Camera.oriented``: a calibration's extrinsics, an IMU, a
robot's kinematics), its keypoints are rectified to the upright camera at the same place
(:func:`posert.camera.upright_rotation`: the same viewing direction and intrinsics, no roll): each
keypoint's ray (distortion removed) is turned by ``R_rect = R_upright Rᵀ``, a rotation about the
optical axis, and projected through the camera's K. The models lift that view; the pose comes
back to the real camera frame through ``R_rectᵀ`` before the correction stage, which works on
the real keypoints. The pitch is left to the models, which were trained on cameras that look
down (removing it too, the full level view, puts the person far from the image centre and cost
accuracy on level cameras: experiments/README.md, "Real cameras"). Every stream's pose is also
reported in the world frame (z up, root-relative, mm): through its camera's ``R`` when the
orientation is known, else as a level camera sees it (:data:`posert.camera.LEVEL_R`).
"""

from __future__ import annotations

import numpy as np

from posert.camera import LEVEL_R, Camera, normalize_screen, pixels_to_rays, upright_rotation

#: A rectified ray must point this far in front of the upright camera (z of a unit ray); a
#: keypoint beyond it (more than ~84° off the axis) is taken as missing.
MIN_RAY_Z = 0.1


class UprightView:
    """The upright view of ``streams`` slots: per slot the rectification ``rect`` (S, 3, 3)
    float64, whether it is on (S,) bool, the camera's ``K`` (S, 3, 3) and ``dist`` (S, 5), and the
    world → camera rotation ``world_R`` (S, 3, 3) used for world-frame poses."""

    def __init__(self, streams: int):
        S = int(streams)
        self.rect = np.tile(np.eye(3), (S, 1, 1))
        self.on = np.zeros(S, bool)
        self.K = np.tile(np.eye(3), (S, 1, 1))
        self.dist = np.zeros((S, 5))
        self.world_R = np.tile(LEVEL_R, (S, 1, 1))
        self.any = False  # a slot is rectified or has a real R: the fast paths skip everything otherwise

    def attach(self, slot: int, camera: Camera | None) -> None:
        """Give ``slot`` its stream's camera (None: unknown)."""
        if camera is not None and camera.oriented:
            R = np.asarray(camera.R, np.float64)
            self.rect[slot] = upright_rotation(R) @ R.T
            self.K[slot], self.dist[slot] = camera.K, camera.dist
            self.world_R[slot] = R
            self.on[slot] = not np.allclose(self.rect[slot], np.eye(3), rtol=0.0, atol=1e-12)  # a camera that rolls
        else:
            self.rect[slot], self.world_R[slot], self.on[slot] = np.eye(3), LEVEL_R, False
        self.any = bool(self.on.any()) or not np.array_equal(self.world_R, np.broadcast_to(LEVEL_R, self.world_R.shape))

    def rectify(self, slots: np.ndarray, kp: np.ndarray, frames: np.ndarray, size: np.ndarray) -> None:
        """Rewrite the normalised 2D of ``frames`` (B, 17, 3) float32, in place, for the rows whose
        slot is upright-rectified: kp (B, 17, 2) float64 the pixels they were made from, size (B, 2) the
        image sizes. A visible joint whose rectified ray leaves the level camera's front
        (:data:`MIN_RAY_Z`) becomes missing."""
        if not self.any:
            return
        rows = np.flatnonzero(self.on[slots])
        if len(rows) == 0:
            return
        s = slots[rows]
        with np.errstate(invalid="ignore", over="ignore"):
            xy = pixels_to_rays(kp[rows], self.K[s], self.dist[s])  # (n, 17, 2)
            ray = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1)
            v = np.einsum("nij,nkj->nki", self.rect[s], ray)  # R_rect @ ray, per joint
            z = v[..., 2] / np.linalg.norm(v, axis=-1)
            K = self.K[s]
            px = np.stack([K[:, None, 0, 0] * v[..., 0] / v[..., 2] + K[:, None, 0, 1] * v[..., 1] / v[..., 2]
                           + K[:, None, 0, 2], K[:, None, 1, 1] * v[..., 1] / v[..., 2] + K[:, None, 1, 2]], axis=-1)
        seen = (frames[rows, :, 2] > 0) & (z > MIN_RAY_Z) & np.isfinite(px).all(-1)
        for i, r in enumerate(rows):
            w, h = size[r]
            xy = normalize_screen(np.where(seen[i, :, None], px[i], 0.0), w, h)
            frames[r, :, :2] = np.where(seen[i, :, None], xy, frames[r, :, :2])
            frames[r, :, 2] = np.where(seen[i], frames[r, :, 2], 0.0)

    def to_camera(self, slots: np.ndarray, poses: np.ndarray) -> None:
        """Turn the poses (B, 17, 3) of rectified slots from the upright camera's frame back to
        their camera's, in place."""
        if not self.any:
            return
        rows = np.flatnonzero(self.on[slots])
        if len(rows):
            poses[rows] = np.einsum("nkj,nji->nki", poses[rows].astype(np.float64),
                                    self.rect[slots[rows]]).astype(poses.dtype)

    def world(self, slots: np.ndarray, poses: np.ndarray) -> np.ndarray:
        """(B, 17, 3) float32 world-frame (z up) root-relative poses of camera-frame ``poses``."""
        if not self.any:  # every stream as a level camera sees it: (x, z, −y), exactly
            out = poses[..., [0, 2, 1]]
            out[..., 2] *= -1
            return out
        return np.einsum("nkj,nji->nki", poses.astype(np.float64), self.world_R[slots]).astype(np.float32)
