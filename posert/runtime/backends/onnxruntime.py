"""ONNX Runtime CPU backend: the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from posert.models.diffusion import CND, Schedule
from posert.models.io import _load


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """One inference thread per physical core (``threads`` or the CPU count), no inter-op pool
    and no spinning: the tick is latency-bound and must not fight other processes for cores."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 8))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OrtBackend:
    """Lifter and one denoiser step as ONNX Runtime sessions on the CPU execution provider."""

    def __init__(self, lifter_onnx: str | Path, denoiser_onnx: str | Path, window: int, delay: int,
                 schedule: Schedule, threads: int | None = None, cnd: CND | None = None):
        so = session_options(threads)
        for p in (lifter_onnx, denoiser_onnx):
            if not Path(p).exists():
                raise FileNotFoundError(f"ONNX model not found: {p}")
        self.lifter = ort.InferenceSession(str(lifter_onnx), so, providers=["CPUExecutionProvider"])
        self.denoiser = ort.InferenceSession(str(denoiser_onnx), so, providers=["CPUExecutionProvider"])
        self.window, self.delay, self.schedule, self.cnd = window, delay, schedule, cnd
        self._t = np.zeros(0, np.float32)

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None):
        """Export (once, cached) and load the ONNX models of the given or default checkpoints."""
        from posert.export.onnx import cached_onnx

        lifter_onnx, den_onnx = cached_onnx(lifter, refiner)
        lcfg = _load(lifter, "lifter.pt", "lifter")["config"]
        rckpt = _load(refiner, "refiner.pt", "refiner")
        dcfg = rckpt["config"]
        if lcfg["window"] != dcfg["window"]:
            raise ValueError(f"lifter window {lcfg['window']} != denoiser window {dcfg['window']}")
        delay = 0 if lcfg["causal"] else lcfg["window"] // 2
        cnd = CND(rckpt["cnd"]["mean"], rckpt["cnd"]["cov"], rckpt["cnd"].get("rho", 0.0))
        return cls(lifter_onnx, den_onnx, lcfg["window"], delay, Schedule(dcfg["T"], dcfg["K"]), threads, cnd)

    def lift(self, inp: np.ndarray) -> np.ndarray:
        return self.lifter.run(None, {"inp": inp})[0]

    def denoise(self, inp: np.ndarray, x_t: np.ndarray, t: float) -> np.ndarray:
        if self._t.shape[0] != inp.shape[0]:
            self._t = np.empty(inp.shape[0], np.float32)
        self._t.fill(t)
        return self.denoiser.run(None, {"inp": inp, "x_t": x_t, "t": self._t})[0]
