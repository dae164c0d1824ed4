"""Spatio-temporal transformer blocks shared by the lifter and the denoiser (MixSTE-style:
attention over joints within a frame, then over frames for each joint)."""

from __future__ import annotations

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


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 2):
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))


class STBlock(nn.Module):
    """One spatial + one temporal pre-LN transformer layer.

    forward(x: (B, N, J, C), temporal_mask: (N, N) or None) → (B, N, J, C).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.s_norm1, self.s_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.s_norm2, self.s_mlp = nn.LayerNorm(dim), MLP(dim)
        self.t_norm1, self.t_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.t_norm2, self.t_mlp = nn.LayerNorm(dim), MLP(dim)

    def forward(self, x: torch.Tensor, temporal_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, J, C = x.shape
        s = x.reshape(B * N, J, C)
        s = s + self.s_attn(self.s_norm1(s))
        s = s + self.s_mlp(self.s_norm2(s))
        t = s.reshape(B, N, J, C).transpose(1, 2).reshape(B * J, N, C)
        t = t + self.t_attn(self.t_norm1(t), temporal_mask)
        t = t + self.t_mlp(self.t_norm2(t))
        return t.reshape(B, J, N, C).transpose(1, 2)


def causal_mask(n: int) -> torch.Tensor:
    """(n, n) additive mask: frame i attends to frames ≤ i."""
    return torch.triu(torch.full((n, n), MASK_VALUE), diagonal=1)


class STBackbone(nn.Module):
    """Joint and frame position embeddings + ``depth`` STBlocks; optional per-block conditioning
    vector (the denoiser's timestep embedding) added to every token."""

    def __init__(self, window: int, joints: int, dim: int, depth: int, heads: int, causal: bool):
        super().__init__()
        self.joint_pos = nn.Parameter(torch.zeros(1, 1, joints, dim))
        self.frame_pos = nn.Parameter(torch.zeros(1, window, 1, dim))
        nn.init.trunc_normal_(self.joint_pos, std=0.02)
        nn.init.trunc_normal_(self.frame_pos, std=0.02)
        self.blocks = nn.ModuleList(STBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        mask = causal_mask(window) if causal else torch.zeros(window, window)
        self.register_buffer("mask", mask, persistent=False)
        self.causal = causal

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.joint_pos + self.frame_pos
        mask = self.mask if self.causal else None
        for blk in self.blocks:
            if cond is not None:
                x = x + cond
            x = blk(x, mask)
        return self.norm(x)


class PoseSequenceModel(nn.Module):
    """Shared shell of the lifter and the denoiser: ``embed`` (in_channels → C), the
    spatio-temporal backbone, a linear head to 3-D, and the pelvis pinned at the origin.

    ``cfg`` is a dataclass with ``window``, ``dim``, ``depth``, ``heads``, ``causal``; the model
    exposes its geometry (``window``, ``causal``) so callers never hard-code window arithmetic.
    """

    def __init__(self, cfg, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(in_channels, cfg.dim)
        self.backbone = STBackbone(cfg.window, NUM_JOINTS, cfg.dim, cfg.depth, cfg.heads, cfg.causal)
        self.head = nn.Linear(cfg.dim, 3)
        root_mask = torch.ones(1, 1, NUM_JOINTS, 1)
        root_mask[..., ROOT, :] = 0
        self.register_buffer("root_mask", root_mask, persistent=False)

    @property
    def window(self) -> int:
        """Receptive field N in frames."""
        return self.cfg.window

    @property
    def causal(self) -> bool:
        return self.cfg.causal

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, 17, C) features → (B, N, 17, 3), 0 at the pelvis (root-relative output)."""
        return self.head(h) * self.root_mask

    def config_dict(self) -> dict:
        return asdict(self.cfg)
