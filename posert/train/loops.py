"""Time-budgeted training of the lifter and the D3PRefiner denoiser (CPU-friendly).

The refiner follows DESIGN.md: two fold lifters are trained on complementary temporal halves of
the training sequences; each one's errors on the half it did not see are the cross-fitted lifter
errors used to fit the CND and to train the denoiser.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from posert.camera import Camera
from posert.data.dataset import WindowSampler
from posert.metrics import mpjpe_torch
from posert.models.denoiser import Denoiser, DenoiserConfig
from posert.models.diffusion import CND, Schedule
from posert.models.lifter import Lifter, LifterConfig


@dataclass
class TrainConfig:
    minutes: float = 10.0
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2


def _lr_at(cfg: TrainConfig, frac: float) -> float:
    warm = 0.03
    if frac < warm:
        return cfg.lr * frac / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm))))


def _timed_loop(cfg: TrainConfig, params, step_fn, desc: str) -> dict:
    """Run ``step_fn() -> loss`` with AdamW and a cosine schedule over a wall-clock budget."""
    torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    steps, ema = 0, None
    with tqdm(total=int(budget), desc=desc, unit="s") as bar:
        while (elapsed := time.perf_counter() - t0) < budget:
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, elapsed / budget)
            loss = step_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            steps += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.n = int(min(budget, time.perf_counter() - t0))
            bar.set_postfix(loss=f"{ema:.4g}", steps=steps)
    return {"steps": steps, "final_loss_ema": ema, "seconds": time.perf_counter() - t0}


def train_lifter(sequences: dict[str, np.ndarray], cameras: list[Camera], cfg: TrainConfig,
                 model_cfg: LifterConfig = LifterConfig(), desc: str = "lifter") -> tuple[Lifter, dict]:
    """Train a lifter on windows of ``sequences`` ((T, 17, 3) mm, world); loss: MPJPE over every
    frame of the window (seq2seq supervision). Returns (model in eval mode, stats)."""
    torch.manual_seed(cfg.seed)
    model = Lifter(model_cfg).train()
    sampler = WindowSampler(sequences, model_cfg.window, cameras, seed=cfg.seed)

    def step():
        inp, tgt = sampler.sample(cfg.batch)
        return mpjpe_torch(model(torch.from_numpy(inp)), torch.from_numpy(tgt))

    stats = _timed_loop(cfg, list(model.parameters()), step, desc)
    return model.eval(), stats


def temporal_halves(sequences: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Split every sequence into its first and second half: the two cross-fitting folds."""
    a, b = {}, {}
    for k, s in sequences.items():
        h = len(s) // 2
        a[k + "#0"], b[k + "#1"] = s[:h], s[h:]
    return a, b


@torch.no_grad()
def collect_errors(lifter: Lifter, sampler: WindowSampler, n_windows: int, batch: int = 64):
    """Run ``lifter`` on ``n_windows`` sampled windows; returns e, y, x_noisy stacked over all
    frames: (M, 17, 3), (M, 17, 2), (M, 17, 3)."""
    es, ys, xs = [], [], []
    for _ in range(0, n_windows, batch):
        inp, tgt = sampler.sample(batch)
        x = lifter(torch.from_numpy(inp)).numpy()
        es.append((x - tgt).reshape(-1, 17, 3))
        ys.append(inp[..., :2].reshape(-1, 17, 2))
        xs.append(x.reshape(-1, 17, 3))
    return np.concatenate(es), np.concatenate(ys), np.concatenate(xs)


def train_refiner(sequences: dict[str, np.ndarray], cameras: list[Camera], cfg: TrainConfig,
                  fold_minutes: float, lifter_cfg: LifterConfig = LifterConfig(),
                  model_cfg: DenoiserConfig = DenoiserConfig(), noise: str = "cnd",
                  cnd_windows: int = 1024) -> tuple[Denoiser, CND, dict]:
    """Cross-fitted D3PRefiner training.

    1. Train two fold lifters (``fold_minutes`` each) on the temporal halves of the sequences.
    2. Fit the CND on each fold lifter's errors on the other half.
    3. Train the denoiser for ``cfg.minutes``: windows from half f, x_noisy from the lifter that
       did not see half f; e ~ CND(· | y, x_noisy) (``noise="cnd"``) or the raw lifter error
       (``noise="raw"``, ablation); x_t = √ᾱ_t x_0 + √(1−ᾱ_t)(x_0 + e); loss ‖ê − e‖².
    """
    if noise not in ("cnd", "raw"):
        raise ValueError(f"noise must be 'cnd' or 'raw', got {noise!r}")
    halves = temporal_halves(sequences)
    fold_cfg = TrainConfig(**{**cfg.__dict__, "minutes": fold_minutes})
    lifters = [train_lifter(h, cameras, TrainConfig(**{**fold_cfg.__dict__, "seed": cfg.seed + 1 + f}),
                            lifter_cfg, desc=f"fold lifter {f}")[0] for f, h in enumerate(halves)]
    # sampler f draws from half f; lifters[1 - f] never saw it
    samplers = [WindowSampler(h, model_cfg.window, cameras, seed=cfg.seed + 10 + f) for f, h in enumerate(halves)]
    parts = [collect_errors(lifters[1 - f], samplers[f], cnd_windows // 2) for f in range(2)]
    e, y, x = (np.concatenate(p) for p in zip(*parts))
    cnd = CND.fit(e, y, x)
    cross_fit_mpjpe = float(np.linalg.norm(e, axis=-1).mean() * 1000)

    torch.manual_seed(cfg.seed)
    model = Denoiser(model_cfg).train()
    sched = Schedule(model_cfg.T, model_cfg.K)
    gen = torch.Generator().manual_seed(cfg.seed)
    fold = [0]

    def step():
        f = fold[0] = 1 - fold[0]
        inp, tgt = samplers[f].sample(cfg.batch)
        inp_t, x0 = torch.from_numpy(inp), torch.from_numpy(tgt)
        with torch.no_grad():
            x_noisy = lifters[1 - f](inp_t)
        err = cnd.sample(inp_t[..., :2], x_noisy, gen) if noise == "cnd" else x_noisy - x0
        t = torch.randint(1, model_cfg.T + 1, (cfg.batch,), generator=gen)
        x_t = sched.q_sample(x0, x0 + err, t)
        return (model(inp_t, x_t, t.float()) - err).square().mean()

    stats = _timed_loop(cfg, list(model.parameters()), step, "denoiser")
    stats.update(cross_fit_lifter_mpjpe_mm=cross_fit_mpjpe, noise=noise, fold_minutes=fold_minutes)
    return model.eval(), cnd, stats
