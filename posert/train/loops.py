"""Time-budgeted training of the lifter and the D3PRefiner denoiser (CPU-friendly).

The refiner follows docs/design.md: k fold lifters are trained with one temporal chunk of every
training sequence held out each; each one's errors on the chunk it did not see are the
cross-fitted lifter errors used to fit the CND and to train the denoiser.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from posert.camera import Camera
from posert.data.dataset import WindowSampler
from posert.metrics import mpjpe_torch
from posert.models.denoiser import Denoiser, DenoiserConfig
from posert.models.diffusion import CND, Schedule
from posert.models.io import load_lifter, save_lifter
from posert.models.lifter import Lifter, LifterConfig


@dataclass
class TrainConfig:
    minutes: float = 10.0
    steps: int | None = None  # a fixed number of optimiser steps instead of the wall-clock budget
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    p_occlusion: float = 0.0  # share of training windows with runs of missing joints/limbs
    p_pose_aug: float = 0.0  # share of training windows with limb chains turned (rotate_limbs)
    p_class_camera: float = 0.0  # share of training windows seen by a camera class of posert.rigs


def _lr_at(cfg: TrainConfig, frac: float) -> float:
    warm = 0.03
    if frac < warm:
        return cfg.lr * frac / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm))))


def _timed_loop(cfg: TrainConfig, params, step_fn, desc: str) -> dict:
    """Run ``step_fn() -> loss`` with AdamW and a cosine schedule over a wall-clock budget of
    ``cfg.minutes``, or over exactly ``cfg.steps`` optimiser steps when that is set: a step budget
    makes trainings of one recipe comparable whatever the machine's speed (seed studies)."""
    if cfg.steps is not None and cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    steps, ema = 0, None
    total = int(budget) if cfg.steps is None else cfg.steps
    with tqdm(total=total, desc=desc, unit="s" if cfg.steps is None else "step") as bar:
        while True:
            elapsed = time.perf_counter() - t0
            frac = elapsed / budget if cfg.steps is None else steps / cfg.steps
            if frac >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, frac)
            loss = step_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            steps += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.n = int(min(budget, time.perf_counter() - t0)) if cfg.steps is None else steps
            bar.set_postfix(loss=f"{ema:.4g}", steps=steps)
    return {"steps": steps, "final_loss_ema": ema, "seconds": time.perf_counter() - t0}


def train_lifter(sequences: dict[str, np.ndarray], cameras: list[Camera], cfg: TrainConfig,
                 model_cfg: LifterConfig = LifterConfig(), desc: str = "lifter") -> tuple[Lifter, dict]:
    """Train a lifter on windows of ``sequences`` ((T, 17, 3) mm, world); loss: MPJPE over every
    frame of the window (seq2seq supervision). Returns (model in eval mode, stats)."""
    torch.manual_seed(cfg.seed)
    model = Lifter(model_cfg).train()
    sampler = WindowSampler(sequences, model_cfg.window, cameras, seed=cfg.seed, p_occlusion=cfg.p_occlusion,
                            p_pose_aug=cfg.p_pose_aug, p_class_camera=cfg.p_class_camera)

    def step():
        inp, tgt = sampler.sample(cfg.batch)
        return mpjpe_torch(model(torch.from_numpy(inp)), torch.from_numpy(tgt))

    stats = _timed_loop(cfg, list(model.parameters()), step, desc)
    return model.eval(), stats


def temporal_folds(sequences: dict[str, np.ndarray], k: int) -> list[dict[str, np.ndarray]]:
    """Split every sequence into ``k`` contiguous chunks; fold f holds chunk f of every sequence.

    Contiguous chunks (not random windows) keep a held-out fold's windows disjoint from what the
    fold's lifter trained on, up to one window of overlap at the chunk borders.
    """
    if k < 2:
        raise ValueError(f"cross-fitting needs k ≥ 2 folds, got {k}")
    folds: list[dict[str, np.ndarray]] = [{} for _ in range(k)]
    for name, seq in sequences.items():
        bounds = np.linspace(0, len(seq), k + 1).astype(int)
        for f in range(k):
            folds[f][f"{name}#{f}"] = seq[bounds[f]:bounds[f + 1]]
    return folds


