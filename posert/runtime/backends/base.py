"""What a backend of the streaming tick must provide, in three kinds.

Every backend exposes :class:`BackendInfo`'s attributes: its ``name``, its :class:`Capabilities`, ``window`` (the
lifter's receptive field N), ``schedule`` (the DDIM schedule of the denoiser), ``cnd`` (the
refiner's conditional noise distribution, or None), the per-stream cache shapes
``lifter_cache_shape`` and ``denoiser_cache_shape`` (2·layers, 17, heads, M, C/heads) and
``cache_dtype``. What it runs is one of three contracts, which it declares in
``capabilities.kind``; the pipeline never probes for methods.

- ``step`` (:class:`StepBackend`: ONNX Runtime, torch, TensorRT): one model step of a batch of
  streams, returning the pose (or the denoiser's ê) and the new frame's keys/values for the
  pipeline to push into its ring caches.
- ``fused`` (:class:`FusedBackend`: native): one call per model step that reads and writes the
  pipeline's caches in place and, for the denoiser, applies the DDIM update to x in place.
- ``resident`` (:class:`ResidentBackend`: cuda): the backend owns the caches on its device and
  runs whole ticks.

All arrays are float32 NumPy arrays unless stated; poses are root-relative, camera frame, metres.
The tick's chain (lift → x_T − μ̄ → K × (denoise, cache push, DDIM update)) is written once, in
:func:`posert.runtime.chain.run_chain`; a step backend runs it through
:class:`posert.runtime.chain.StepAsFused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from posert.models.diffusion import CND, Schedule

Kind = Literal["step", "fused", "resident"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared by the backend.

    Attributes:
        kind: ``step``, ``fused`` or ``resident`` (the module docstring).
        concurrent: calls on disjoint rows of the caches may run from two threads at once (the
            pipeline then runs a large tick as two shards).
        hypotheses: it can run H > 1 hypotheses per stream (host caches only).
        device: where it computes: ``cpu`` or ``cuda``.
        precisions: the model precisions it runs.
    """

    kind: Kind
    concurrent: bool = False
    hypotheses: bool = True
    device: str = "cpu"
    precisions: tuple[str, ...] = ("fp32",)


class BackendInfo(Protocol):
    """The attributes every backend has (``name``: as :func:`~posert.runtime.backends.create_backend`
    knows it)."""

    name: str
    capabilities: Capabilities
    window: int
    schedule: Schedule
    cnd: CND | None
    lifter_cache_shape: tuple[int, ...]
    denoiser_cache_shape: tuple[int, ...]
    cache_dtype: np.dtype


class StepBackend(BackendInfo, Protocol):
    """One model step of B streams (``kind = "step"``).

    ``inp`` (B, 17, 3) the newest normalised frames, ``lag`` (B, M) int64 how old each ring slot
    is (M + 1: empty), ``caches`` a list of 2·layers arrays (B, 17, heads, M, C/heads) read in
    place. The returned arrays may be buffers the backend owns and reuses (ONNX Runtime's I/O
    bindings, TensorRT's pinned outputs), valid until the next call on the same input buffers.
    """

    def lift_step(self, inp: np.ndarray, lag: np.ndarray, caches: list[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
        """→ (x_T (B, 17, 3), kv (2·layers, B, 17, heads, C/heads))."""
        ...

    def denoise_step(self, inp: np.ndarray, x_t: np.ndarray, t: float, lag: np.ndarray, caches: list[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """x_t (B, 17, 3) at timestep t → (ê (B, 17, 3), kv)."""
        ...


class FusedBackend(BackendInfo, Protocol):
    """One kernel call per model step on the pipeline's caches (``kind = "fused"``).

    ``count`` (B,) int64 frames already cached per row, ``rows`` (B,) int32 (< 0: the row is
    computed but writes no cache), ``cache`` the pipeline's whole store (2·layers, S, 17, heads, M,
    C/heads) of ``cache_dtype``, batch row b at stream row0 + b. A row writes this frame's keys and
    values into ring slot count mod M.
    """

    def lift_fused(self, inp: np.ndarray, out: np.ndarray, count: np.ndarray, rows: np.ndarray,
                   cache: np.ndarray, row0: int) -> None:
        """out (B, 17, 3) ← the lifter's pose x_T."""
        ...

    def denoise_fused(self, inp: np.ndarray, x: np.ndarray, t: int, coef: np.ndarray, count: np.ndarray,
                      rows: np.ndarray, cache: np.ndarray, row0: int) -> None:
        """x (B, 17, 3) ← DDIM(x, ê(x, t), coef), coef = (a, b, ap, bp) float32 (D3PRefiner Eq. 9)."""
        ...


class ResidentBackend(BackendInfo, Protocol):
    """Whole ticks on the backend's own device (``kind = "resident"``)."""

    def allocate(self, max_streams: int, pairs: list[tuple[int, int]],
                 coefs: list[tuple[float, float, float, float]],
                 shift: tuple[np.ndarray, np.ndarray] | None = None, mean_ema: float = 1.0) -> None:
        """Every buffer for ``max_streams`` streams and the DDIM steps ``pairs`` ((t, t_prev)) with
        their Eq. 9 coefficients; ``shift`` (A (85, 51), c (51,)) the CND mean map, or None."""
        ...

    def run(self, hi: int, due: np.ndarray, inp: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One tick of the ``due`` (n,) sorted slots < hi: ``inp`` (≥ hi, 17, 3) newest frames,
        ``count`` (≥ hi,) int64 → copies of (x_0, x_T), each (n, 17, 3)."""
        ...

    def reset(self, slot: int) -> None:
        """Clear a slot's caches and per-stream state on the device."""
        ...


_KINDS = {"step": StepBackend, "fused": FusedBackend, "resident": ResidentBackend}


def _members(proto) -> set[str]:
    """The attributes and methods a protocol of this module declares (its bases' included)."""
    names: set[str] = set()
    for k in proto.__mro__:
        if k.__module__ == __name__:
            names |= set(vars(k).get("__annotations__", {}))
            names |= {n for n, v in vars(k).items() if callable(v) and not n.startswith("_")}
    return names


def check_backend(backend) -> Capabilities:
    """The backend's capabilities, after checking that it provides what its kind requires.
    Raises TypeError naming what is missing."""
    caps = getattr(backend, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise TypeError(f"{type(backend).__name__} is not a posert backend: it declares no `capabilities` "
                        "(posert.runtime.backends.base.Capabilities)")
    missing = sorted(n for n in _members(_KINDS[caps.kind]) if not hasattr(backend, n))
    if missing:
        raise TypeError(f"{type(backend).__name__} declares kind {caps.kind!r} but lacks {missing}")
    return caps
