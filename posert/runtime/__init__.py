"""The streaming runtime: :class:`Pipeline` (streams in, refined 3D out, one tick at a time), its
configuration (:mod:`posert.config`), the chain of a tick (:mod:`.chain`), the correction stage
(:mod:`.correction`) and the backends (:mod:`.backends`)."""

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.runtime.pipeline import Pipeline, TickResult

__all__ = ["BackendConfig", "CorrectionConfig", "Pipeline", "PipelineConfig", "RefinerConfig", "TickResult"]
