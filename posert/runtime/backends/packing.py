"""The fused step kernel's view of a model, shared by the native and the CUDA backends: its
dimensions, its weights packed into one vector, and the denoiser's timestep conditioning."""

from __future__ import annotations

import numpy as np
import torch

from posert.models.denoiser import Denoiser
from posert.skeleton import NUM_JOINTS, ROOT


def step_dims(model) -> tuple:
    """The ``dims`` tuple of ``posert._C.transformer_step`` for a lifter or denoiser:
    (J, C, heads, depth, M, in_ch, hidden, scale, eps, root, denoiser). Raises ValueError for a
    denoiser conditioned on lifter features (not streamable) or mixed LayerNorm eps."""
    if getattr(model, "feat", None) is not None:
        raise ValueError("the fused step does not take lifter features (feat_dim > 0)")
    bb = model.backbone
    blk = bb.blocks[0]
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise ValueError(f"the fused step needs one LayerNorm eps, got {sorted(eps)}")
    den = isinstance(model, Denoiser)
    return (NUM_JOINTS, bb.dim, bb.heads, len(bb.blocks), bb.max_lag, 6 if den else 3, blk.s_mlp[0].out_features,
            float(blk.s_attn.scale), float(eps.pop()), ROOT, int(den))


@torch.no_grad()
def pack_step(model) -> np.ndarray:
    """All weights of a lifter's or denoiser's step as one float32 vector in the order of
    ``StepLayout`` (csrc/step/transformer_step.h): linear weights transposed to [in][out], the
    temporal bias as its (heads, M + 2) lag table. Raises ValueError if the size disagrees with the
    layout."""

    def lin(m):
        return [m.weight.t(), m.bias]

    def ln(m):
        return [m.weight, m.bias]

    bb = model.backbone
    parts = [*lin(model.embed), bb.joint_pos.reshape(NUM_JOINTS, -1)]
    for blk in bb.blocks:
        parts += [*ln(blk.s_norm1), *lin(blk.s_attn.qkv), *lin(blk.s_attn.proj), *ln(blk.s_norm2),
                  *lin(blk.s_mlp[0]), *lin(blk.s_mlp[2]),
                  *ln(blk.t_norm1), *lin(blk.t_attn.qkv), *lin(blk.t_attn.proj), blk.t_attn.bias_table(),
                  *ln(blk.t_norm2), *lin(blk.t_mlp[0]), *lin(blk.t_mlp[2])]
    parts += [*ln(bb.norm), *lin(model.head)]
    flat = torch.cat([p.detach().float().contiguous().reshape(-1).cpu() for p in parts]).numpy()
    J, C, h, L, M, cin, hid = step_dims(model)[:7]
    per_layer = 2 * (4 * C + 3 * C * C + 3 * C + C * C + C + 2 * C * hid + hid + C) + h * (M + 2)
    if flat.size != cin * C + C + J * C + L * per_layer + 2 * C + 3 * C + 3:
        raise ValueError("model does not have the layout of csrc/step/transformer_step.h")
    return flat


@torch.no_grad()
def step_cond(denoiser: Denoiser, t: float) -> np.ndarray:
    """The denoiser's timestep conditioning t_mlp(embedding(t)), (C,) float32: constant per DDIM
    step, so the fused step takes it precomputed."""
    from posert.models.denoiser import timestep_embedding

    p = next(denoiser.parameters())
    e = denoiser.t_mlp(timestep_embedding(torch.full((1,), float(t), device=p.device), denoiser.cfg.dim))
    return e[0].float().cpu().numpy()
