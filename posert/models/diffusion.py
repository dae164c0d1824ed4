"""Diffusion math of D3PRefiner: cosine schedule, the conditional noisy-pose distribution (CND)
and the DDIM update.

References:
    D3PRefiner: "A Diffusion-based Denoise Method for 3D Human Pose Refinement" — forward process
    Eq. 3/8, x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε with ε = x_0 + e (its Eq. 7 drops a square root; Eq. 3
    is used); DDIM inference Eq. 9.
    Nichol & Dhariwal 2021, "Improved DDPM" — cosine schedule with s = 0.008, β_t ≤ 0.999.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Schedule:
    """Cosine noise schedule with ``T`` steps and a DDIM sub-sequence of ``K`` steps.

    Attributes:
        alpha_bar: (T + 1,) float64 numpy, ᾱ_0 = 1 … ᾱ_T ≈ 0.
        timesteps: the K DDIM timesteps, descending, starting at T (e.g. T=50, K=2 → [50, 25]).
    """

    def __init__(self, T: int = 50, K: int = 2, s: float = 0.008):
        if not 1 <= K <= T:
            raise ValueError(f"need 1 ≤ K ≤ T, got K={K}, T={T}")
        self.T, self.K = T, K
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
        ab = f / f[0]
        beta = np.clip(1 - ab[1:] / ab[:-1], 0, 0.999)
        self.alpha_bar = np.concatenate([[1.0], np.cumprod(1 - beta)])
        self.timesteps = [int(round(T - i * T / K)) for i in range(K)]

    def pairs(self) -> list[tuple[int, int]]:
        """(t_k, t_{k−1}) for each DDIM step, e.g. [(50, 25), (25, 0)]."""
        return list(zip(self.timesteps, self.timesteps[1:] + [0]))

    def ddim_coefficients(self, t: int, t_prev: int) -> tuple[float, float, float, float]:
        """(√ᾱ_t, √(1−ᾱ_t), √ᾱ_{t−1}, √(1−ᾱ_{t−1})) as float32-representable Python floats."""
        a, ap = self.alpha_bar[t], self.alpha_bar[t_prev]
        return tuple(float(np.float32(v)) for v in (math.sqrt(a), math.sqrt(1 - a), math.sqrt(ap), math.sqrt(1 - ap)))

    def q_sample(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process (Eq. 3): x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε; t: (B,) int64, x0/eps (B, ...)."""
        ab = torch.as_tensor(self.alpha_bar, dtype=x0.dtype, device=x0.device)[t]
        ab = ab.reshape(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def ddim_step(x_k: torch.Tensor, e_hat: torch.Tensor, coef: tuple[float, float, float, float]) -> torch.Tensor:
    """D3PRefiner Eq. 9: x̂_0 = (x_k − √(1−ᾱ_k) ê) / (√ᾱ_k + √(1−ᾱ_k));
    x_{k−1} = (√ᾱ_{k−1} + √(1−ᾱ_{k−1})) x̂_0 + √(1−ᾱ_{k−1}) ê.

    The same float32 operation order as the fused kernel in csrc/ddim.cpp (so the two agree
    bit-for-bit on CPU). ``coef`` from :meth:`Schedule.ddim_coefficients`.
    """
    a, b, ap, bp = coef
    x0 = (x_k - b * e_hat) / (a + b)
    return (ap + bp) * x0 + bp * e_hat


class CND:
    """Conditional noisy-pose distribution: a joint Gaussian of a = e (lifter error) and
    b = [y (2D), x_noisy (lifter output)], conditioned on b:

        μ_a|b = μ_a + Σ_ab Σ_bb⁻¹ (b − μ_b),    Σ_a|b = Σ_aa − Σ_ab Σ_bb⁻¹ Σ_ba.

    Units: e and x_noisy in metres (root-relative camera frame), y normalised screen coords.
    Fit it on lifter errors from windows the lifter did not train on (cross-fitting).

    Two forms (``kind``), told apart by the shape of ``mean``:
      - ``"joint"`` (D3PRefiner, docs/design.md): one Gaussian per joint over [e (3), y (2), x (3)]:
        mean (17, 8), cov (17, 8, 8). Each joint's error is drawn independently of the others'.
      - ``"pose"`` (posert): one Gaussian over the whole pose, [e (51), y (34), x (51)], joints in
        H36M-17 order inside each part: mean (1, 136), cov (1, 136, 136). A lifter's errors are
        correlated across joints (a limb turned in depth moves every joint below it, and keeps
        its bone lengths); per-joint draws are not, so they break bone lengths that the lifter's
        output keeps, and a denoiser trained on them learns to pull limbs towards its pose prior.
    Internally both are G groups of n joints (17 × 1 or 1 × 17): gain (G, 3n, 5n), cond_cov and
    chol (G, 3n, 3n).

    Temporal extension (posert): a lifter's errors are smooth in time (lag-1 autocorrelation ≈ 0.9
    on real motion), while independent per-frame draws are white. ``rho`` is the lag-1
    autocorrelation of the whitened residual L⁻¹(e − μ_a|b) measured on the cross-fitted errors;
    :meth:`sample` draws the residual as a unit-variance AR(1) process along the frame axis with
    that coefficient, so every frame's marginal is still exactly N(μ_a|b, Σ_a|b). ``rho = 0``
    recovers D3PRefiner's per-frame sampling.
    """

    KINDS = ("joint", "pose")

    def __init__(self, mean: np.ndarray, cov: np.ndarray, rho: float = 0.0, subtract_mean: bool = False,
                 mean_ema: float = 1.0):
        """mean: (17, 8) and cov: (17, 8, 8) (per joint), or (1, 136) and (1, 136, 136) (whole
        pose), float64; rho in [0, 1). Raises ValueError for other shapes or rho.

        ``subtract_mean``: the denoiser that goes with this CND was trained on errors drawn from
        N(0, Σ_a|b) (``noise="cnd0"``), so inference removes the conditional mean first:
        x_T ← x_T − μ_a|b(y, x_T), and the K DDIM steps remove the rest. Together the two parts
        are D3PRefiner's error model e = μ_a|b + r, r ~ N(0, Σ_a|b), with the systematic part a
        linear map (:meth:`mean_map`) instead of something the network must learn.

        ``mean_ema`` (posert), in (0, 1]: what is subtracted is the causal exponential moving
        average of μ_a|b along a stream's frames, μ̄_0 = μ_0, μ̄_t = μ̄_{t−1} + α (μ_t − μ̄_{t−1})
        (:meth:`smooth_mean`), not μ_a|b itself. μ_a|b is a linear map of the 2D and of x_T, so it
        carries their frame-to-frame noise, amplified; the error it predicts is smooth in time
        (``rho``). α = 1 subtracts μ_a|b as it is. Raises ValueError outside (0, 1]."""
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if not 0.0 < mean_ema <= 1.0:
            raise ValueError(f"mean_ema must be in (0, 1], got {mean_ema}")
        self.mean_ema = float(mean_ema)
        self.rho = float(rho)
        self.subtract_mean = bool(subtract_mean)
        self.mean = np.asarray(mean, np.float64)
        self.cov = np.asarray(cov, np.float64)
        if self.mean.shape == (17, 8):
            self.kind, self.groups, self.n = "joint", 17, 1
        elif self.mean.shape == (1, 136):
            self.kind, self.groups, self.n = "pose", 1, 17
        else:
            raise ValueError(f"CND mean must be (17, 8) or (1, 136), got {self.mean.shape}")
        G, n = self.groups, self.n
        if self.cov.shape != (G, 8 * n, 8 * n):
            raise ValueError(f"CND cov must be {(G, 8 * n, 8 * n)}, got {self.cov.shape}")
        na = 3 * n
        S_ab = self.cov[:, :na, na:]
        S_bb = self.cov[:, na:, na:] + 1e-8 * np.eye(5 * n)
        self.gain = S_ab @ np.linalg.inv(S_bb)  # (G, 3n, 5n) = Σ_ab Σ_bb⁻¹
        cond = self.cov[:, :na, :na] - self.gain @ np.swapaxes(S_ab, 1, 2)
        cond = 0.5 * (cond + np.swapaxes(cond, 1, 2)) + 1e-10 * np.eye(na)
        self.cond_cov = cond
        self.chol = np.linalg.cholesky(cond)  # (G, 3n, 3n)

    @staticmethod
    def _groups(a, G: int):
        """(..., 17, c) → (..., G, 17·c / G): joints contiguous within a group."""
        return a.reshape(*a.shape[:-2], G, -1)

    @classmethod
    def fit(cls, e: np.ndarray, y: np.ndarray, x_noisy: np.ndarray, temporal: bool = True,
            kind: str = "joint") -> CND:
        """Fit from windows of samples: e (W, N, J, 3), y (W, N, J, 2), x_noisy (W, N, J, 3).

        ``kind``: "joint" (per joint, D3PRefiner) or "pose" (the whole pose); ValueError otherwise.
        With ``temporal`` (and N > 1) also estimate ``rho`` from consecutive frames.
        """
        if kind not in cls.KINDS:
            raise ValueError(f"CND kind must be one of {cls.KINDS}, got {kind!r}")
        G = 17 if kind == "joint" else 1
        z = np.concatenate([cls._groups(v.astype(np.float64), G) for v in (e, y, x_noisy)], axis=-1)  # (W,N,G,8n)
        flat = z.reshape(-1, *z.shape[-2:])
        mean = flat.mean(axis=0)
        d = flat - mean
        cov = np.einsum("mja,mjb->jab", d, d) / max(len(flat) - 1, 1)
        cnd = cls(mean, cov)
        if temporal and z.shape[1] > 1:
            r = cls._groups(e - cnd.conditional_mean(y, x_noisy), G)  # (W, N, G, 3n)
            w = np.einsum("jab,wnjb->wnja", np.linalg.inv(cnd.chol), r)  # whitened residual
            rho = float((w[:, 1:] * w[:, :-1]).sum() / (w[:, :-1] ** 2).sum())
            cnd = cls(mean, cov, float(np.clip(rho, 0.0, 0.99)))
        return cnd

    def conditional_mean(self, y: np.ndarray, x_noisy: np.ndarray) -> np.ndarray:
        """μ_a|b for y (..., 17, 2), x_noisy (..., 17, 3) → (..., 17, 3)."""
        G, na = self.groups, 3 * self.n
        b = np.concatenate([self._groups(y, G), self._groups(x_noisy, G)], axis=-1) - self.mean[:, na:]
        mu = self.mean[:, :na] + np.einsum("jab,...jb->...ja", self.gain, b)
        return mu.reshape(*mu.shape[:-2], 17, 3)

    def mean_map(self) -> tuple[np.ndarray, np.ndarray]:
        """μ_a|b as one affine map of a frame: (A (85, 51), c (51,)) float64 such that
        ``μ.reshape(51) = concat(y.reshape(34), x_noisy.reshape(51)) @ A + c`` for y (17, 2)
        normalised screen coordinates and x_noisy (17, 3) metres, joints in H36M-17 order; the
        same values as :meth:`conditional_mean`, for either form (the per-joint form gives a
        block-sparse A)."""
        G, n = self.groups, self.n
        J = G * n
        A = np.zeros((5 * J, 3 * J))
        c = np.zeros(3 * J)
        for g in range(G):
            joints = np.arange(g * n, (g + 1) * n)
            cols = (3 * joints[:, None] + np.arange(3)).reshape(-1)  # e of this group, joint-major
            rows = np.concatenate([(2 * joints[:, None] + np.arange(2)).reshape(-1),  # its y
                                   2 * J + (3 * joints[:, None] + np.arange(3)).reshape(-1)])  # its x
            A[np.ix_(rows, cols)] = self.gain[g].T
            c[cols] = self.mean[g, :3 * n] - self.gain[g] @ self.mean[g, 3 * n:]
        return A, c

    @staticmethod
    def ema_weights(n: int, alpha: float) -> np.ndarray:
        """(n, n) float64 lower-triangular W with μ̄ = W μ along frames: the causal EMA of
        :meth:`smooth_mean` restarted at frame 0 (row t: α (1 − α)^(t−s) for 1 ≤ s ≤ t,
        (1 − α)^t for s = 0; every row sums to 1)."""
        t = np.arange(n)
        lag = t[:, None] - t[None, :]
        W = np.where(lag >= 0, alpha * (1.0 - alpha) ** np.maximum(lag, 0), 0.0)
        W[:, 0] = (1.0 - alpha) ** t
        return W

    def smooth_mean(self, mu: np.ndarray) -> np.ndarray:
        """μ̄: the causal EMA (``mean_ema``) of conditional means μ (..., N, 17, 3) along the frame
        axis N, restarted at frame 0, as a stream that starts at frame 0 computes it tick by tick;
        same shape and dtype."""
        if self.mean_ema == 1.0:
            return mu
        W = self.ema_weights(mu.shape[-3], self.mean_ema).astype(mu.dtype)
        return np.einsum("ts,...sjc->...tjc", W, mu)

    def draw_residual(self, z: np.ndarray) -> np.ndarray:
        """L z for unit normals z (..., 17, 3) float32 → (..., 17, 3) float32: a draw of
        N(0, Σ_a|b) (the joints of a "pose" CND correlated as the lifter's errors are)."""
        zg = self._groups(z, self.groups)
        out = np.einsum("jab,...jb->...ja", self.chol.astype(np.float32), zg)
        return out.reshape(z.shape)

    def sample(self, y: torch.Tensor, x_noisy: torch.Tensor, generator: torch.Generator | None = None,
               zero_mean: bool = False) -> torch.Tensor:
        """Draw e ~ N(μ_a|b, Σ_a|b) per frame, AR(1)-correlated along frames with ``rho``:
        y (B, N, 17, 2), x_noisy (B, N, 17, 3) torch → (B, N, 17, 3).

        ``zero_mean`` draws N(0, Σ_a|b) instead (posert ablation): the conditional mean is a
        linear bias correction fitted on the training folds, which need not transfer to unseen
        motion; the residual covariance and its temporal correlation are kept."""
        dt, dev = x_noisy.dtype, x_noisy.device
        G, na = self.groups, 3 * self.n
        mean = torch.as_tensor(self.mean, dtype=dt, device=dev)
        gain = torch.as_tensor(self.gain, dtype=dt, device=dev)
        chol = torch.as_tensor(self.chol, dtype=dt, device=dev)
        b = torch.cat([self._groups(y, G), self._groups(x_noisy, G)], dim=-1) - mean[:, na:]
        mu = mean[:, :na] + torch.einsum("jab,...jb->...ja", gain, b)
        if zero_mean:
            mu = torch.zeros_like(mu)
        z = torch.randn(mu.shape, generator=generator, dtype=dt, device=dev)
        if self.rho > 0 and z.dim() >= 4:
            c = math.sqrt(1 - self.rho ** 2)
            frames = [z[:, 0]]
            for n in range(1, z.shape[1]):
                frames.append(self.rho * frames[-1] + c * z[:, n])
            z = torch.stack(frames, dim=1)
        out = mu + torch.einsum("jab,...jb->...ja", chol, z)
        return out.reshape(x_noisy.shape)

    @classmethod
    def from_state(cls, state: dict) -> CND:
        """Rebuild from :meth:`state_dict` (a checkpoint's ``"cnd"``; ``rho`` and
        ``subtract_mean`` and ``mean_ema`` default to 0, False and 1 for older checkpoints)."""
        return cls(state["mean"], state["cov"], state.get("rho", 0.0), state.get("subtract_mean", False),
                   float(state.get("mean_ema", 1.0)))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "cov": self.cov, "rho": self.rho, "subtract_mean": self.subtract_mean,
                "mean_ema": self.mean_ema}
