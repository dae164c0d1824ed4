"""Export the lifter and one denoiser step to ONNX (dynamo exporter, opset 17, dynamic batch,
fixed window N) and verify ONNX Runtime against torch.

The denoiser is exported as one step g(inp, x_t, t) → ê: the runtime loops over the K DDIM steps
and applies the fused update kernel; ``export_refiner_unrolled`` exports all K steps in one graph
for comparison.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import torch

from posert.models.denoiser import Denoiser, Refiner
from posert.models.lifter import Lifter

OPSET = 17
MAX_BATCH = 4096


def _export(module: torch.nn.Module, args: tuple, names: list[str], out_names: list[str], path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dyn = {n: {0: batch} for n in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    prog = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=names,
                             output_names=out_names, dynamic_shapes=dyn, external_data=False, verbose=False)
    prog.save(str(path))
    onnx.checker.check_model(str(path))
    return path


def export_lifter(model: Lifter, path: str | Path) -> Path:
    """Write the lifter as ONNX: input ``inp`` (B, N, 17, 3) → ``pose`` (B, N, 17, 3) metres."""
    x = torch.zeros(2, model.window, 17, 3)
    return _export(model.eval(), (x,), ["inp"], ["pose"], Path(path))


def export_denoiser_step(model: Denoiser, path: str | Path) -> Path:
    """Write one denoiser step as ONNX: ``inp`` (B, N, 17, 3), ``x_t`` (B, N, 17, 3),
    ``t`` (B,) float32 → ``e_hat`` (B, N, 17, 3) metres."""
    # distinct example tensors: the exporter must not alias inputs that happen to be one object
    inp, x_t = torch.zeros(2, model.window, 17, 3), torch.ones(2, model.window, 17, 3)
    t = torch.full((2,), 50.0)
    return _export(model.eval(), (inp, x_t, t), ["inp", "x_t", "t"], ["e_hat"], Path(path))


def export_refiner_unrolled(model: Denoiser, path: str | Path) -> Path:
    """Write all K DDIM steps as one ONNX graph: ``inp``, ``x_T`` → ``refined`` (B, N, 17, 3)."""
    inp, x_T = torch.zeros(2, model.window, 17, 3), torch.ones(2, model.window, 17, 3)
    return _export(Refiner(model).eval(), (inp, x_T), ["inp", "x_T"], ["refined"], Path(path))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def max_abs_error_vs_torch(onnx_path: str | Path, module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> float:
    """Max |ORT − torch| over the first output, for named float32 inputs (e.g. real windows)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)[0]
    with torch.no_grad():
        ref = module(*[torch.from_numpy(v) for v in inputs.values()]).numpy()
    return float(np.abs(got - ref).max())


def cached_onnx(lifter_ckpt: str | Path | None = None, refiner_ckpt: str | Path | None = None,
                cache: str | Path | None = None) -> tuple[Path, Path]:
    """ONNX files of the given (default: committed) checkpoints, exported once and cached under
    ``<cache>/onnx/<sha256 of the checkpoints>/``. Returns (lifter.onnx, denoiser_step.onnx)."""
    from posert.data.sources import cache_dir
    from posert.models.io import default_checkpoint_dir, load_lifter, load_refiner

    lp = Path(lifter_ckpt) if lifter_ckpt else default_checkpoint_dir() / "lifter.pt"
    rp = Path(refiner_ckpt) if refiner_ckpt else default_checkpoint_dir() / "refiner.pt"
    for p in (lp, rp):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint not found: {p}")
    key = hashlib.sha256((file_sha256(lp) + file_sha256(rp) + torch.__version__).encode()).hexdigest()[:16]
    folder = Path(cache or cache_dir()) / "onnx" / key
    lifter_onnx, den_onnx = folder / "lifter.onnx", folder / "denoiser_step.onnx"
    if not lifter_onnx.exists():
        export_lifter(load_lifter(lp), lifter_onnx.with_suffix(".tmp"))
        lifter_onnx.with_suffix(".tmp").rename(lifter_onnx)
    if not den_onnx.exists():
        export_denoiser_step(load_refiner(rp)[0], den_onnx.with_suffix(".tmp"))
        den_onnx.with_suffix(".tmp").rename(den_onnx)
    return lifter_onnx, den_onnx
