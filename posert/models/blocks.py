"""Spatio-temporal transformer blocks shared by the lifter and the denoiser (MixSTE-style:
attention over joints within a frame, then over frames for each joint)."""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch import nn

from posert.skeleton import NUM_JOINTS, ROOT

#: Additive mask value for disallowed attention; finite so FP16 engines stay NaN-free.
MASK_VALUE = -1.0e4


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis, written with plain MatMul/Softmax
    so it exports to every ONNX opset ≥ 17 and every TensorRT version.

    forward(x: (S, L, C), mask: (L, L) additive or None) → (S, L, C).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        S, L, C = x.shape
        qkv = self.qkv(x).reshape(S, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:
            att = att + mask
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(S, L, C))

    def forward_flat(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Same as :meth:`forward` (no mask) on x (S·L, C) flattened, S = ``groups``: the linear
        layers see 2-D input, which ONNX Runtime fuses into Gemm (the streaming step path)."""
        return self.proj(self.core_flat(self.qkv(x), groups))

    def core_flat(self, qkv: torch.Tensor, groups: int) -> torch.Tensor:
        """The attention core of :meth:`forward_flat`: qkv (S·L, 3C) → output (S·L, C) before
        ``proj``. ``posert._C.spatial_attention`` is its C++ twin (csrc/attention.h)."""
        SL, C3 = qkv.shape
        C, L = C3 // 3, SL // groups
        qkv = qkv.reshape(groups, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(SL, C)


class GELU(nn.Module):
    """Exact (erf) GELU, x · (1 + erf(x / √2)) · 0.5 — the operation order that ONNX Runtime fuses
    into one Gelu kernel (its 'Div → Erf → Add → Mul → Mul(0.5)' pattern); same function as
    ``nn.GELU()`` to float rounding, and parameter-free, so checkpoints are interchangeable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.erf(x / 1.4142135623730951) + 1.0) * 0.5


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 2):
        super().__init__(nn.Linear(dim, dim * ratio), GELU(), nn.Linear(dim * ratio, dim))


