"""The correction stage's per-stream state: every array it keeps for a pipeline's stream slots."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from posert.skeleton import NUM_JOINTS

#: The value each state array holds for a new stream: the noise estimates start "unknown".
_FRESH = {"noise_hist": np.nan, "noise_var": np.nan, "pixel_hist": np.nan, "pixel_var": np.nan}


@dataclass(frozen=True)
class CorrectionState:
    """The correction stage's arrays for S stream slots (J = 17 joints), float64, C-contiguous.

    The arrays are written in place (``posert._C.CorrectionKernel`` holds pointers to them), never
    replaced. A slot's row is cleared by :meth:`reset` whenever a stream is given that slot.

    Attributes:
        enabled: (S,) bool, the stream is corrected (a camera was given or guessed).
        K: (S, 3, 3) intrinsics, px; dist: (S, 5) Brown–Conrady (k1, k2, p1, p2, k3).
        px: (S, J, 2) the newest keypoints, px; conf: (S, J) their confidences (0: missing).
        lateral: (S, J, 3) Δ̄, the smoothed lateral correction, mm.
        bone_length, bone_count: (S, J − 1, 2) running bone lengths (mm; view-weighted, plain)
            and their summed frame weights.
        bone_delta: (S, J − 1) each bone's smoothed move along the line of sight, mm.
        noise_hist: (S, 2, J, 2) the last two innovations, px; noise_var: (S, 2) their σ̂² (px²)
            and its updates (NaN: none yet).
        pixel_hist: (S, 3, J, 2) the last three frames' keypoints, px; pixel_var: (S, 2) the σ̂²
            of their third differences and its updates.
        distance: (S, 4) the distance tracker: level x (mm), velocity (mm per update), updates, and
            m, the distance the lateral EMA leaves the pose at (mm).
    """

    enabled: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    px: np.ndarray
    conf: np.ndarray
    lateral: np.ndarray
    bone_length: np.ndarray
    bone_count: np.ndarray
    bone_delta: np.ndarray
    noise_hist: np.ndarray
    noise_var: np.ndarray
    pixel_hist: np.ndarray
    pixel_var: np.ndarray
    distance: np.ndarray

    @classmethod
    def allocate(cls, streams: int, joints: int = NUM_JOINTS) -> CorrectionState:
        """Fresh state for ``streams`` slots (every slot as :meth:`reset` leaves it)."""
        S, J = int(streams), int(joints)
        shapes = {"K": (S, 3, 3), "dist": (S, 5), "px": (S, J, 2), "conf": (S, J), "lateral": (S, J, 3),
                  "bone_length": (S, J - 1, 2), "bone_count": (S, J - 1, 2), "bone_delta": (S, J - 1),
                  "noise_hist": (S, 2, J, 2), "noise_var": (S, 2), "pixel_hist": (S, 3, J, 2), "pixel_var": (S, 2),
                  "distance": (S, 4)}
        state = cls(enabled=np.zeros(S, bool), **{k: np.zeros(v) for k, v in shapes.items()})
        for s in range(S):
            state.reset(s)
        return state

    def reset(self, slot: int, K: np.ndarray | None = None, dist: np.ndarray | None = None) -> None:
        """Clear every array of ``slot``; with ``K`` (3, 3) and ``dist`` (5,) the stream is corrected
        with that camera, without them it is not."""
        for f in fields(self):
            a = getattr(self, f.name)
            a[slot] = _FRESH.get(f.name, 0)
        self.K[slot] = np.eye(3) if K is None else K
        if dist is not None:
            self.dist[slot] = dist
        self.enabled[slot] = K is not None
