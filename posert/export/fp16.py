"""FP16 variants of the exported step models (onnxconverter-common).

Weights and activations become float16; graph inputs and outputs stay float32
(``keep_io_types``), so the runtime's buffers and caches are the same for every precision.
LayerNormalization and Softmax stay float32 by default: their reductions overflow or lose the
small attention weights in float16 (TensorRT applies the same rule for LayerNorm). ONNX
Runtime's CPU provider computes the float16 nodes it has no kernel for in float32 after a cast;
the numbers it reports are therefore those of float16 storage with float32 arithmetic, the same
rounding of weights and activations a GPU's FP16 engine sees.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

FP32_OPS = ("LayerNormalization", "Softmax")


def convert_fp16(model_path: str | Path, out_path: str | Path, keep_fp32: tuple[str, ...] = FP32_OPS) -> Path:
    """Write an FP16 copy of an ONNX model with float32 I/O; ``keep_fp32`` op types stay float32.

    Raises onnx.checker.ValidationError if the result is not a valid model.
    """
    from onnxconverter_common import float16

    model = onnx.load(str(model_path))
    with warnings.catch_warnings():  # "-10000.0 will be truncated": the attention mask, exact in fp16
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True,
                                                op_block_list=float16.DEFAULT_OP_BLOCK_LIST + list(keep_fp32))
    onnx.checker.check_model(half)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(out_path))
    return out_path
