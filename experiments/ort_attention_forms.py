"""Single-op ONNX Runtime timings behind the cached temporal attention step at batch B (issue 5):
what each way of writing q·Kᵀ and p·V costs on this CPU, and ORT's fused
``com.microsoft.MultiHeadAttention`` with past_key/past_value against the MatMul form the step
models use. One thread, as the runtime runs. Prints a Markdown table for RESULTS.md.

    .venv/bin/python experiments/ort_attention_forms.py [--batch 16] [--span 7]

Shapes are those of the default lifter (17 joints, 4 heads of 16 channels, span M = 7).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as oh

from posert.runtime.backends.onnxruntime import session_options

J, HEADS, D = 17, 4, 16


def _session(nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], outputs=("out",)):
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
                      [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                      initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
    m.ir_version = 9
    return ort.InferenceSession(m.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])


def time_us(sess, feeds: dict[str, np.ndarray], reps: int = 500) -> tuple[float, np.ndarray]:
    """Median µs of ``sess.run`` (after 50 warm-up runs) and its first output."""
    for _ in range(50):
        out = sess.run(None, feeds)[0]
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--span", type=int, default=7, help="M, cached frames per layer")
    args = ap.parse_args()
    B, M = args.batch, args.span
    r = np.random.default_rng(0)
    K = r.standard_normal((B, J, HEADS, M, D)).astype(np.float32)
    q, k, v = (r.standard_normal((B, J, HEADS, 1, D)).astype(np.float32) for _ in range(3))
    p = r.random((B, J, HEADS, M, 1), np.float32)
    ax = {"ax": np.array([-1], np.int64)}
    rows = [
        ("Mul, same shape (B, 17, 4, M, 16)", [oh.make_node("Mul", ["a", "b"], ["out"])], {"a": K, "b": K + 1}, {}),
        ("Mul, q broadcast over M", [oh.make_node("Mul", ["a", "b"], ["out"])], {"a": K, "b": q}, {}),
        ("Mul, p broadcast over d", [oh.make_node("Mul", ["a", "b"], ["out"])], {"a": K, "b": p}, {}),
        ("ReduceSum over d", [oh.make_node("ReduceSum", ["a", "ax"], ["out"], keepdims=0)], {"a": K}, ax),
        ("ReduceSum over M", [oh.make_node("ReduceSum", ["a", "ax"], ["out"], keepdims=0)], {"a": K},
         {"ax": np.array([-2], np.int64)}),
        ("q·Kᵀ batched MatMul (FusedMatMul, transB)",
         [oh.make_node("FusedMatMul", ["a", "b"], ["out"], domain="com.microsoft", transB=1)], {"a": q, "b": K}, {}),
        ("MatMul (B·17·4·M, 16) · ones(16, 1)", [oh.make_node("MatMul", ["a", "o"], ["out"])],
         {"a": K.reshape(-1, D)}, {"o": np.ones((D, 1), np.float32)}),
        ("Softmax over (B, 17, 4, 1, M + 1)", [oh.make_node("Softmax", ["a"], ["out"], axis=-1)],
         {"a": r.random((B, J, HEADS, 1, M + 1), np.float32)}, {}),
    ]
    print(f"ONNX Runtime {ort.__version__}, 1 thread, batch {B}, span M = {M}\n")
    print("| operation | µs |\n|---|---|")
    for name, nodes, feeds, inits in rows:
        print(f"| {name} | {time_us(_session(nodes, feeds, inits), feeds)[0]:.0f} |")

    # The attention core of one cached step: the step models' MatMul form against ORT's fused op.
    bias = r.standard_normal((B, 1, HEADS, 1, M)).astype(np.float32)
    matmul_form = _session([
        oh.make_node("Mul", ["q", "scale"], ["qs"]),
        oh.make_node("FusedMatMul", ["qs", "ck"], ["past0"], domain="com.microsoft", transB=1),
        oh.make_node("Add", ["past0", "bias"], ["past"]),
        oh.make_node("Mul", ["qs", "k"], ["qk"]),
        oh.make_node("ReduceSum", ["qk", "ax"], ["own"], keepdims=1),
        oh.make_node("Concat", ["own", "past"], ["cat"], axis=-1),
        oh.make_node("Softmax", ["cat"], ["p"], axis=-1),
        oh.make_node("Split", ["p", "sizes"], ["p0", "p1"], axis=-1),
        oh.make_node("MatMul", ["p1", "cv"], ["o1"]),
        oh.make_node("Mul", ["p0", "v"], ["o0"]),
        oh.make_node("Add", ["o0", "o1"], ["out"])],
        {"q": q, "k": k, "v": v, "bias": bias, "ck": K, "cv": K[::-1].copy()},
        {"scale": np.array(D ** -0.5, np.float32), "sizes": np.array([1, M], np.int64), **ax})
    feeds = {"q": q, "k": k, "v": v, "bias": bias, "ck": K, "cv": K[::-1].copy()}
    t_mm, o_mm = time_us(matmul_form, feeds)
    BJ, C = B * J, HEADS * D
    mha_bias = np.concatenate([np.broadcast_to(bias, (B, J, HEADS, 1, M)), np.zeros((B, J, HEADS, 1, 1), np.float32)],
                              axis=-1).reshape(BJ, HEADS, 1, M + 1)
    mha = _session([oh.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "bias", "pk", "pv"],
                                 ["out", "present_k", "present_v"], domain="com.microsoft", num_heads=HEADS)],
                   {"q": q.reshape(BJ, 1, C), "k": k.reshape(BJ, 1, C), "v": v.reshape(BJ, 1, C),
                    "bias": np.ascontiguousarray(mha_bias), "pk": K.reshape(BJ, HEADS, M, D),
                    "pv": K[::-1].copy().reshape(BJ, HEADS, M, D)}, {}, outputs=("out", "present_k", "present_v"))
    t_mha, o_mha = time_us(mha, {"q": q.reshape(BJ, 1, C), "k": k.reshape(BJ, 1, C), "v": v.reshape(BJ, 1, C),
                                 "bias": np.ascontiguousarray(mha_bias), "pk": K.reshape(BJ, HEADS, M, D),
                                 "pv": K[::-1].copy().reshape(BJ, HEADS, M, D)})
    diff = float(np.abs(o_mm.reshape(BJ, C) - o_mha.reshape(BJ, C)).max())
    print(f"| attention core, MatMul form (the step models') | {t_mm:.0f} |")
    print(f"| attention core, com.microsoft.MultiHeadAttention with past_key/past_value (max diff {diff:.1e}) "
          f"| {t_mha:.0f} |")


if __name__ == "__main__":
    main()
