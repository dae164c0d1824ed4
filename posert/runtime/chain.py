"""The chain of a tick, written once (:func:`run_chain`), and the buffers it runs on.

For every stream with a new frame (D3PRefiner's inference, streamed)::

    lift      x_T ← lifter step of the newest frame; its keys/values into the lifter's ring cache
    start     x ← x_T                    (H hypotheses: x_T + δ_h, an AR(1) draw per stream)
    shift     x ← x − μ̄                  (μ̄ the causal EMA of the CND's mean μ_a|b(y, x_T); or nothing)
    K times   x ← DDIM_k(x, ê_k(x))      (denoiser step k; its keys/values into the k-th ring cache)

The models' temporal attention uses relative positions over a fixed span, so every cached key and
value stays valid as a stream advances: a tick costs one frame of work whatever the receptive
field, and its output equals running the models on the whole stream at once (tested).

:class:`HostChain` runs it on the host for ``step`` and ``fused`` backends (a step backend through
:class:`StepAsFused`), over caches of shape (2·layers, streams, 17, heads, M, C/heads) whose first
``hi`` streams are one contiguous block. A ``resident`` backend runs the same :func:`run_chain` on
its own device (:class:`ResidentChain` hands it whole ticks).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from posert import _C
from posert.models.diffusion import CND, Schedule
from posert.runtime.streams import CHANNELS
from posert.skeleton import NUM_JOINTS, ROOT


class ChainStages(Protocol):
    """The stages of one tick over a batch of streams, in the order :func:`run_chain` calls them."""

    def lift(self) -> None: ...

    def start(self) -> None: ...

    def shift(self) -> None: ...

    def denoise(self, k: int) -> None: ...


def run_chain(stages: ChainStages, steps: int) -> None:
    """The tick's chain: lift → start → shift → ``steps`` × denoise (the module docstring)."""
    stages.lift()
    stages.start()
    stages.shift()
    for k in range(steps):
        stages.denoise(k)


def ring_lags(count: np.ndarray, M: int, out: np.ndarray | None = None) -> np.ndarray:
    """Lag of every ring slot for streams that have seen ``count`` (B,) frames before the new one:
    (B, M) int64, slot w holds frame m (m ≡ w mod M, the latest such m < count) at lag count − m
    in 1…M, or M + 1 where the slot is still empty. The new frame is then written to slot
    count mod M."""
    w = np.arange(M)
    n = count.astype(np.int64)[:, None]
    lag = (n - 1 - w) % M + 1
    lag[lag > n] = M + 1
    if out is not None:
        out[...] = lag
        return out
    return lag


