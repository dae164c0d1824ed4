"""ONNX Runtime CPU backend: the embedded default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from posert.models.diffusion import CND, Schedule
from posert.models.io import _load


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Inference threads (``threads``, default 1), no inter-op pool and no spinning.

    A streaming tick is a few hundred tiny kernels on (B·17, 64) tensors: below a batch of a few
    dozen streams one thread beats a pool (dispatch costs more than the work), and a tick must not
    fight other processes for cores. Give ``threads`` > 1 for large batches.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def create_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session of one ONNX file (float32, FP16 or Q/DQ INT8) with :func:`session_options`.

    ORT's ``NchwcTransformer`` is disabled: it only rewrites Conv layouts (these models have
    none), and ORT 1.31 crashes creating FP16 and Q/DQ sessions with it (DESIGN.md).
    Raises FileNotFoundError for a missing file.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"],
                                disabled_optimizers=["NchwcTransformer"])


class OrtBackend:
    """The lifter step and one denoiser step as ONNX Runtime sessions on the CPU execution
    provider (graphs from :mod:`posert.export.onnx`). Cache arrays are passed as inputs and read
    in place (contiguous float32 NumPy arrays are not copied). ``lift_step`` and ``denoise_step``
    may be called from two threads at once (ORT sessions are thread-safe for ``run``), which
    :class:`~posert.runtime.pipeline.Pipeline` uses to run two shards of a tick concurrently."""

    concurrent_runs = True

    def __init__(self, lifter_onnx: str | Path, denoiser_onnx: str | Path, window: int, schedule: Schedule,
                 threads: int | None = None, cnd: CND | None = None):
        self.lifter = create_session(lifter_onnx, threads)
        self.denoiser = create_session(denoiser_onnx, threads)
        self.window, self.schedule, self.cnd = window, schedule, cnd
        self.lifter_cache_shape = self._cache_shape(self.lifter)
        self.denoiser_cache_shape = self._cache_shape(self.denoiser)
        self._t: dict[tuple[int, float], np.ndarray] = {}  # read-only t inputs, shared by threads

    @staticmethod
    def _cache_shape(sess: ort.InferenceSession) -> tuple[int, ...]:
        caches = [i for i in sess.get_inputs() if i.name.startswith("cache_")]
        if not caches:
            raise ValueError("not a streaming step model: no cache_* inputs")
        return (len(caches), *caches[0].shape[1:])

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None,
                         precision: str = "fp32"):
        """Export (once, cached) and load the ONNX step models of the given or default checkpoints
        at ``precision`` (fp32 | fp16 | int8; see :func:`posert.export.precision.precision_onnx`)."""
        from posert.export.precision import precision_onnx

        lcfg = _load(lifter, "lifter.pt", "lifter")["config"]
        rckpt = _load(refiner, "refiner.pt", "refiner")
        dcfg = rckpt["config"]
        if not (lcfg["causal"] and dcfg["causal"]):
            raise ValueError("the streaming runtime needs causal models (an offline checkpoint was given)")
        lifter_onnx, den_onnx = precision_onnx(precision, lifter, refiner)
        cnd = CND(rckpt["cnd"]["mean"], rckpt["cnd"]["cov"], rckpt["cnd"].get("rho", 0.0))
        return cls(lifter_onnx, den_onnx, lcfg["window"], Schedule(dcfg["T"], dcfg["K"]), threads, cnd)

    @staticmethod
    def _feeds(caches: list[np.ndarray], feeds: dict) -> dict:
        for i, c in enumerate(caches):
            feeds[f"cache_{i}"] = c
        return feeds

    def lift_step(self, inp: np.ndarray, lag: np.ndarray, caches: list[np.ndarray]):
        feeds = self._feeds(caches, {"inp": np.ascontiguousarray(inp), "lag": lag})
        return self.lifter.run(None, feeds)

    def denoise_step(self, inp: np.ndarray, x_t: np.ndarray, t: float, lag: np.ndarray, caches: list[np.ndarray]):
        tt = self._t.get((inp.shape[0], t))
        if tt is None:
            tt = self._t.setdefault((inp.shape[0], t), np.full(inp.shape[0], t, np.float32))
        feeds = self._feeds(caches, {"inp": inp, "x_t": x_t, "t": tt, "lag": lag})
        return self.denoiser.run(None, feeds)
