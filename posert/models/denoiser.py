"""The D3PRefiner denoiser g(y, x_t, t) and the refiner that runs it with DDIM."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from posert.models.blocks import PoseSequenceModel
from posert.models.diffusion import CND, Schedule, ddim_step


@dataclass(frozen=True)
class DenoiserConfig:
    window: int = 27
    dim: int = 64
    depth: int = 3
    heads: int = 4
    causal: bool = True
    T: int = 50
    K: int = 2
    #: > 0: also condition on the lifter's per-joint features (its backbone output, this many
    #: channels; the "2D + lifter features" variant). 0: on the 2D only (D3PRefiner).
    feat_dim: int = 0


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (B,) float timesteps → (B, dim) (Vaswani et al. / DDPM)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half))
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class Denoiser(PoseSequenceModel):
    """Predicts the lifter error e from the 2D window and the noisy 3D window (D3PRefiner's g).

    forward(inp, x_t, t):
        inp: (B, N, 17, 3) float32 normalised 2D + confidence (as the lifter's input).
        x_t: (B, N, 17, 3) float32 noisy pose at diffusion step t, root-relative, metres.
        t:   (B,) float32 diffusion timestep in [0, T].
    Returns ê: (B, N, 17, 3) float32, metres; 0 at the pelvis, so poses stay root-relative.

    Architecture (docs/design.md): linear over [x_t, y, conf] (6 → C; the confidence tells the model
    which 2D joints are missing), ``depth`` spatial+temporal blocks with the timestep embedding
    added to every token before each block, linear C → 3.
    """

    def __init__(self, cfg: DenoiserConfig = DenoiserConfig()):
        super().__init__(cfg, in_channels=6)
        self.t_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.feat = nn.Linear(cfg.feat_dim, cfg.dim) if cfg.feat_dim else None

    def forward(self, inp: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                feat: torch.Tensor | None = None) -> torch.Tensor:
        """``feat``: (B, N, 17, feat_dim) lifter features (:meth:`Lifter.features`), required
        exactly when ``cfg.feat_dim`` > 0 (ValueError otherwise)."""
        if (feat is None) != (self.feat is None):
            raise ValueError(f"this denoiser has feat_dim={self.cfg.feat_dim}: pass lifter features exactly "
                             "when feat_dim > 0")
        temb = self.t_mlp(timestep_embedding(t, self.cfg.dim))[:, None, None, :]
        h = self.embed(torch.cat([x_t, inp], dim=-1))
        if self.feat is not None:
            h = h + self.feat(feat)
        return self.decode(self.backbone(h, temb))  # the pelvis stays at 0

    def step(self, inp: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, lag: torch.Tensor,
             *caches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One new frame at one diffusion step: inp (B, 17, 3), x_t (B, 17, 3), t (B,), lag (B, M)
        int64, caches: 2·depth tensors (B, 17, heads, M, C/heads) holding this diffusion step's
        keys/values of the past frames. Returns (ê (B, 17, 3) metres, new keys/values
        (2·depth, B, 17, heads, C/heads)). Each DDIM step keeps its own cache.

        Raises ValueError for a denoiser conditioned on lifter features (``feat_dim`` > 0): the
        streaming runtime does not carry them yet (benchmarks/feature_conditioning.py evaluates it)."""
        if self.feat is not None:
            raise ValueError("streaming a denoiser conditioned on lifter features (feat_dim > 0) is not supported; "
                             "evaluate it with benchmarks/feature_conditioning.py")
        temb = self.t_mlp(timestep_embedding(t, self.cfg.dim))[:, None, :]
        B, J, _ = inp.shape
        h = self.embed(torch.cat([x_t, inp], dim=-1).reshape(B * J, -1)).reshape(B, J, -1)
        h, kv = self.backbone.step(h, lag, list(caches), temb)
        return self.decode(h), kv


class Refiner(nn.Module):
    """x_T (lifter output) → x_0 by K deterministic DDIM steps of :class:`Denoiser` (Eq. 9).

    forward(inp (B, N, 17, 3), x_T (B, N, 17, 3)) → refined (B, N, 17, 3), metres, for sequences
    of any length N (the full recomputation the streaming runtime is tested against; the runtime
    runs :meth:`Denoiser.step` once per DDIM step and frame, with the fused DDIM kernel).

    ``cnd``: the refiner's CND. When its ``subtract_mean`` is set (a denoiser trained with
    ``noise="cnd0"``), frame n starts from x_T − μ̄_n, μ̄ the causal EMA (``cnd.mean_ema``,
    :meth:`CND.smooth_mean`) of μ_a|b(y, x_T) (:meth:`CND.mean_map`) over frames 0 … n of the
    given sequence, as a streaming runtime that starts at frame 0 computes it
    (:meth:`start`); otherwise it is not used.
    """

    def __init__(self, denoiser: Denoiser, cnd: CND | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.schedule = Schedule(denoiser.cfg.T, denoiser.cfg.K)
        self.shift, self.mean_ema = None, 1.0
        if cnd is not None and cnd.subtract_mean:
            A, c = cnd.mean_map()
            self.shift = (torch.from_numpy(A.astype(np.float32)), torch.from_numpy(c.astype(np.float32)))
            self.mean_ema = cnd.mean_ema

    def start(self, inp: torch.Tensor, x_T: torch.Tensor) -> torch.Tensor:
        """The DDIM start x_K (B, N, 17, 3), metres: x_T, or x_T − μ̄ with a shift (see the class);
        ``inp`` (B, N, 17, 3) normalised 2D and confidence, ``x_T`` (B, N, 17, 3) metres."""
        if self.shift is None:
            return x_T
        A, c = (v.to(x_T.device) for v in self.shift)
        b = torch.cat([inp[..., :2].flatten(-2), x_T.flatten(-2)], dim=-1)
        mu = (b @ A + c).reshape(x_T.shape)
        if self.mean_ema < 1.0:
            W = torch.from_numpy(CND.ema_weights(x_T.shape[1], self.mean_ema)).to(mu)
            mu = torch.einsum("ts,bsjc->btjc", W, mu)
        return x_T - mu

    def forward(self, inp: torch.Tensor, x_T: torch.Tensor, feat: torch.Tensor | None = None) -> torch.Tensor:
        """``feat``: the lifter features of the same frames, for a denoiser with ``feat_dim`` > 0."""
        x = self.start(inp, x_T)
        for t, t_prev in self.schedule.pairs():
            tt = torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
            e_hat = self.denoiser(inp, x, tt, feat)
            x = ddim_step(x, e_hat, self.schedule.ddim_coefficients(t, t_prev))
        return x
