"""``posert build --precision int8``: calibration windows → recorded step inputs → Q/DQ models
→ per-node sensitivity → accuracy gate → ``lifter_step.int8.onnx``, ``denoiser_step.int8.onnx``
and ``int8_report.json`` next to the FP32 step models."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from posert.calibration.gate import accuracy_gate, streaming_mpjpe
from posert.calibration.quantize import node_sensitivity, preprocess, quantize_int8
from posert.calibration.windows import calibration_windows, record_step_inputs
from posert.export.onnx import record_sha256

INT8_REPORT = "int8_report.json"


def build_int8(fp32_paths: tuple[Path, Path], backend, train_sequences: dict, train_cameras: list,
               val_sequences: dict, val_cameras: list, n_windows: int = 256, tol_mm: float = 1.0, seed: int = 0,
               log=print) -> dict:
    """Build the gated INT8 step models next to ``fp32_paths`` (lifter, denoiser).

    Args:
        backend: the FP32 ONNX Runtime backend of the same models (records calibration inputs and
            provides window, schedule and CND for scoring).
        train_sequences / train_cameras: real training motion (mm, world) and cameras; the
            calibration windows come only from these.
        val_sequences / val_cameras: the validation motion the gate scores on (ground-truth 2D,
            detector noise, missing joints: every protocol within ``tol_mm``).
    Returns the report written to ``int8_report.json`` (see :func:`accuracy_gate`), plus the
    calibration set's description and the build time.
    """
    t0 = time.perf_counter()
    folder = Path(fp32_paths[0]).parent
    work = folder / "calib"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    windows = calibration_windows(train_sequences, train_cameras, n=n_windows, seed=seed)
    log(f"calibration: {len(windows)} windows of {len(windows[0].px)} frames from {len(train_sequences)} "
        "training sequences (ground truth, detector noise, missing joints)")
    feeds = dict(zip(("lifter", "denoiser"), record_step_inputs(backend, windows)))
    models = {}
    for name, fp32 in zip(("lifter", "denoiser"), fp32_paths):
        pre = preprocess(fp32, work / f"{name}_step.pre.onnx")
        cache = work / f"{name}.calibration.json"
        quantize_int8(pre, work / f"{name}_step.int8.all.onnx", feeds[name], cache)  # computes the ranges once
        log(f"{name}: sensitivity of {name} nodes ...")
        models[name] = {"path": pre, "calibration_cache": cache,
                        "sensitivity": node_sensitivity(pre, feeds[name], cache, work)}

    def score(paths):
        return streaming_mpjpe(paths["lifter"], paths["denoiser"], backend.window, backend.schedule, backend.cnd,
                               val_sequences, val_cameras)

    report = accuracy_gate(models, score, work, tol_mm, log)
    for name in ("lifter", "denoiser"):
        shutil.copyfile(report["paths"][name], folder / f"{name}_step.int8.onnx")
        record_sha256(folder / f"{name}_step.int8.onnx")
        report["paths"][name] = str(folder / f"{name}_step.int8.onnx")
    report.update(calibration={"windows": len(windows), "frames_per_window": len(windows[0].px), "seed": seed,
                               "lifter_feeds": len(feeds["lifter"]), "denoiser_feeds": len(feeds["denoiser"]),
                               "names": [w.name for w in windows[:8]]},
                  sensitivity_mm={name: dict(sorted(m["sensitivity"].items(), key=lambda kv: -kv[1]))
                                  for name, m in models.items()},
                  build_seconds=time.perf_counter() - t0)
    (folder / INT8_REPORT).write_text(json.dumps(report, indent=2))
    return report
