"""PyTorch reference backend (eager, CPU or the caller's device)."""

from __future__ import annotations

import numpy as np
import torch

from posert.models.denoiser import Denoiser
from posert.models.diffusion import CND, Schedule
from posert.models.io import load_lifter, load_refiner
from posert.models.lifter import Lifter
from posert.runtime.backends.base import Capabilities


class TorchBackend:
    """Runs the torch models' ``step`` directly; the accuracy reference for the other backends.

    Raises ValueError for an offline (non-causal) model: only causal models stream incrementally.
    """

    name = "torch"
    capabilities = Capabilities(kind="step")
    cache_dtype = np.dtype(np.float32)

    def __init__(self, lifter: Lifter, denoiser: Denoiser, threads: int | None = None, cnd: CND | None = None):
        for m in (lifter, denoiser):
            if not m.causal:
                raise ValueError(f"{type(m).__name__} is offline (causal=False); streaming needs causal models")
        if threads:
            torch.set_num_threads(threads)
        self.lifter, self.denoiser = lifter.eval(), denoiser.eval()
        self.window = lifter.window
        self.lifter_cache_shape, self.denoiser_cache_shape = lifter.cache_shape, denoiser.cache_shape
        self.schedule = Schedule(denoiser.cfg.T, denoiser.cfg.K)
        self.cnd = cnd

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None):
        """The committed (or given) checkpoints."""
        den, cnd = load_refiner(refiner)
        return cls(load_lifter(lifter), den, threads, cnd)

    @torch.no_grad()
    def lift_step(self, inp: np.ndarray, lag: np.ndarray, caches: list[np.ndarray]):
        pose, kv = self.lifter.step(torch.from_numpy(np.ascontiguousarray(inp)), torch.from_numpy(lag),
                                    *[torch.from_numpy(c) for c in caches])
        return pose.numpy(), kv.numpy()

    @torch.no_grad()
    def denoise_step(self, inp: np.ndarray, x_t: np.ndarray, t: float, lag: np.ndarray, caches: list[np.ndarray]):
        tt = torch.full((inp.shape[0],), float(t))
        e, kv = self.denoiser.step(torch.from_numpy(inp), torch.from_numpy(x_t), tt, torch.from_numpy(lag),
                                   *[torch.from_numpy(c) for c in caches])
        return e.numpy(), kv.numpy()
