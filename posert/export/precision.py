"""The step models at a given precision: FP32 (exported), FP16 (converted on first use) and INT8
(built by ``posert build --precision int8``), all in the checkpoints' ONNX cache folder."""

from __future__ import annotations

from pathlib import Path

from posert.export.fp16 import convert_fp16
from posert.export.onnx import cached_onnx, record_sha256, stale, verified

PRECISIONS = ("fp32", "fp16", "int8")


def precision_onnx(precision: str = "fp32", lifter: str | None = None, refiner: str | None = None,
                   cache: str | Path | None = None) -> tuple[Path, Path]:
    """(lifter_step, denoiser_step) ONNX paths of the given (default: committed) checkpoints.

    Every file is checked against the checksum recorded when it was written: FP32 and FP16 files
    that fail are made again; INT8 ones need ``posert build``.

    Raises ValueError for an unknown precision or a corrupt INT8 model, and FileNotFoundError for
    INT8 models that have not been built yet (they need calibration data and the accuracy gate:
    ``posert build``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    paths = cached_onnx(lifter, refiner, cache)
    if precision == "fp32":
        return paths
    out = tuple(p.with_name(p.stem + f".{precision}.onnx") for p in paths)
    if precision == "fp16":
        for src, dst in zip(paths, out):
            if stale(dst):
                convert_fp16(src, dst.with_suffix(".tmp")).replace(dst)
                record_sha256(dst)
        return out
    missing = [p for p in out if not p.exists()]
    if missing:
        raise FileNotFoundError(f"INT8 models not built yet ({missing[0]}); run `posert build --precision int8`")
    corrupt = [p for p in out if not verified(p)]
    if corrupt:
        raise ValueError(f"{corrupt[0]} does not match the checksum recorded when it was built (corrupt); rebuild it "
                         "with `posert build --precision int8 --force`")
    return out