class TemporalAttention(Attention):
    """Self-attention over frames with a learned relative-position bias and a limited span.

    Frame i attends to frames j with 0 ≤ i − j ≤ ``max_lag`` (causal) or |i − j| ≤ ``max_lag``
    (offline); the bias ``rel[h, lag]`` depends only on the lag, never on the position in a window,
    so a frame's keys and values never change once computed. That makes the causal model exactly
    incremental: :meth:`step` computes one new frame from cached keys/values of the past
    ``max_lag`` frames and equals :meth:`forward` on the whole sequence (sliding-window attention
    with relative positions, as in Longformer/Mistral-style local attention with ALiBi/T5-style
    biases — here learned per head and lag).
    """

    def __init__(self, dim: int, heads: int, max_lag: int, causal: bool):
        super().__init__(dim, heads)
        self.max_lag, self.causal = max_lag, causal
        self.rel = nn.Parameter(torch.zeros(heads, max_lag + 1 if causal else 2 * max_lag + 1))

    def bias(self, n: int) -> torch.Tensor:
        """(heads, n, n) additive bias for a sequence of n frames (MASK_VALUE outside the span)."""
        i = torch.arange(n, device=self.rel.device)
        lag = i[:, None] - i[None, :]
        if self.causal:
            allowed = (lag >= 0) & (lag <= self.max_lag)
            idx = lag.clamp(0, self.max_lag)
        else:
            allowed = lag.abs() <= self.max_lag
            idx = (lag + self.max_lag).clamp(0, 2 * self.max_lag)
        return torch.where(allowed, self.rel[:, idx], torch.full_like(self.rel[:, idx], MASK_VALUE))

    def step(self, x: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, lag: torch.Tensor):
        """One new frame of a causal stream.

        Args:
            x: (B·J, C) normalised features of the new frame (flattened, joint-minor).
            cache_k, cache_v: (B, J, heads, M, C/heads) keys/values of the past M = ``max_lag``
                frames in ring order (any slot order: the lag says which frame a slot holds).
            lag: (B, M) int64, the lag 1…M of each slot, or M + 1 for an empty slot (stream start).
        Returns (out (B·J, C), k_new (B, J, heads, C/heads), v_new (B, J, heads, C/heads)).
        """
        out, k, v = self.core(self.qkv(x), cache_k, cache_v, lag)
        return self.proj(out), k, v

    def bias_table(self) -> torch.Tensor:
        """(heads, M + 2) additive bias by lag 0 … M, then MASK_VALUE for an empty slot (lag M + 1)."""
        h = self.heads
        return torch.cat([self.rel, torch.full((h, 1), MASK_VALUE, dtype=self.rel.dtype, device=self.rel.device)], 1)

    def core(self, qkv: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, lag: torch.Tensor):
        """What :meth:`step` does between the qkv and the output projection, for one new frame:
        qkv (B·J, 3C) → (attention output (B·J, C) before ``proj``, k_new, v_new (B, J, heads,
        C/heads)). ``posert._C.cached_attention`` is its C++ twin (csrc/attention.h), which the
        ONNX Runtime backend runs between the split step graphs."""
        BJ, C3 = qkv.shape
        C = C3 // 3
        B, J = lag.shape[0], cache_k.shape[1]
        h, M = self.heads, self.max_lag
        q, k, v = qkv.reshape(B, J, 3, h, C // h).unbind(2)  # (B, J, h, d)
        q = q * self.scale
        table = self.bias_table()  # (h, M + 2)
        bias = table[:, lag].permute(1, 0, 2).reshape(B, 1, h, 1, M)
        own = (q * k).sum(-1, keepdim=True) + self.rel[:, 0].reshape(1, 1, h, 1)
        # Batched 1 × d × M products (MatMul). On ONNX Runtime CPU this beats a broadcast-multiply-
        # and-reduce form: p50 −10 to −17 % at 1 stream, +20 % throughput at 16 (RESULTS.md).
        past = (q.unsqueeze(-2) @ cache_k.transpose(-2, -1)).squeeze(-2) + bias.reshape(B, 1, h, M)  # (B, J, h, M)
        p = torch.cat([own, past], dim=-1).softmax(dim=-1)  # (B, J, h, 1 + M)
        out = p[..., :1] * v + (p[..., 1:].unsqueeze(-2) @ cache_v).squeeze(-2)  # (B, J, h, d)
        return out.reshape(BJ, C), k, v


class STBlock(nn.Module):
    """One spatial + one temporal pre-LN transformer layer (MixSTE order).

    forward(x: (B, N, J, C)) → (B, N, J, C); step(x: (B·J, C), caches, lag) → one new frame.
    """

    def __init__(self, dim: int, heads: int, max_lag: int, causal: bool):
        super().__init__()
        self.s_norm1, self.s_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.s_norm2, self.s_mlp = nn.LayerNorm(dim), MLP(dim)
        self.t_norm1, self.t_attn = nn.LayerNorm(dim), TemporalAttention(dim, heads, max_lag, causal)
        self.t_norm2, self.t_mlp = nn.LayerNorm(dim), MLP(dim)

    def _spatial(self, s: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        a = self.s_norm1(s)
        s = s + (self.s_attn(a) if groups is None else self.s_attn.forward_flat(a, groups))
        return s + self.s_mlp(self.s_norm2(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, J, C = x.shape
        s = self._spatial(x.reshape(B * N, J, C))
        t = s.reshape(B, N, J, C).transpose(1, 2).reshape(B * J, N, C)
        t = t + self.t_attn(self.t_norm1(t), self.t_attn.bias(N))
        t = t + self.t_mlp(self.t_norm2(t))
        return t.reshape(B, J, N, C).transpose(1, 2)

    def step(self, x: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, lag: torch.Tensor):
        s, qkv = self.pre_attention(x, lag.shape[0])
        a, k, v = self.t_attn.core(qkv, cache_k, cache_v, lag)
        return self.post_attention(s, a), k, v

    def pre_attention(self, x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step, first part: x (B·J, C), B = ``groups`` → (residual stream s (B·J, C) after the
        spatial layer, the temporal qkv projection (B·J, 3C))."""
        s = self._spatial(x, groups)
        return s, self.t_attn.qkv(self.t_norm1(s))

    def spatial_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """x (B·J, C) → the spatial qkv projection (B·J, 3C) (input of :meth:`Attention.core_flat`)."""
        return self.s_attn.qkv(self.s_norm1(x))

    def post_spatial(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """x (B·J, C) the block's input, a (B·J, C) the spatial core's output → the residual
        stream s after the spatial layer (as in :meth:`pre_attention`)."""
        x = x + self.s_attn.proj(a)
        return x + self.s_mlp(self.s_norm2(x))

    def post_attention(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Step, last part: s (B·J, C) from :meth:`pre_attention`, a (B·J, C) the attention core's
        output → the block's output (B·J, C)."""
        t = s + self.t_attn.proj(a)
        return t + self.t_mlp(self.t_norm2(t))


def max_lag_for(window: int, depth: int) -> int:
    """Per-layer attention span (max lag M) so that ``depth`` stacked layers see exactly the
    receptive field: depth · M ≥ window − 1 (M = ⌈(N − 1) / L⌉)."""
    return max(1, math.ceil((window - 1) / depth))


class STBackbone(nn.Module):
    """Joint embeddings + ``depth`` STBlocks with relative temporal positions; optional per-block
    conditioning vector (the denoiser's timestep embedding) added to every token.

    There is no absolute frame embedding: the output of a frame depends only on that frame and
    the ``window − 1`` frames before it (causal), wherever they sit in the input, so the model runs
    on sequences of any length and incrementally (:meth:`step`) with identical results.
    """

    def __init__(self, window: int, joints: int, dim: int, depth: int, heads: int, causal: bool):
        super().__init__()
        self.joint_pos = nn.Parameter(torch.zeros(1, 1, joints, dim))
        nn.init.trunc_normal_(self.joint_pos, std=0.02)
        self.max_lag = max_lag_for(window, depth)
        self.blocks = nn.ModuleList(STBlock(dim, heads, self.max_lag, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.causal, self.heads, self.dim = causal, heads, dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, J, C), cond: (B, 1, 1, C) or None → (B, N, J, C)."""
        x = x + self.joint_pos
        for blk in self.blocks:
            if cond is not None:
                x = x + cond
            x = blk(x)
        return self.norm(x)

    def step(self, x: torch.Tensor, lag: torch.Tensor, caches: list[torch.Tensor], cond: torch.Tensor | None = None):
        """One frame: x (B, J, C), lag (B, M) int64, caches = [k_0, v_0, k_1, v_1, …] each
        (B, J, heads, M, C/heads), cond (B, 1, C) or None → (features (B·J, C) flattened,
        new keys/values stacked (2·depth, B, J, heads, C/heads)). Causal models only."""
        if not self.causal:
            raise ValueError("incremental step needs a causal model (offline models see future frames)")
        B, J, C = x.shape
        x = (x + self.joint_pos[0]).reshape(B * J, C)
        if cond is not None:
            cond = cond.expand(B, J, C).reshape(B * J, C)
        new = []
        for i, blk in enumerate(self.blocks):
            if cond is not None:
                x = x + cond
            x, k, v = blk.step(x, caches[2 * i], caches[2 * i + 1], lag)
            new += [k, v]
        return self.norm(x), torch.stack(new)


class PoseSequenceModel(nn.Module):
    """Shared shell of the lifter and the denoiser: ``embed`` (in_channels → C), the
    spatio-temporal backbone, a linear head to 3-D, and the pelvis pinned at the origin.

    ``cfg`` is a dataclass with ``window``, ``dim``, ``depth``, ``heads``, ``causal``; the model
    exposes its geometry (``window``, ``causal``, ``cache_shape``) so callers never hard-code
    window arithmetic.
    """

    def __init__(self, cfg, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(in_channels, cfg.dim)
        self.backbone = STBackbone(cfg.window, NUM_JOINTS, cfg.dim, cfg.depth, cfg.heads, cfg.causal)
        self.head = nn.Linear(cfg.dim, 3)
        root_mask = torch.ones(NUM_JOINTS, 1)
        root_mask[ROOT] = 0
        self.register_buffer("root_mask", root_mask, persistent=False)

    @property
    def window(self) -> int:
        """Receptive field N in frames."""
        return self.cfg.window

    @property
    def causal(self) -> bool:
        return self.cfg.causal

    @property
    def max_lag(self) -> int:
        """M, the number of past frames each temporal layer attends to (ring size of its cache)."""
        return self.backbone.max_lag

    @property
    def cache_shape(self) -> tuple[int, int, int, int, int]:
        """(2·depth, J, heads, M, C/heads): the per-stream key/value cache of :meth:`step`."""
        c = self.cfg
        return (2 * c.depth, NUM_JOINTS, c.heads, self.max_lag, c.dim // c.heads)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """(..., 17, C) features, or flattened (B·17, C) → (B, 17, 3); 0 at the pelvis
        (root-relative output)."""
        if h.dim() == 2:
            return self.head(h).reshape(-1, NUM_JOINTS, 3) * self.root_mask
        return self.head(h) * self.root_mask

    def config_dict(self) -> dict:
        return asdict(self.cfg)
