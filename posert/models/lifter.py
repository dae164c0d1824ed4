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

    With ``causal=True`` frame i sees frames i − N + 1 … i only (sliding-window attention with
    relative positions, :class:`~posert.models.blocks.TemporalAttention`): every frame is
    supervised in training (MixSTE-style seq2seq) and a stream runs it incrementally with
    :meth:`step`, one frame per tick, with outputs equal to :meth:`forward` on the whole sequence.
    The input may have any length; N is the receptive field, not a fixed input size.
    """

    def __init__(self, cfg: LifterConfig = LifterConfig()):
        super().__init__(cfg, in_channels=3)

    @property
    def delay(self) -> int:
        """Frames between the newest input frame and the frame whose pose is reported."""
        return 0 if self.cfg.causal else self.cfg.window // 2

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(inp))

    def features(self, inp: torch.Tensor) -> torch.Tensor:
        """inp (B, N, 17, 3) → the backbone's output (B, N, 17, dim) before the 3-D head: what a
        denoiser with ``feat_dim`` = dim is conditioned on; ``decode`` of it is :meth:`forward`."""
        return self.backbone(self.embed(inp))

    def step(self, inp: torch.Tensor, lag: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One new frame of a stream: inp (B, 17, 3), lag (B, M) int64 (see
        :meth:`~posert.models.blocks.TemporalAttention.step`), caches: 2·depth tensors
        (B, 17, heads, M, C/heads). Returns (pose (B, 17, 3) metres, root-relative, and the new
        frame's keys/values (2·depth, B, 17, heads, C/heads) for the caller's ring cache)."""
        B, J, _ = inp.shape
        h, kv = self.backbone.step(self.embed(inp.reshape(B * J, -1)).reshape(B, J, -1), lag, list(caches))
        return self.decode(h), kv
