"""Native CPU backend: each step of a tick is one call of posert's own fused C++ step kernel.

A *fused* backend (:class:`~posert.runtime.backends.base.FusedBackend`): instead of returning a
step's output and its keys/values for the pipeline to push into the ring caches, each step is one
``posert._C.transformer_step(..., fast=True)`` call (csrc/step/step_fast.cpp) that reads and
writes the pipeline's caches in place and, for the denoiser, applies the DDIM update (D3PRefiner
Eq. 9) to the state x_k in place:

- ``lift_fused(inp, out, count, rows, cache, row0)``: out ← x_T ← lifter step;
- ``denoise_fused(inp, x, t, coef, count, rows, cache, row0)``: x ← DDIM(x, ê(x, t), coef).

Why a kernel of our own on the CPU: a streaming step is ~60 small matrix products over (B·17, 64)
activations with attention, LayerNorm and GELU between them. Run as 2L + 1 ONNX Runtime graphs
(the split step), a 16-stream tick pays ~80 graph launches and their I/O per shard; the fused
kernel runs the same arithmetic in one call per step, with the products register-blocked at
≈ 75 % of an AVX2 core's FMA peak (docs/kernels.md). The kernel is portable C++
(GCC/Clang vector extensions: AVX2 + FMA chosen at run time, else SSE2 or NEON), so it runs
wherever ``posert._C`` builds. FP32 only; ONNX Runtime stays the backend for FP16 and Q/DQ INT8.
"""

from __future__ import annotations

import numpy as np

from posert import _C
from posert.models.denoiser import Denoiser
from posert.models.diffusion import CND, Schedule
from posert.models.io import load_lifter, load_refiner
from posert.models.lifter import Lifter
from posert.runtime.backends.base import Capabilities


class NativeBackend:
    """Lifter step + K denoiser steps as posert's fused C++ step kernel on the CPU (fused backend).

    Args:
        lifter, denoiser: causal models (any window, width and depth), FP32; their weights are
            packed once (``pack_step``), so later changes to the modules are not seen.
        cnd: the refiner's CND (x_T − μ̄ shift and multi-hypothesis draws, done by the pipeline).

        kv_dtype: element type of the key/value ring caches the pipeline allocates for this backend
            (``cache_dtype``). ``"float16"`` (default): keys and values are rounded to IEEE half
            (round to nearest even, saturating at ±65504) when written and widened to float32 when
            read; all arithmetic stays float32. A tick then reads half the cache bytes, which is
            what a long window costs on a CPU (N = 243: ≈ 6 MB of float32 keys/values per stream
            and tick). The poses move by ≤ 0.06 mm against float32 caches on real streams
            (docs/kernels.md). ``"float32"``: the caches of every other backend,
            poses equal to the torch backend's to float rounding.

    Calls on disjoint rows may run concurrently (the kernel releases the GIL and keeps per-thread
    scratch), which the pipeline uses to run two shards of a tick.
    Raises ValueError for an offline model, a denoiser conditioned on lifter features or another
    ``kv_dtype``.
    """

    name = "native"
    capabilities = Capabilities(kind="fused", concurrent=True)

    def __init__(self, lifter: Lifter, denoiser: Denoiser, cnd: CND | None = None, kv_dtype: str = "float16"):
        from posert.runtime.backends.packing import pack_step, step_cond, step_dims

        for m in (lifter, denoiser):
            if not m.causal:
                raise ValueError(f"{type(m).__name__} is offline (causal=False); streaming needs causal models")
        if kv_dtype not in ("float16", "float32"):
            raise ValueError(f"kv_dtype must be 'float16' or 'float32', not {kv_dtype!r}")
        self.cache_dtype = np.dtype(kv_dtype)
        lifter, denoiser = lifter.eval().cpu().float(), denoiser.eval().cpu().float()
        self._dims_l, self._dims_d = step_dims(lifter), step_dims(denoiser)
        self._w_l, self._w_d = pack_step(lifter), pack_step(denoiser)
        self.window = lifter.window
        self.schedule = Schedule(denoiser.cfg.T, denoiser.cfg.K)
        self.cnd = cnd
        self.lifter_cache_shape, self.denoiser_cache_shape = lifter.cache_shape, denoiser.cache_shape
        # the timestep conditioning t_mlp(embedding(t)) (C,) of every t in [1, T], computed once
        # (any K the pipeline picks uses a subset)
        self._cond = {t: step_cond(denoiser, float(t)) for t in range(1, denoiser.cfg.T + 1)}

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None,
                         kv_dtype: str = "float16") -> NativeBackend:
        """The committed (or given) checkpoints. Raises FileNotFoundError for a missing file and
        ValueError for an offline checkpoint."""
        den, cnd = load_refiner(refiner)
        return cls(load_lifter(lifter), den, cnd, kv_dtype)

    def lift_fused(self, inp: np.ndarray, out: np.ndarray, count: np.ndarray, rows: np.ndarray,
                   cache: np.ndarray, row0: int) -> None:
        """The lifter step of B rows: out (B, 17, 3) ← the pose (metres, root-relative); the rows
        with ``rows`` ≥ 0 write this frame's keys/values into ring slot count mod M of cache rows
        row0 + b. Raises ValueError for shapes that do not match the model."""
        _C.transformer_step(self._w_l, self._dims_l, inp, out, None, None, count, rows, cache, None, row0=row0,
                            fast=True)

    def denoise_fused(self, inp: np.ndarray, x: np.ndarray, t: int, coef: np.ndarray, count: np.ndarray,
                      rows: np.ndarray, cache: np.ndarray, row0: int) -> None:
        """One denoiser step at timestep ``t`` (1 ≤ t ≤ T) and its DDIM update in place:
        x ← (ap + bp)·(x − b·ê)/(a + b) + bp·ê with ``coef`` = (a, b, ap, bp) float32
        (:meth:`Schedule.ddim_coefficients <posert.models.diffusion.Schedule.ddim_coefficients>`).
        Cache writes as in :meth:`lift_fused`. Raises KeyError for t outside [1, T]."""
        _C.transformer_step(self._w_d, self._dims_d, inp, x, None, self._cond[int(t)], count, rows, cache, coef,
                            row0=row0, fast=True)