def sequence_folds(sequences: dict[str, np.ndarray], k: int) -> list[dict[str, np.ndarray]]:
    """Assign whole sequences to ``k`` folds, longest first to the fold with the fewest frames.

    A fold lifter then meets its held-out fold as the final lifter meets validation motion:
    sequences it never saw, not unseen minutes of sequences it trained on.
    Raises ValueError when there are fewer sequences than folds.
    """
    if k < 2:
        raise ValueError(f"cross-fitting needs k ≥ 2 folds, got {k}")
    if len(sequences) < k:
        raise ValueError(f"{len(sequences)} sequences cannot fill {k} sequence folds")
    folds: list[dict[str, np.ndarray]] = [{} for _ in range(k)]
    sizes = [0] * k
    for name, seq in sorted(sequences.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        f = int(np.argmin(sizes))
        folds[f][name] = seq
        sizes[f] += len(seq)
    return folds


FOLD_KINDS = ("time", "sequence")


def train_fold_lifters(sequences: dict[str, np.ndarray], cameras: list[Camera], cfg: TrainConfig, k: int,
                       lifter_cfg: LifterConfig = LifterConfig(), cache: Path | None = None,
                       fold_by: str = "time"):
    """k-fold cross-fitting: lifter f trains on every fold but f. Returns [(lifter_f, fold_f)].

    ``fold_by="time"``: :func:`temporal_folds` (a chunk of every sequence per fold);
    ``"sequence"``: :func:`sequence_folds` (whole sequences per fold).
    With ``cache`` the fold lifters are stored under a key of (sequences, k, folds, budget,
    config, seed) and reused by later refiner trainings (ablations share them).
    """
    if fold_by not in FOLD_KINDS:
        raise ValueError(f"fold_by must be one of {FOLD_KINDS}, got {fold_by!r}")
    folds = temporal_folds(sequences, k) if fold_by == "time" else sequence_folds(sequences, k)
    ident = [sorted((n, len(s)) for n, s in sequences.items()), k, cfg.minutes, cfg.p_occlusion,
             cfg.batch, cfg.seed, asdict(lifter_cfg)] + ([] if fold_by == "time" else [fold_by])
    ident += [["pose_aug", cfg.p_pose_aug]] if cfg.p_pose_aug else []  # older keys stay valid
    ident += [["steps", cfg.steps]] if cfg.steps is not None else []
    ident += [["class_cameras", cfg.p_class_camera]] if cfg.p_class_camera else []
    ident += [["out_of_view", "missing"]]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]
    out = []
    for f in range(k):
        path = cache / f"fold_lifter_{key}_{f}.pt" if cache else None
        if path is not None and path.exists():
            lifter = load_lifter(path)
        else:
            train = {n: s for g, fold in enumerate(folds) if g != f for n, s in fold.items()}
            lifter, stats = train_lifter(train, cameras, TrainConfig(**{**cfg.__dict__, "seed": cfg.seed + 1 + f}),
                                         lifter_cfg, desc=f"fold lifter {f + 1}/{k}")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_lifter(lifter, path, {"train": stats, "fold": f, "k": k})
        out.append((lifter, folds[f]))
    return out


@torch.no_grad()
def collect_errors(lifter: Lifter, sampler: WindowSampler, n_windows: int, batch: int = 64, keep: int | None = None):
    """Run ``lifter`` on ``n_windows`` sampled windows; returns e, y, x_noisy of the last ``keep``
    frames (default: all) of every window: (W, keep, 17, 3), (W, keep, 17, 2), (W, keep, 17, 3).

    With sampler windows longer than ``keep`` by the lifter's receptive field, every kept frame
    has its full causal context, exactly as in streaming."""
    es, ys, xs = [], [], []
    for _ in range(0, n_windows, batch):
        inp, tgt = sampler.sample(batch)
        x = lifter(torch.from_numpy(inp)).numpy()
        n = keep or x.shape[1]
        es.append((x - tgt)[:, -n:])
        ys.append(inp[:, -n:, :, :2])
        xs.append(x[:, -n:])
    return np.concatenate(es), np.concatenate(ys), np.concatenate(xs)


