"""Causal frame-rate conversion of 2D detections to the model's 50 fps."""

from __future__ import annotations

import numpy as np

from posert.config import PipelineConfig
from posert.data.sources import MODEL_FPS


def config_for_rate(config: PipelineConfig | None, fps: float) -> PipelineConfig:
    """The pipeline config for 2D detected at ``fps`` and brought to the models' 50 fps by
    :class:`RateConverter`.

    The correction's adaptive β (``CorrectionConfig.lateral_ema = "auto"``) estimates the 2D's
    noise from frame-to-frame differences, which assume independent noise in every model frame.
    Frames interpolated between detections share their noise: a 30 fps BlazePose track with
    4 px of jitter reads as 0.3 px, and β rises towards 1, following the jitter. So at any rate
    other than 50 fps ``"auto"`` becomes ``noise_fallback``, the β of a stream without an
    estimate (experiments/README.md, "Does the correction's noise estimate hold on 2D resampled
    from a video's rate?"); a fixed ``lateral_ema`` is kept. ``config`` None: the defaults.
    Raises ValueError for a non-positive ``fps``, and for ``noise_fallback = 0`` at another rate
    (a fixed β must be in (0, 1]).
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    config = config if config is not None else PipelineConfig()
    c = config.correction
    if c.lateral_ema != "auto" or abs(fps - MODEL_FPS) < 1e-6:
        return config
    return config.override({"correction.lateral_ema": c.noise_fallback})


class RateConverter:
    """Turns detections at the source's timestamps into frames on the model's clock
    (``fps`` = 50, the rate the models are trained at), causally.

    Model frames lie at t₀ + n / fps, t₀ = the first detection's time. Each call with a new
    detection at time t returns every model frame in (last emitted, t], linearly interpolated
    between the previous detection and this one (no future frame is used, so the latency added is
    at most one model period). A 30 fps video yields 5 model frames per 3 video frames; a 60 fps
    one skips some. Joints interpolated between two detections get the smaller of their two
    confidences, and 0 if either is missing.

    Call :meth:`reset` after a gap (no person found); the next detection starts a new clock.
    Interpolated frames share their detections' noise: run the pipeline they feed with
    :func:`config_for_rate` (as ``posert run`` does).
    Raises ValueError for a timestamp that does not increase or arrays of the wrong shape.
    """

    def __init__(self, fps: float = MODEL_FPS):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[float, np.ndarray, np.ndarray] | None = None
        self._next_n = 0
        self._t0: float | None = None

    def __call__(self, t: float, kp2d: np.ndarray, conf: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """t: seconds; kp2d (J, 2) pixels; conf (J,). Returns [(model time, kp2d, conf), …]."""
        kp = np.asarray(kp2d, np.float32)
        c = np.asarray(conf, np.float32)
        if kp.ndim != 2 or kp.shape[1] != 2 or c.shape != kp.shape[:1]:
            raise ValueError(f"expected kp2d (J, 2) and conf (J,), got {kp.shape}, {c.shape}")
        if self._prev is not None and not t > self._prev[0]:
            raise ValueError(f"timestamp {t} does not increase (last {self._prev[0]})")
        if self._t0 is None:
            self._t0 = float(t)
        out = []
        eps = 1e-9
        while (tau := self._t0 + self._next_n * self.period) <= t + eps:
            if self._prev is None or tau >= t - eps:
                out.append((tau, kp.copy(), c.copy()))
            else:
                tp, kpp, cp = self._prev
                w = np.float32((tau - tp) / (t - tp))
                both = (cp > 0) & (c > 0)
                k = np.where(both[:, None], (1 - w) * kpp + w * kp, np.nan).astype(np.float32)
                out.append((tau, k, np.where(both, np.minimum(cp, c), 0.0).astype(np.float32)))
            self._next_n += 1
        self._prev = (float(t), kp, c)
        return out
