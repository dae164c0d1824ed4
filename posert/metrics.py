"""Pose-error metrics (all inputs root-relative, same units; reported in mm by callers).

MPJPE: mean per-joint position error. P-MPJPE: MPJPE after a similarity Procrustes alignment
(rotation, uniform scale, translation) per frame, as in VideoPose3D's ``p_mpjpe``.
Acceleration error: mean ‖(x_{t+1} − 2x_t + x_{t−1}) − (same for ground truth)‖ over joints and
frames (units per frame², as in HMMR / SmoothNet).
"""

from __future__ import annotations

import numpy as np
import torch


def mpjpe_torch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean joint error of (..., J, 3) tensors (differentiable)."""
    return (pred - target).norm(dim=-1).mean()


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean joint error of (..., J, 3) arrays."""
    return float(np.linalg.norm(pred - target, axis=-1).mean())


def p_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after per-frame similarity Procrustes alignment of pred to target; (T, J, 3) arrays.

    Uses the SVD solution of Umeyama (1991) with the reflection fix.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    mu_p, mu_t = pred.mean(1, keepdims=True), target.mean(1, keepdims=True)
    p0, t0 = pred - mu_p, target - mu_t
    norm_p = np.sqrt((p0 ** 2).sum(axis=(1, 2), keepdims=True))
    norm_t = np.sqrt((t0 ** 2).sum(axis=(1, 2), keepdims=True))
    p0, t0 = p0 / np.maximum(norm_p, 1e-12), t0 / np.maximum(norm_t, 1e-12)  # a collapsed pose stays finite
    H = np.swapaxes(p0, 1, 2) @ t0
    U, s, Vt = np.linalg.svd(H)
    V = np.swapaxes(Vt, 1, 2)
    R = V @ np.swapaxes(U, 1, 2)
    sign = np.sign(np.linalg.det(R))[:, None]
    V[:, :, -1] *= sign
    s[:, -1] *= sign[:, 0]
    R = V @ np.swapaxes(U, 1, 2)
    scale = s.sum(axis=1)[:, None, None] * norm_t / norm_p
    aligned = scale * (pred - mu_p) @ np.swapaxes(R, 1, 2) + mu_t
    return mpjpe(aligned, target)


def accel_error(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Acceleration error of (T, J, 3) sequences (T ≥ 3): mean over joints and frames.

    ``valid`` (T,) bool: only the second differences whose three frames are all valid count (the
    others may hold anything, NaN included); NaN when there is none."""
    if len(pred) < 3:
        raise ValueError("accel_error needs at least 3 frames")
    with np.errstate(invalid="ignore", over="ignore"):
        a_p = pred[2:] - 2 * pred[1:-1] + pred[:-2]
        a_t = target[2:] - 2 * target[1:-1] + target[:-2]
        err = np.linalg.norm(a_p - a_t, axis=-1)
    if valid is None:
        return float(err.mean())
    three = valid[2:] & valid[1:-1] & valid[:-2]
    if not three.any():
        return float("nan")
    return float(err.mean() if three.all() else err[three].mean())


def alignment_rotation(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """The one rotation R (3, 3) that best aligns a whole sequence ``pred`` to ``target`` (T, J, 3)
    root-relative (least squares over every frame and joint: Kabsch 1976, with the reflection fix)
    and its angle in degrees: how far the output's global orientation is off, e.g. too upright
    for a camera that looks down. Returns (R, angle_deg); apply as ``pred @ R.T``."""
    p = np.asarray(pred, np.float64).reshape(-1, 3)
    t = np.asarray(target, np.float64).reshape(-1, 3)
    U, _, Vt = np.linalg.svd(p.T @ t)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    return R, float(angle)
