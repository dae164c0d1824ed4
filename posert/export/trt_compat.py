"""Static TensorRT-compatibility check of an ONNX model (runs everywhere, no TensorRT needed).

Checks what makes TensorRT 10's ONNX parser or engine builder reject a model, before a model
ever reaches a GPU:

- opset of the default domain within TensorRT 10's range (9 … 20);
- every node in the default ONNX domain (no ``com.microsoft`` contrib ops such as ONNX Runtime's
  fused ones) and its op type in TensorRT 10's supported-operator list;
- QuantizeLinear / DequantizeLinear with zero points of 0 (TensorRT supports symmetric
  quantisation only) and the ``axes`` of Slice/Squeeze/Unsqueeze as initializers or constants;
- graph inputs, outputs and initializers of data types TensorRT has (no double, string,
  complex, uint16/32/64);
- static shapes except the batch: the only symbolic dimension allowed is the one named by the
  inputs' first axis (the optimisation profile's batch).

Source of the operator list: onnx/onnx-tensorrt ``docs/operators.md`` for TensorRT 10 (the
operators marked supported). The list is conservative: an op missing from it is reported, so a
new op in an export is looked up before it ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

MIN_OPSET, MAX_OPSET = 9, 20

TRT10_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_TP = onnx.TensorProto
TRT_DTYPES = {_TP.FLOAT, _TP.FLOAT16, _TP.BFLOAT16, _TP.INT32, _TP.INT64, _TP.INT8, _TP.UINT8, _TP.BOOL,
              _TP.FLOAT8E4M3FN, _TP.INT4}
_AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1}


@dataclass(frozen=True)
class Problem:
    """One incompatibility: ``kind`` (opset | domain | op | quantization | axes | dtype | shape),
    the node or tensor it concerns, and a sentence saying what is wrong."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.where}: {self.message}"


class TensorRTCompatibilityError(ValueError):
    """Raised by :func:`assert_tensorrt_compatible`; ``problems`` lists every finding."""

    def __init__(self, path, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{path} is not TensorRT-compatible:\n" + "\n".join(f"  {p}" for p in problems))


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None)
            for d in vi.type.tensor_type.shape.dim]


def check_tensorrt_compat(model: str | Path | onnx.ModelProto) -> list[Problem]:
    """Every reason TensorRT 10 would reject ``model`` (an ONNX path or ModelProto); [] if none.

    Raises onnx's errors for an unreadable file.
    """
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    g = m.graph
    problems: list[Problem] = []
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    v = opset.get("ai.onnx")
    if v is None or not MIN_OPSET <= v <= MAX_OPSET:
        problems.append(Problem("opset", "model",
                                f"default-domain opset {v} outside TensorRT 10's {MIN_OPSET}…{MAX_OPSET}"))

    consts = {i.name for i in g.initializer}
    consts |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        where = f"node {n.name or '?'} ({n.op_type})"
        if n.domain not in ("", "ai.onnx"):
            problems.append(Problem("domain", where, f"op {n.domain}::{n.op_type} is not a standard ONNX op"))
            continue
        if n.op_type not in TRT10_SUPPORTED_OPS:
            problems.append(Problem("op", where, f"op {n.op_type} is not supported by TensorRT 10"))
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2])
            if zp is None or any(onnx.numpy_helper.to_array(zp).ravel() != 0):
                problems.append(Problem("quantization", where, "zero point must be a constant 0 (symmetric)"))
        k = _AXES_INPUT.get(n.op_type)
        if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in consts:
            problems.append(Problem("axes", where, f"input {n.input[k]!r} (axes) must be an initializer or constant"))

    batch = {d[0] for d in (_dims(i) for i in g.input if i.name not in consts) if d and isinstance(d[0], str)}
    for vi in [*g.input, *g.output]:
        if vi.name in consts:
            continue
        t = vi.type.tensor_type
        if t.elem_type not in TRT_DTYPES:
            problems.append(Problem("dtype", f"tensor {vi.name}",
                                    f"data type {_TP.DataType.Name(t.elem_type)} is not a TensorRT type"))
        if not t.HasField("shape"):
            problems.append(Problem("shape", f"tensor {vi.name}", "unknown rank: the shape must be declared"))
            continue
        dims = _dims(vi)
        for ax, d in enumerate(dims):
            if d is None or (isinstance(d, int) and d <= 0) or (isinstance(d, str) and d not in batch):
                problems.append(Problem("shape", f"tensor {vi.name}",
                                        f"axis {ax} is {d!r}: only the batch axis may be dynamic (shape {dims})"))
    for i in g.initializer:
        if i.data_type not in TRT_DTYPES and i.data_type != _TP.DOUBLE:
            problems.append(Problem("dtype", f"initializer {i.name}",
                                    f"data type {_TP.DataType.Name(i.data_type)} is not a TensorRT type"))
        elif i.data_type == _TP.DOUBLE:
            problems.append(Problem("dtype", f"initializer {i.name}", "double is only cast down to float by TensorRT"))
    return problems


def assert_tensorrt_compatible(path: str | Path) -> None:
    """Raise :class:`TensorRTCompatibilityError` naming every problem of :func:`check_tensorrt_compat`."""
    problems = check_tensorrt_compat(path)
    if problems:
        raise TensorRTCompatibilityError(path, problems)