def rows_view(a: np.ndarray) -> np.ndarray:
    """(G, B, 17, heads, [M,] d) → (G, B, 17·heads, [M,] d), the layout of ``_C.kv_push``
    (a view when ``a`` is C-contiguous float32, else one copy)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3], *a.shape[4:])


class StepAsFused:
    """A ``step`` backend run through the ``fused`` contract (:mod:`posert.runtime.backends.base`):
    the ring lags from the counts, the cache's per-layer views of a block of streams, the step, the
    push of the due rows' keys/values (``_C.kv_push``) and, for the denoiser, the DDIM update
    (``_C.ddim_update``). The views and lag buffers of a block are made once and reused, so an ONNX
    Runtime backend finds its I/O bindings by object identity."""

    def __init__(self, backend):
        self.backend = backend
        self._blocks: dict[tuple, tuple] = {}

    def _block(self, cache: np.ndarray, row0: int, B: int):
        key = (id(cache), row0, B)
        v = self._blocks.get(key)
        if v is None:
            if len(self._blocks) > 512:  # stream churn: views are cheap to remake
                self._blocks.clear()
            views = [cache[g, row0:row0 + B] for g in range(cache.shape[0])]
            v = (views, np.zeros((B, cache.shape[4]), np.int64), rows_view(cache), cache)  # cache: keeps the id
            self._blocks[key] = v
        return v

    def _push(self, store: np.ndarray, kv: np.ndarray, count: np.ndarray, rows: np.ndarray, row0: int) -> None:
        _C.kv_push(store, rows_view(kv), rows, (count % store.shape[3]).astype(np.int32), row0)

    def lift_fused(self, inp, out, count, rows, cache, row0) -> None:
        views, lag, store, _ = self._block(cache, row0, len(inp))
        x_T, kv = self.backend.lift_step(inp, ring_lags(count, lag.shape[1], lag), views)
        self._push(store, kv, count, rows, row0)
        np.copyto(out, x_T)

    def denoise_fused(self, inp, x, t, coef, count, rows, cache, row0) -> None:
        views, lag, store, _ = self._block(cache, row0, len(inp))
        e, kv = self.backend.denoise_step(inp, x, t, ring_lags(count, lag.shape[1], lag), views)
        self._push(store, kv, count, rows, row0)
        _C.ddim_update(x, np.ascontiguousarray(e, dtype=np.float32), x, *coef)


class _Block:
    """The chain's stages over the block of slots [lo, hi) of a :class:`HostChain` (views of its
    buffers, made once per block). Reads and writes only rows of that block."""

    def __init__(self, chain: HostChain, lo: int, hi: int):
        H = chain.hypotheses
        a, b = lo * H, hi * H
        self.chain, self.lo, self.hi = chain, lo, hi
        self.inp_l = chain._inp[a:b:H] if H > 1 else chain._inp[lo:hi]
        self.inp_d, self.x, self.x_T = chain._inp[a:b], chain._x[a:b], chain._xT[lo:hi]
        self.rows = chain._rows[lo:hi]
        self.rows_d = chain._rows_d[a:b] if H > 1 else self.rows
        self.due = self.count = self.count_d = None
        self.lift_s = 0.0  # the last lift's wall time

    def prepare(self, due: np.ndarray, count: np.ndarray) -> None:
        """This tick's due slots (absolute, in [lo, hi)) and every slot's frame count."""
        lo, hi, H = self.lo, self.hi, self.chain.hypotheses
        self.due, self.count = due, count[lo:hi]
        self.rows[:] = -1
        self.rows[due - lo] = due
        if H > 1:
            self.count_d = np.repeat(self.count, H)
            self.rows_d[:] = -1
            idx = (due[:, None] * H + np.arange(H, dtype=np.int32)).reshape(-1)
            self.rows_d[idx - lo * H] = idx
        else:
            self.count_d = self.count

    def lift(self) -> None:
        c = self.chain
        t0 = time.perf_counter()
        c.backend.lift_fused(self.inp_l, self.x_T, self.count, self.rows, c._lcache, self.lo)
        self.lift_s = time.perf_counter() - t0

    def start(self) -> None:
        c = self.chain
        if c.hypotheses == 1:
            np.copyto(self.x, self.x_T)
            return
        # x_T + δ_h for the hi·H denoiser rows; δ advances one AR(1) step for due streams
        H, due = c.hypotheses, self.due
        z = c.cnd.draw_residual(c.rng.standard_normal((len(due), H, NUM_JOINTS, 3)).astype(np.float32))
        z[:, :, ROOT] = 0.0  # the pelvis stays at the origin
        first = (self.count[due - self.lo] == 0)[:, None, None, None]
        rho = float(c.cnd.rho)
        d = c._delta[due]
        c._delta[due] = np.where(first, z, rho * d + math.sqrt(1 - rho * rho) * z)
        n = self.hi - self.lo
        self.x.reshape(n, H, NUM_JOINTS, 3)[...] = self.x_T[:, None] + c._delta[self.lo:self.hi]

    def shift(self) -> None:
        """x ← x − μ̄ for every row of the block (nothing without the CND shift): μ = μ_a|b(y, x_T)
        of each slot's newest frame, μ̄ its causal EMA per stream (preallocated buffers)."""
        c = self.chain
        if c.shift_map is None:
            return
        lo, hi, n, J = self.lo, self.hi, self.hi - self.lo, NUM_JOINTS
        A, cvec = c.shift_map
        b, mu = c._b[lo:hi], c._mu[lo:hi]
        b[:, :2 * J] = self.inp_l[..., :2].reshape(n, -1)
        b[:, 2 * J:] = self.x_T.reshape(n, -1)
        _C.affine_rows(b, A, cvec, mu.reshape(n, -1))  # row by row: a stream's μ does not depend on the batch
        # μ̄ ← μ̄ + w (μ − μ̄), w = mean_ema for due streams and 0 for the others; at a stream's first
        # frame μ̄ = μ exactly (nothing of the slot's previous stream survives)
        w, mubar = c._w[lo:hi], c._mubar[lo:hi]
        w[:] = 0.0
        w[self.due - lo] = c.mean_ema
        first = self.due[self.count[self.due - lo] == 0] - lo
        mubar[first] = mu[first]
        mu -= mubar
        mu *= w[:, None, None]
        mubar += mu
        self.x.reshape(n, c.hypotheses, J, 3)[...] -= mubar[:, None]

    def denoise(self, k: int) -> None:
        c = self.chain
        c.backend.denoise_fused(self.inp_d, self.x, c.timesteps[k], c.coefs[k], self.count_d, self.rows_d,
                                c._dcache[k], self.lo * c.hypotheses)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(x_0, x_T) (n, 17, 3) metres of the due slots (copies)."""
        x, rows = self.x, self.due - self.lo
        if self.chain.hypotheses > 1:
            x = x.reshape(self.hi - self.lo, self.chain.hypotheses, NUM_JOINTS, 3).mean(axis=1)
        return x[rows], self.x_T[rows]


class HostChain:
    """The chain on host caches, for ``step`` and ``fused`` backends.

    Args:
        backend: a backend whose ``capabilities.kind`` is ``step`` or ``fused``.
        capacity: stream slots; every buffer and cache is allocated once.
        schedule: the DDIM schedule (its K steps are the chain's).
        shift_map: (A (85, 51), c (51,)) float32 of :meth:`CND.mean_map
            <posert.models.diffusion.CND.mean_map>` when x_T − μ̄ starts the DDIM steps, else None.
        mean_ema: α of μ̄, the causal EMA of μ_a|b per stream.
        hypotheses: H ≥ 1 (needs ``cnd``); seed: its draws' seed.
        workers: 1, or 2 to run a tick of ≥ 2 · ``min_shard`` streams as two blocks of slots at once
            (the second on a worker thread; backends whose capabilities allow concurrent runs,
            H = 1). Each row's arithmetic is the same as in one batch.
    """

    def __init__(self, backend, capacity: int, schedule: Schedule, shift_map, mean_ema: float,
                 hypotheses: int = 1, seed: int = 0, cnd: CND | None = None, workers: int = 1, min_shard: int = 4):
        caps = backend.capabilities
        self.backend = backend if caps.kind == "fused" else StepAsFused(backend)
        S, H = int(capacity), int(hypotheses)
        self.hypotheses, self.cnd, self.shift_map, self.mean_ema = H, cnd, shift_map, float(mean_ema)
        self.rng = np.random.default_rng(seed)
        pairs = schedule.pairs()
        self.timesteps = [t for t, _ in pairs]
        self.coefs = [np.array(schedule.ddim_coefficients(t, tp), np.float32) for t, tp in pairs]
        lc, dc = backend.lifter_cache_shape, backend.denoiser_cache_shape
        kv = backend.cache_dtype
        self._lcache = np.zeros((lc[0], S, *lc[1:]), kv)
        self._dcache = [np.zeros((dc[0], S * H, *dc[1:]), kv) for _ in pairs]
        self._inp = np.zeros((S * H, NUM_JOINTS, CHANNELS), np.float32)  # newest frame (H copies when H > 1)
        self._x = np.zeros((S * H, NUM_JOINTS, 3), np.float32)  # the DDIM state x_k, updated in place
        self._xT = np.zeros((S, NUM_JOINTS, 3), np.float32)
        self._rows = np.full(S, -1, np.int32)  # cache rows written this tick (−1: none)
        self._rows_d = np.full(S * H, -1, np.int32) if H > 1 else self._rows
        if H > 1:
            self._delta = np.zeros((S, H, NUM_JOINTS, 3), np.float32)
        if shift_map is not None:
            self._b = np.zeros((S, 5 * NUM_JOINTS), np.float32)  # [y, x_T] of a frame, for μ_a|b
            self._mu = np.zeros((S, NUM_JOINTS, 3), np.float32)
            self._mubar = np.zeros((S, NUM_JOINTS, 3), np.float32)  # μ̄ per stream
            self._w = np.zeros(S, np.float32)  # this tick's EMA weight per slot (0: not due)
        self._blocks: dict[tuple[int, int], _Block] = {}
        self.lift_ms = float("nan")  # the last tick's lifter step (its first shard), ms
        if workers not in (1, 2):
            raise ValueError(f"workers must be 1 or 2, got {workers}")
        self.workers = workers if caps.concurrent and H == 1 else 1
        self.min_shard = max(1, int(min_shard))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="posert-shard") if self.workers == 2 else None

    @staticmethod
    def default_workers() -> int:
        """2 where this process may use ≥ 2 cores, else 1."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 2 if cores >= 2 else 1

    def store(self, slots: np.ndarray, frames: np.ndarray) -> None:
        """The newest normalised frames (B, 17, 3) of ``slots`` (B,)."""
        if self.hypotheses == 1:
            self._inp[slots] = frames
        else:
            self._inp.reshape(-1, self.hypotheses, NUM_JOINTS, CHANNELS)[slots] = frames[:, None]

    def _block(self, lo: int, hi: int) -> _Block:
        blk = self._blocks.get((lo, hi))
        if blk is None:
            if len(self._blocks) > 256:  # stream churn: drop old blocks (views are cheap to remake)
                self._blocks.clear()
            blk = self._blocks[(lo, hi)] = _Block(self, lo, hi)
        return blk

    def _run(self, lo: int, hi: int, due: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blk = self._block(lo, hi)
        blk.prepare(due, count)
        run_chain(blk, len(self.coefs))
        if lo == 0:
            self.lift_ms = blk.lift_s * 1e3
        return blk.result()

    def run(self, due: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One tick of the ``due`` (n,) sorted slots, whose streams have ``count`` (S,) frames in
        their caches: (x_0, x_T), each (n, 17, 3) float32 metres, root-relative."""
        hi = int(due[-1]) + 1
        if self._pool is None or len(due) < 2 * self.min_shard:
            return self._run(0, hi, due, count)
        half = len(due) // 2
        cut = int(due[half])  # slots [0, cut) here, [cut, hi) on the worker
        other = self._pool.submit(self._run, cut, hi, due[half:], count)
        try:
            x_a, xT_a = self._run(0, cut, due[:half], count)
        finally:
            x_b, xT_b = other.result()  # never leave the worker writing after an error here
        return np.concatenate([x_a, x_b]), np.concatenate([xT_a, xT_b])

    def reset(self, slot: int) -> None:
        """Clear a slot's caches and per-stream state (a new stream, or one that restarts)."""
        H = self.hypotheses
        self._lcache[:, slot] = 0
        for c in self._dcache:
            c[:, slot * H:(slot + 1) * H] = 0
        if self.shift_map is not None:
            self._mubar[slot] = 0
        if H > 1:
            self._delta[slot] = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class ResidentChain:
    """Whole ticks on a ``resident`` backend, which runs :func:`run_chain` on its own device."""

    def __init__(self, backend, capacity: int, schedule: Schedule, shift_map, mean_ema: float):
        self.backend = backend
        self.workers = 1
        self.lift_ms = float("nan")  # one launch: the lifter's share is not seen from the host
        pairs = schedule.pairs()
        backend.allocate(capacity, pairs, [schedule.ddim_coefficients(t, tp) for t, tp in pairs], shift_map,
                         mean_ema)
        self._inp = np.zeros((capacity, NUM_JOINTS, CHANNELS), np.float32)

    def store(self, slots: np.ndarray, frames: np.ndarray) -> None:
        self._inp[slots] = frames

    def run(self, due: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.backend.run(int(due[-1]) + 1, due, self._inp, count)

    def reset(self, slot: int) -> None:
        self.backend.reset(slot)

    def close(self) -> None:
        pass
