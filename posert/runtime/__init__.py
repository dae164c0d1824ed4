"""Streaming runtime: per-stream ring buffers, backends and the batched tick."""

from posert.runtime.pipeline import Pipeline, TickResult

__all__ = ["Pipeline", "TickResult"]