NOISE_MODES = ("cnd", "cnd0", "raw", "regressor")
LOSSES = ("mse", "mpjpe")


def train_refiner(sequences: dict[str, np.ndarray], cameras: list[Camera], cfg: TrainConfig,
                  fold_minutes: float, lifter_cfg: LifterConfig = LifterConfig(), fold_steps: int | None = None,
                  model_cfg: DenoiserConfig = DenoiserConfig(), noise: str = "cnd", folds: int = 2,
                  cnd_windows: int = 1024, fold_cache: Path | None = None,
                  fold_by: str = "time", loss: str = "mse", features: str | None = None,
                  feature_lifter: Lifter | None = None, pose_aug: float = 0.0,
                  cnd_kind: str = "joint", mean_ema: float = 1.0) -> tuple[Denoiser, CND, dict]:
    """Cross-fitted D3PRefiner training.

    1. k-fold cross-fitting: ``folds`` lifters (``fold_minutes`` each, or ``fold_steps`` optimiser
       steps: the final lifter's step count when it was trained by steps), lifter f never sees fold f.
       Give them the final lifter's budget so their held-out errors have the final lifter's size.
       ``fold_by``: "time" (a chunk of every sequence per fold) or "sequence" (whole sequences).
    2. Fit the CND on every fold lifter's errors on its held-out fold.
    3. Train the denoiser for ``cfg.minutes``: windows from fold f, x_noisy from lifter f — run on
       N_lifter − 1 extra frames before the denoiser's window, so every x_noisy frame has its full
       causal context, exactly as the streaming lifter produces it — and
       - ``noise="cnd"``: e ~ CND(· | y, x_noisy) (D3PRefiner, with the AR(1) temporal
         correlation fitted on the cross-fitted errors), t drawn half of the time from the K
         inference timesteps and otherwise ~ U{1..T} (the network's capacity goes where DDIM
         evaluates it, while every t stays valid for other K);
       - ``noise="cnd0"``: e ~ N(0, Σ_a|b), the CND without its conditional mean (same AR(1)
         residual and timestep weighting). The returned CND has ``subtract_mean`` set, so
         inference removes μ_a|b(y, x_T) from x_T before the DDIM steps (:class:`CND`), smoothed
         along each stream by a causal EMA of weight ``mean_ema`` (stored in the CND; 1: none);
       - ``noise="raw"``: e = x_noisy − x_0, the raw lifter error (ablation), t ~ U{1..T};
       - ``noise="regressor"``: e = x_noisy − x_0 and t = T always: the same network as a one-step
         regressor without diffusion (ablation; run it with K = 1);
       x_t = √ᾱ_t x_0 + √(1−ᾱ_t)(x_0 + e); loss ‖ê − e‖² (``loss="mse"``, D3PRefiner) or the
       per-joint Euclidean norm ‖ê − e‖ averaged over joints and frames (``loss="mpjpe"``: at
       t = T, ê − e is the error of x̂_0, so this is the MPJPE the output is scored by; its
       minimiser is the posterior's geometric median, which shrinks uncertain limbs less than
       the mean does).
    ``cnd_kind``: "joint" (one Gaussian per joint, D3PRefiner) or "pose" (one over the whole pose,
    so the drawn errors are correlated across joints as the lifter's are; :class:`CND`).
    ``pose_aug``: share of the denoiser's (and the CND's) windows whose limb chains are turned to
    poses the takes do not hold (:func:`~posert.data.dataset.rotate_limbs`). The fold lifters
    (trained with ``cfg``, the final lifter's recipe) never saw such poses, so their errors there
    stand for the final lifter's errors on unfamiliar motion, and the denoiser's pose prior widens.
    ``features``: also condition the denoiser on a lifter's per-joint features (the
    "2D + lifter features" variant; ``model_cfg.feat_dim`` is set to the lifter's width), taken on
    the same frames from
       - ``"fold"``: the fold lifter that produced x_noisy. Independently trained networks do not
         share a feature basis, so at inference the final lifter's features mean something else
         (measured: it fails, RESULTS.md);
       - ``"final"``: ``feature_lifter``, the lifter the refiner will run with (its own training
         windows: the features come from the network that produces them at inference).
    """
    if features not in (None, "fold", "final"):
        raise ValueError(f"features must be None, 'fold' or 'final', got {features!r}")
    if features == "final" and feature_lifter is None:
        raise ValueError("features='final' needs feature_lifter (the lifter the refiner will run with)")
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if not 0.0 < mean_ema <= 1.0:
        raise ValueError(f"mean_ema must be in (0, 1], got {mean_ema}")
    if cnd_kind not in CND.KINDS:
        raise ValueError(f"cnd_kind must be one of {CND.KINDS}, got {cnd_kind!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    fold_cfg = TrainConfig(**{**cfg.__dict__, "minutes": fold_minutes, "steps": fold_steps})
    fitted = train_fold_lifters(sequences, cameras, fold_cfg, folds, lifter_cfg, fold_cache, fold_by)
    n_den = model_cfg.window
    span = lifter_cfg.window - 1 + n_den
    samplers = [WindowSampler(held, span, cameras, seed=cfg.seed + 10 + f, p_occlusion=cfg.p_occlusion,
                              p_pose_aug=pose_aug, p_class_camera=cfg.p_class_camera)
                for f, (_, held) in enumerate(fitted)]
    parts = [collect_errors(lifter, samplers[f], cnd_windows // folds, keep=n_den)
             for f, (lifter, _) in enumerate(fitted)]
    e, y, x = (np.concatenate(p) for p in zip(*parts))
    cnd = CND.fit(e, y, x, kind=cnd_kind)
    cross_fit_mpjpe = float(np.linalg.norm(e, axis=-1).mean() * 1000)

    torch.manual_seed(cfg.seed)
    if features:
        model_cfg = DenoiserConfig(**{**model_cfg.__dict__, "feat_dim": lifter_cfg.dim})
    model = Denoiser(model_cfg).train()
    sched = Schedule(model_cfg.T, model_cfg.K)
    inference_t = torch.tensor(sched.timesteps)
    gen = torch.Generator().manual_seed(cfg.seed)
    step_no = [0]

    def step():
        f = step_no[0] % folds
        step_no[0] += 1
        inp, tgt = samplers[f].sample(cfg.batch)
        with torch.no_grad():
            feats = fitted[f][0].features(torch.from_numpy(inp))[:, -n_den:]
            x_noisy = fitted[f][0].decode(feats)
            if features == "final":
                feats = feature_lifter.features(torch.from_numpy(inp))[:, -n_den:]
        feat = feats if features else None
        inp_t, x0 = torch.from_numpy(inp[:, -n_den:]), torch.from_numpy(tgt[:, -n_den:])
        if noise in ("cnd", "cnd0"):
            err = cnd.sample(inp_t[..., :2], x_noisy, gen, zero_mean=noise == "cnd0")
        else:
            err = x_noisy - x0
        if noise == "regressor":
            t = torch.full((cfg.batch,), model_cfg.T)
        else:
            t = torch.randint(1, model_cfg.T + 1, (cfg.batch,), generator=gen)
            at_steps = torch.rand(cfg.batch, generator=gen) < 0.5
            pick = inference_t[torch.randint(len(inference_t), (cfg.batch,), generator=gen)]
            t = torch.where(at_steps, pick, t)
        x_t = sched.q_sample(x0, x0 + err, t)
        diff = model(inp_t, x_t, t.float(), feat) - err
        if loss == "mse":
            return diff.square().mean()
        return diff[:, :, 1:].norm(dim=-1).mean()  # the pelvis is 0 by construction

    stats = _timed_loop(cfg, list(model.parameters()), step, "denoiser")
    cnd.subtract_mean = noise == "cnd0"
    cnd.mean_ema = float(mean_ema) if cnd.subtract_mean else 1.0
    stats.update(cross_fit_lifter_mpjpe_mm=cross_fit_mpjpe, noise=noise, fold_minutes=fold_minutes,
                 fold_steps=fold_steps, folds=folds,
                 cnd_rho=cnd.rho, fold_by=fold_by, loss=loss, features=features, pose_aug=pose_aug,
                 cnd_kind=cnd_kind, cnd_windows=cnd_windows, mean_ema=cnd.mean_ema)
    return model.eval(), cnd, stats
