"""Inference backends. Each exposes ``window``, ``delay``, ``schedule`` and

- ``lift(inp (B, N, 17, 3) float32) -> (B, N, 17, 3) float32`` root-relative metres, and
- ``denoise(inp, x_t (B, N, 17, 3), t: float) -> ê (B, N, 17, 3)`` one denoiser step.

Heavy imports (onnxruntime, torch, tensorrt) happen inside each module, so importing the runtime
costs nothing until a backend is built.
"""

from __future__ import annotations


def create_backend(name: str, lifter: str | None = None, refiner: str | None = None, threads: int | None = None):
    """Build a backend by name: ``onnxruntime`` (default, CPU) or ``torch`` (reference).

    Raises ValueError for an unknown name.
    """
    if name == "onnxruntime":
        from posert.runtime.backends.onnxruntime import OrtBackend

        return OrtBackend.from_checkpoints(lifter, refiner, threads=threads)
    if name == "torch":
        from posert.runtime.backends.torch import TorchBackend

        return TorchBackend.from_checkpoints(lifter, refiner, threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose 'onnxruntime' or 'torch'")
