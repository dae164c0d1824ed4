"""The correction stage of a pipeline: one state object, one entry point, one C++ call per tick."""

from __future__ import annotations

import numpy as np

from posert import _C
from posert.camera import Camera
from posert.config import CorrectionConfig
from posert.runtime.correction.state import CorrectionState
from posert.skeleton import FLIP_PERM, PARENTS

_PARENTS = np.array(PARENTS, np.int64)
_MIRROR = np.array(FLIP_PERM, np.int64)


def kernel_params(config: CorrectionConfig) -> _C.CorrectionParams:
    """The C++ kernel's parameters (csrc/correction/correction.h) of ``config``."""
    p = _C.CorrectionParams()
    auto = config.lateral_ema == "auto"
    p.iterations = config.undistort_iterations
    p.lateral_beta = 0.0 if auto else float(config.lateral_ema)
    p.adaptive = auto
    p.pixel_noise = auto and config.pixel_noise
    p.noise_q, p.noise_tau = config.noise_q, config.noise_tau
    p.noise_fallback, p.noise_min_joints = config.noise_fallback, config.noise_min_joints
    p.bone_depth = config.bone_depth
    p.bone_ema, p.bone_gate, p.bone_horizon = config.bone_ema, config.bone_gate, float(config.bone_horizon)
    p.bone_view_power, p.bone_view_cap = float(config.bone_view_power), float(config.bone_view_cap)
    p.bone_symmetry = config.bone_symmetry
    p.distance = config.distance_index > 0
    p.distance_alpha, p.distance_beta = _C.alpha_beta_gains(config.distance_index)
    return p


def checked_camera(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), dist (5,)) float64 of ``camera``. Raises ValueError unless K is a finite
    intrinsic matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 and dist 5 finite numbers."""
    K, dist = np.asarray(camera.K, dtype=np.float64), np.asarray(camera.dist, dtype=np.float64)
    if (K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0
            or np.any(K[[1, 2, 2], [0, 0, 1]] != 0) or K[2, 2] != 1):
        raise ValueError(f"camera.K must be a finite 3×3 intrinsic matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                         f"with fx, fy > 0, got {camera.K!r}")
    if dist.shape != (5,) or not np.all(np.isfinite(dist)):
        raise ValueError(f"camera.dist must be 5 finite numbers (k1, k2, p1, p2, k3), got {camera.dist!r}")
    return K, dist


class Correction:
    """The stage after the refiner that uses the 2D and the camera (docs/design.md, "The
    correction"; csrc/correction/correction.h defines each step, :mod:`.reference` in NumPy).

    Each refined pose (camera frame, root-relative, mm) is moved onto the camera rays of its 2D
    keypoints across the line of sight (the lateral step: Δ smoothed along the stream by a causal
    EMA whose weight follows the stream's estimated 2D noise), then each bone's extent along the
    line of sight is set from the stream's running bone lengths (the bone depth), then the pose
    moves in depth to the stream's tracked distance (the distance step). Every move keeps the
    pose's projection except the lateral step, which brings it onto the 2D.

    Args:
        config: the stage's tuning and ``mode`` (``guess``: every stream, with its camera or
            :meth:`Camera.guess` intrinsics; ``given``: streams added with a camera; ``off``: none).
        streams: the number of stream slots.

    Attributes:
        state: the per-stream :class:`CorrectionState`.
    """

    def __init__(self, config: CorrectionConfig, streams: int):
        self.config = config
        self.state = CorrectionState.allocate(streams)
        self._kernel = _C.CorrectionKernel(self.state, kernel_params(config), _PARENTS,
                                           _MIRROR if config.bone_symmetry else None)
        self._rows = np.arange(streams, dtype=np.int64)

    def attach(self, slot: int, width: int, height: int, camera: Camera | None = None) -> None:
        """Give ``slot`` a new stream of ``width`` × ``height`` images, seen by ``camera`` (its ``K``
        and ``dist``; ``R``, ``t`` and its image size are not used) or by an unknown one. Clears the
        slot's state. Raises ValueError for a camera :func:`checked_camera` refuses."""
        mode = self.config.mode
        if camera is None and mode == "guess":
            camera = Camera.guess(width, height)
        K = dist = None
        if camera is not None and mode != "off":
            K, dist = checked_camera(camera)
        self.state.reset(slot, K, dist)

    def store(self, slots: np.ndarray, px: np.ndarray, conf: np.ndarray) -> None:
        """Keep the newest keypoints px (B, 17, 2) float64 and confidences conf (B, 17) of
        ``slots`` (B,) for the tick (only the slots that are corrected)."""
        on = self.state.enabled[slots]
        n_on = np.count_nonzero(on)
        if n_on == len(slots):
            self.state.px[slots] = px
            self.state.conf[slots] = conf
        elif n_on:
            self.state.px[slots[on]] = px[on]
            self.state.conf[slots[on]] = conf[on]

    def apply(self, poses: np.ndarray, slots: np.ndarray, count: np.ndarray) -> np.ndarray | None:
        """Correct poses (B, 17, 3) float32 mm in place: row b is the newest frame of ``slots[b]``
        (B,), a stream that had ``count`` (S,) int64 frames before it (rows of streams that are
        not corrected stay as they are). Returns (B,) bool, the rows whose state diverged (not
        finite, or beyond human and camera bounds) and was cleared, leaving their pose as given;
        None when no row diverged."""
        on = self.state.enabled[slots]
        n_on = np.count_nonzero(on)
        if not n_on:
            return None
        rows = self._rows[:len(slots)] if n_on == len(slots) else np.flatnonzero(on)
        s = slots[rows].astype(np.int64)
        reset = self._kernel.apply(poses, rows.astype(np.int64, copy=False), s, count[s])
        if not np.count_nonzero(reset):
            return None
        out = np.zeros(len(slots), bool)
        out[rows] = reset.astype(bool)
        return out

    def reset(self, slot: int) -> None:
        """Clear a slot's state as for a new stream, keeping its camera."""
        self._kernel.reset(slot)

    def keypoint_noise(self, slot: int) -> float:
        """The 2D keypoint noise σ̂ (px, per axis) that sets the slot's β with ``lateral_ema =
        "auto"``: the smaller of the innovations' and the keypoints' own estimates (NaN before the
        stream's third frame, for a stream that is not corrected, and with a fixed β)."""
        var = np.array([self.state.noise_var[slot, 0], self.state.pixel_var[slot, 0]])
        return float(np.sqrt(np.nanmin(var))) if np.isfinite(var).any() else float("nan")

