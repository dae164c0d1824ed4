"""The 2D→3D lifter: a seq2seq spatio-temporal transformer (MixSTE / PoseFormerV2 family)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from posert.models.blocks import STBackbone
from posert.skeleton import NUM_JOINTS, ROOT


@dataclass(frozen=True)
class LifterConfig:
    """Lifter hyper-parameters. ``window`` is the receptive field N in frames."""

    window: int = 27
    dim: int = 64
    depth: int = 4
    heads: int = 4
    causal: bool = True


class Lifter(nn.Module):
    """Seq2seq lifter: 2D keypoints of a window → root-relative 3D of every frame of the window.

    Input ``inp``: (B, N, 17, 3) float32 — normalised screen (x, y) (VideoPose3D convention) and
    confidence in [0, 1]; missing joints have confidence 0 and coordinates 0.
    Output: (B, N, 17, 3) float32, camera frame, root-relative (pelvis = 0), metres.

    With ``causal=True`` the temporal attention is masked so frame i sees frames ≤ i only: the
    output for the newest frame (index N − 1) uses no future input, and every frame is supervised
    in training (MixSTE-style seq2seq) while streaming reads frame N − 1.
    """

    def __init__(self, cfg: LifterConfig = LifterConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(3, cfg.dim)
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

    @property
    def delay(self) -> int:
        """Frames between the newest input frame and the frame whose pose is reported."""
        return 0 if self.cfg.causal else self.cfg.window // 2

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.embed(inp))) * self.root_mask

    def config_dict(self) -> dict:
        return asdict(self.cfg)
