"""INT8 accuracy gate: keep the most sensitive nodes in float until streaming MPJPE on
validation motion is within a tolerance of FP32, and the acceleration error of every sequence
within a ratio of FP32's.

Procedure (``accuracy_gate``):
1. rank every Gemm/MatMul of both step models by its one-node sensitivity
   (:func:`posert.calibration.quantize.node_sensitivity`, mm of output change);
2. quantise all of them and score; while |MPJPE_int8 − MPJPE_fp32| (lifter and refined, every
   protocol, the largest) exceeds ``tol_mm`` or a sequence's acceleration error exceeds FP32's by
   more than ``accel_tol`` (a quantised model can keep its MPJPE and still jitter from frame to
   frame, most visibly on slow motion), keep the top 1, 2, 4, 8 … nodes in float;
3. once a count passes, bisect between it and the last failing count for the fewest float nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from posert.calibration.quantize import quantize_int8

GATE_PROTOCOLS = ("none", "detector", "occlusion")


def streaming_mpjpe(lifter_onnx: Path, denoiser_onnx: Path, window: int, schedule, cnd, sequences: dict,
                    cameras: list, threads: int | None = None,
                    protocols: tuple[str, ...] = GATE_PROTOCOLS) -> dict[str, float]:
    """Overall MPJPE (mm) and acceleration error (mm/frame²) of the lifter and of the refined
    output when ``sequences`` are streamed through an ONNX Runtime pipeline of the two given step
    models, exactly as ``posert eval --noise P`` does (same seed), for each 2D protocol P. Keys:
    ``lifter`` and ``refined`` for ground-truth 2D ("none"), ``lifter/P`` and ``refined/P`` for
    the others. The acceleration errors are per sequence, under the same keys prefixed
    ``accel:`` and suffixed ``@sequence``: quantisation adds a jitter floor of its own, the same
    on any motion, so it shows on the slowest sequence first (on the validation motion, climb
    seq_4: 0.52 → 0.75 mm/frame² where the overall figure moved 2.58 → 2.71)."""
    from posert.data.dataset import NoiseModel, OcclusionModel
    from posert.evaluate import score, stream_sequences
    from posert.runtime import Pipeline
    from posert.runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend(lifter_onnx, denoiser_onnx, window, schedule, threads, cnd)
    out = {}
    for proto in protocols:
        noise = {"none": None, "detector": NoiseModel(), "occlusion": OcclusionModel()}[proto]
        with Pipeline(backend=backend, max_streams=len(sequences) * len(cameras), correction="off") as pipe:
            results, _ = stream_sequences(pipe, sequences, cameras, noise, seed=0, progress=False)
        report = score(results)
        suffix = "" if proto == "none" else f"/{proto}"
        for kind in ("lifter", "refined"):
            out[f"{kind}{suffix}"] = report["overall"][kind]["mpjpe"]
            for name, seq in report["sequences"].items():
                out[f"accel:{kind}{suffix}@{name}"] = seq[kind]["accel"]
    return out


def gate_deltas(got: dict[str, float], ref: dict[str, float]) -> tuple[float, float]:
    """(the largest |MPJPE difference| in mm, the largest relative excess of an acceleration error
    over FP32's: max(accel / accel_fp32) − 1) of a score against the FP32 one."""
    mm = max(abs(got[k] - ref[k]) for k in ref if not k.startswith("accel:"))
    accel = max((got[k] / ref[k] - 1.0 for k in ref if k.startswith("accel:")), default=0.0)
    return mm, accel


def accuracy_gate(models: dict[str, dict], score: Callable[[dict[str, Path]], dict[str, float]], workdir: Path,
                  tol_mm: float = 1.0, log: Callable[[str], None] = print, accel_tol: float = 0.10) -> dict:
    """Choose the nodes to keep in float.

    Args:
        models: ``{"lifter": {...}, "denoiser": {...}}``, each with ``path`` (pre-processed FP32
            step model), ``calibration_cache`` (MinMax ranges) and ``sensitivity`` ({node: mm}).
        score: maps ``{"lifter": onnx, "denoiser": onnx}`` to ``{"lifter": mm, "refined": mm, …}``;
            the gate holds every key (e.g. each 2D protocol of :func:`streaming_mpjpe`) within
            ``tol_mm`` of FP32, and every ``accel:`` key within ``accel_tol`` of FP32's.
        tol_mm: the MPJPE gate, mm (1 by default).
        accel_tol: the acceleration gate, a ratio (0.10: at most 10 % above FP32's).
    Returns a report: ``fp32`` and ``int8`` scores, ``delta_mm``, ``accel_excess``,
    ``kept_float`` ({model: [nodes]}), ``paths`` of the chosen INT8 models, ``trials`` and
    ``passed``.
    Raises RuntimeError if even all-float fails the gate (the scorer is not deterministic).
    """
    workdir = Path(workdir)
    ranked = sorted(((s, name, node) for name, m in models.items() for node, s in m["sensitivity"].items()),
                    reverse=True)
    ref = score({name: Path(m["path"]) for name, m in models.items()})
    log(f"fp32: lifter {ref['lifter']:.2f} mm, refined {ref['refined']:.2f} mm")
    trials: dict[int, dict] = {}

    def trial(k: int) -> dict:
        keep = {name: [node for _, n, node in ranked[:k] if n == name] for name in models}
        paths = {name: quantize_int8(m["path"], workdir / f"{name}_step.int8.k{k}.onnx", None,
                                     m["calibration_cache"], nodes_to_exclude=keep[name])
                 for name, m in models.items()}
        got = score(paths)
        delta, excess = gate_deltas(got, ref)
        trials[k] = {"float_nodes": k, "int8": got, "delta_mm": delta, "accel_excess": excess, "kept_float": keep,
                     "paths": paths, "passes": delta <= tol_mm and excess <= accel_tol}
        log(f"{k:3d} nodes kept in float: lifter {got['lifter']:.2f}, refined {got['refined']:.2f}, "
            f"|Δ| {delta:.2f} mm, worst sequence's acceleration error {excess:+.1%} of FP32's")
        return trials[k]

    n, last_fail, k = len(ranked), None, 0
    while True:
        if trial(k)["passes"]:
            break
        if k >= n:
            raise RuntimeError("the all-float model fails the gate: the score is not reproducible")
        last_fail, k = k, min(n, max(1, 2 * k))
    best = k
    lo = last_fail
    while lo is not None and best - lo > 1:  # fewest float nodes that pass
        mid = (lo + best) // 2
        if trial(mid)["passes"]:
            best = mid
        else:
            lo = mid
    chosen = trials[best]
    return {"fp32": ref, "int8": chosen["int8"], "delta_mm": chosen["delta_mm"], "tol_mm": tol_mm,
            "accel_excess": chosen["accel_excess"], "accel_tol": accel_tol,
            "kept_float": chosen["kept_float"], "paths": {k2: str(p) for k2, p in chosen["paths"].items()},
            "quantized_nodes": {name: len(m["sensitivity"]) - len(chosen["kept_float"][name])
                                for name, m in models.items()},
            "passed": chosen["passes"],
            "trials": [{k2: v for k2, v in t.items() if k2 != "paths"} for _, t in sorted(trials.items())]}
