"""Camera-aware correction of a lifted pose toward the 2D keypoints it was lifted from.

A root-relative pose X (camera frame) and the camera rays r_j = (x/z, y/z) of its 2D keypoints
fix the pose's position R in the camera frame, up to the depth error of X, by the weighted linear
least squares of the pinhole constraints

    (X_jx + R_x) − r_jx (X_jz + R_z) = 0,   (X_jy + R_y) − r_jy (X_jz + R_z) = 0

(the linear camera-resection form used, e.g., by VideoPose3D's trajectory reprojection and in
PnP's DLT). Each joint is then moved onto its own ray at its own depth z_j = X_jz + R_z:
Δ_j = (r_jx z_j − R_x − X_jx, r_jy z_j − R_y − X_jy, 0). Depths are kept: the correction
removes the part of the error that the 2D observes (across the viewing direction) and cannot
touch the part it does not (depth, and the overall scale, which trades off with R_z).
"""

from __future__ import annotations

import numpy as np

from posert.skeleton import NUM_JOINTS


def ray_correction(pose: np.ndarray, rays: np.ndarray, weight: np.ndarray, return_position: bool = False):
    """Per-joint displacement that puts every weighted joint of ``pose`` on its camera ray.

    Args:
        pose: (B, 17, 3) root-relative poses in the camera frame (OpenCV axes; any length unit,
            e.g. mm — the result has the same unit).
        rays: (B, 17, 2) undistorted normalised image coordinates (x/z, y/z) of the 2D keypoints
            (:func:`~posert.camera.pixels_to_rays`). Entries of joints with weight 0 are ignored
            and may be NaN.
        weight: (B, 17) weights ≥ 0, e.g. the keypoint confidences; 0 marks a missing joint.
        return_position: also return R, (B, 3) float64, the least-squares position of the root
            in the camera frame (same unit; 0 for rows that get no correction).
    Returns:
        Δ: (B, 17, 3) float64, 0 in z; 0 for joints of weight 0, and 0 for a whole row whose
        least-squares system is degenerate (fewer than two weighted joints or rays that coincide)
        or that puts a weighted joint at a depth ≤ 1 % of the pose's distance (behind the camera:
        the 2D and the pose disagree, so nothing is corrected).
    Raises:
        ValueError: for shapes other than the above.
    """
    pose = np.asarray(pose, dtype=np.float64)
    B = pose.shape[0] if pose.ndim == 3 else -1
    if pose.shape != (B, NUM_JOINTS, 3) or np.shape(rays) != (B, NUM_JOINTS, 2) or np.shape(weight) != (B, NUM_JOINTS):
        raise ValueError(f"expected pose (B, 17, 3), rays (B, 17, 2), weight (B, 17); got {pose.shape}, "
                         f"{np.shape(rays)}, {np.shape(weight)}")
    w = np.asarray(weight, dtype=np.float64)
    vis = w > 0
    w = np.where(vis, w, 0.0)
    r = np.where(vis[..., None], np.asarray(rays, dtype=np.float64), 0.0)
    ux, uy = r[..., 0], r[..., 1]
    x, y, z = pose[..., 0], pose[..., 1], pose[..., 2]
    b1, b2 = ux * z - x, uy * z - y  # R_x − ux R_z = b1,  R_y − uy R_z = b2
    sw, swx, swy = w.sum(-1), (w * ux).sum(-1), (w * uy).sum(-1)
    N = np.zeros((len(pose), 3, 3))
    N[:, 0, 0] = N[:, 1, 1] = sw
    N[:, 0, 2] = N[:, 2, 0] = -swx
    N[:, 1, 2] = N[:, 2, 1] = -swy
    N[:, 2, 2] = (w * (ux * ux + uy * uy)).sum(-1)
    rhs = np.stack([(w * b1).sum(-1), (w * b2).sum(-1), -(w * (ux * b1 + uy * b2)).sum(-1)], -1)
    # det N = sw · Σ_j Σ_k w_j w_k |r_j − r_k|² / 2: zero for < 2 joints or coinciding rays
    det = np.linalg.det(N)
    ok = (vis.sum(-1) >= 2) & (det > 1e-12 * np.maximum(sw, 1e-300) ** 3)
    N[~ok] = np.eye(3)
    R = np.linalg.solve(N, np.where(ok[:, None], rhs, 0.0)[..., None])[..., 0]  # (B, 3)
    depth = z + R[:, 2:3]
    ok &= np.where(vis, depth, np.inf).min(-1) > 0.01 * np.abs(R[:, 2])
    ok &= R[:, 2] > 0
    delta = np.zeros_like(pose)
    delta[..., 0] = ux * depth - R[:, 0:1] - x
    delta[..., 1] = uy * depth - R[:, 1:2] - y
    delta[~(vis & ok[:, None])] = 0.0
    if return_position:
        return delta, np.where(ok[:, None], R, 0.0)
    return delta
