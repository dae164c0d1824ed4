"""PyTorch reference backend (eager, CPU or the caller's device)."""

from __future__ import annotations

import numpy as np
import torch

from posert.models.denoiser import Denoiser
from posert.models.diffusion import CND, Schedule
from posert.models.io import load_lifter, load_refiner
from posert.models.lifter import Lifter


class TorchBackend:
    """Runs the torch models directly; the accuracy reference for the other backends."""

    def __init__(self, lifter: Lifter, denoiser: Denoiser, threads: int | None = None, cnd: CND | None = None):
        if lifter.window != denoiser.window:
            raise ValueError(f"lifter window {lifter.window} != denoiser window {denoiser.window}")
        if threads:
            torch.set_num_threads(threads)
        self.lifter, self.denoiser = lifter.eval(), denoiser.eval()
        self.window, self.delay = lifter.window, lifter.delay
        self.schedule = Schedule(denoiser.cfg.T, denoiser.cfg.K)
        self.cnd = cnd

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None):
        den, cnd = load_refiner(refiner)
        return cls(load_lifter(lifter), den, threads, cnd)

    @torch.no_grad()
    def lift(self, inp: np.ndarray) -> np.ndarray:
        return self.lifter(torch.from_numpy(inp)).numpy()

    @torch.no_grad()
    def denoise(self, inp: np.ndarray, x_t: np.ndarray, t: float) -> np.ndarray:
        tt = torch.full((inp.shape[0],), float(t))
        return self.denoiser(torch.from_numpy(inp), torch.from_numpy(x_t), tt).numpy()
