"""The 2D→3D lifter: a seq2seq spatio-temporal transformer (MixSTE / PoseFormerV2 family)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posert.models.blocks import PoseSequenceModel


@dataclass(frozen=True)
class LifterConfig:
    """Lifter hyper-parameters. ``window`` is the receptive field N in frames."""

    window: int = 27
    dim: int = 64
    depth: int = 4
    heads: int = 4
    causal: bool = True


class Lifter(PoseSequenceModel):
    """Seq2seq lifter: 2D keypoints of a window → root-relative 3D of every frame of the window.

    Input ``inp``: (B, N, 17, 3) float32 — normalised screen (x, y) (VideoPose3D convention) and
    confidence in [0, 1]; missing joints have confidence 0 and coordinates 0.
    Output: (B, N, 17, 3) float32, camera frame, root-relative (pelvis = 0), metres.

    With ``causal=True`` the temporal attention is masked so frame i sees frames ≤ i only: the
    output for the newest frame (index N − 1) uses no future input, and every frame is supervised
    in training (MixSTE-style seq2seq) while streaming reads frame N − 1.
    """

    def __init__(self, cfg: LifterConfig = LifterConfig()):
        super().__init__(cfg, in_channels=3)

    @property
    def delay(self) -> int:
        """Frames between the newest input frame and the frame whose pose is reported."""
        return 0 if self.cfg.causal else self.cfg.window // 2

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.decode(self.backbone(self.embed(inp)))
