"""Explicit INT8 quantisation (Q/DQ) of the step models with ONNX Runtime's quantisation tool,
and per-node sensitivity.

Format (what TensorRT's explicit quantisation consumes, docs/design.md): QuantizeLinear /
DequantizeLinear pairs on the *inputs* of every quantised Gemm and MatMul (outputs stay float,
as NVIDIA recommends for explicit quantisation), int8 symmetric (zero point 0) activations with
per-tensor scales from MinMax calibration on real motion, symmetric per-output-channel weights.
Everything else (LayerNorm, Softmax, GELU, the attention mask) stays float32. The result runs in
ONNX Runtime on the CPU, so INT8 accuracy is measured here; TensorRT fuses the same Q/DQ pairs
into INT8 kernels.

Weights use 7 of the 8 bits (``reduce_range``) by default. Measured on this project's AVX2
CPU without VNNI: ORT's fused QGemm kernels multiply int8 pairs into saturating int16 sums, and
with full-range weights one quantised Gemm alone moved ê by 6 mm (57 mm for the output head)
instead of the 0.14 mm the same Q/DQ graph gives unfused. With 7-bit weights fused and unfused
results agree (0.19 mm). The values stay valid symmetric int8 for TensorRT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

QUANTIZED_OPS = ("Gemm", "MatMul")


class FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over recorded feed dicts
    (:func:`posert.calibration.windows.record_step_inputs`)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._i = 0

    def get_next(self) -> dict | None:
        if self._i >= len(self.feeds):
            return None
        self._i += 1
        return self.feeds[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def preprocess(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's quantisation pre-processing (ONNX shape inference + basic graph
    optimisation; symbolic shape inference skipped, docs/design.md). Node names of the result are the
    ones that :func:`quantize_int8`'s include/exclude lists refer to."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def quantizable_nodes(model_path: str | Path) -> list[str]:
    """Names of the nodes :func:`quantize_int8` quantises (Gemm and MatMul), in graph order."""
    return [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node
            if n.op_type in QUANTIZED_OPS]


def quantize_int8(model_path: str | Path, out_path: str | Path, feeds: list[dict] | None, calibration_cache: str | Path,
                  nodes_to_exclude: list[str] | None = None, nodes_to_quantize: list[str] | None = None,
                  reduce_range: bool = True) -> Path:
    """Write a Q/DQ INT8 model of ``model_path`` (a :func:`preprocess`-ed step model).

    Args:
        feeds: calibration feeds; may be None once ``calibration_cache`` exists (the MinMax ranges
            of every tensor are computed once and reused by every later call).
        nodes_to_exclude: nodes kept in float32 (the accuracy gate's choice).
        nodes_to_quantize: quantise only these (sensitivity analysis); default: every Gemm/MatMul.
        reduce_range: 7-bit weights (see the module docstring); False for full 8-bit weights where
            the int8 kernels accumulate without saturation (VNNI CPUs, TensorRT).
    Raises ValueError if neither ``feeds`` nor an existing ``calibration_cache`` is given.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cache = Path(calibration_cache)
    if feeds is None and not cache.exists():
        raise ValueError(f"no calibration feeds and no calibration cache at {cache}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs a line per tensor to the root logger
    try:
        quantize_static(str(model_path), str(out_path), FeedReader(feeds) if feeds is not None else None,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(nodes_to_exclude or []),
                        nodes_to_quantize=list(nodes_to_quantize or []),
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)})
    finally:
        root.setLevel(level)
    return Path(out_path)


def _run(path: Path, feeds: list[dict]) -> list[np.ndarray]:
    from posert.runtime.backends.onnxruntime import create_session

    sess = create_session(path)
    return [sess.run(None, f)[0] for f in feeds]


def node_sensitivity(model_path: str | Path, feeds: list[dict], calibration_cache: str | Path, workdir: str | Path,
                     max_feeds: int = 8) -> dict[str, float]:
    """Per-node INT8 sensitivity: quantise one Gemm/MatMul alone and measure the mean absolute
    change of the model's first output (the pose, or ê, in mm) on ``max_feeds`` calibration
    feeds against float32. Returns ``{node: mm}`` (higher = more sensitive).

    One node at a time is the standard layer-wise sensitivity sweep (as in NVIDIA's quantisation
    toolkits); it ranks nodes for :func:`posert.calibration.gate.accuracy_gate`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    feeds = feeds[:max_feeds]
    ref = _run(Path(model_path), feeds)
    out = {}
    for node in quantizable_nodes(model_path):
        tmp = quantize_int8(model_path, workdir / "one_node.onnx", None, calibration_cache, nodes_to_quantize=[node])
        got = _run(tmp, feeds)
        out[node] = float(np.mean([np.abs(g - r).mean() for g, r in zip(got, ref)]) * 1000.0)
    return out
