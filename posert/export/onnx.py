"""Export the streaming step models to ONNX (dynamo exporter, opset 17, dynamic batch) and verify
ONNX Runtime against torch.

The runtime runs one frame per tick (DESIGN.md, issue 5): the lifter step and one denoiser step
each take the new frame plus their key/value ring caches and return the new frame's output and its
keys/values. Every cache layer is its own graph input, so ONNX Runtime reads the pipeline's cache
storage in place (a contiguous (B, 17, heads, M, C/heads) block per layer) with no copy.

Inputs of ``lifter_step.onnx``: ``inp`` (B, 17, 3) normalised 2D + confidence, ``lag`` (B, M)
int64, ``cache_0 … cache_{2L−1}`` (B, 17, heads, M, C/heads). Outputs: ``pose`` (B, 17, 3)
metres, ``kv`` (2L, B, 17, heads, C/heads).
``denoiser_step.onnx`` adds ``x_t`` (B, 17, 3) and ``t`` (B,) after ``inp``; outputs ``e_hat``, ``kv``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import torch

from posert.models.blocks import PoseSequenceModel
from posert.models.denoiser import Denoiser
from posert.models.lifter import Lifter

OPSET = 17
MAX_BATCH = 4096


class _Step(torch.nn.Module):
    """``model.step`` as a module with a fixed argument list (what torch.export traces)."""

    def __init__(self, model: PoseSequenceModel):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model.step(*args)


def example_step_inputs(model: PoseSequenceModel, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Named example inputs of ``model.step`` with distinct values (the exporter must not alias
    inputs that happen to be one object) and a half-filled ring (some lags empty)."""
    g = torch.Generator().manual_seed(seed)
    G, J, h, M, d = model.cache_shape
    inp = torch.rand(batch, J, 3, generator=g)
    lag = ((torch.arange(M)[None].repeat(batch, 1) + torch.arange(batch)[:, None]) % (M + 2)).clamp(1, M + 1)
    out = {"inp": inp}
    if isinstance(model, Denoiser):
        out["x_t"] = torch.randn(batch, J, 3, generator=g) * 0.2
        out["t"] = torch.full((batch,), float(model.cfg.T))
    out["lag"] = lag.to(torch.int64)
    for i in range(G):
        out[f"cache_{i}"] = torch.randn(batch, J, h, M, d, generator=g)
    return out


def export_step(model: PoseSequenceModel, path: str | Path) -> Path:
    """Write ``model.step`` (a :class:`Lifter` or :class:`Denoiser`, causal) as ONNX; see the
    module docstring for names and shapes. Raises ValueError for an offline (non-causal) model."""
    if not model.causal:
        raise ValueError("only causal models stream incrementally; export an offline model's forward instead")
    path = Path(path)
    ex = example_step_inputs(model.eval())
    names = list(ex)
    out_names = ["pose" if isinstance(model, Lifter) else "e_hat", "kv"]
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dyn = tuple({0: batch} for _ in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    prog = torch.onnx.export(_Step(model).eval(), tuple(ex.values()), dynamo=True, opset_version=OPSET,
                             input_names=names, output_names=out_names, dynamic_shapes=(dyn,),
                             external_data=False, verbose=False)
    prog.save(str(path))
    onnx.checker.check_model(str(path))
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def max_abs_error_vs_torch(onnx_path: str | Path, model: PoseSequenceModel, inputs: dict[str, np.ndarray]) -> float:
    """Max |ORT − torch| over both outputs of a step model for named inputs (e.g. real frames)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)
    with torch.no_grad():
        ref = model.step(*[torch.from_numpy(v) for v in inputs.values()])
    return max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))


def _export_code_sha256() -> str:
    """sha256 of the source that decides an exported graph (models and this exporter): a change
    to either must never reuse an old export (an earlier cache key missed this and served a
    graph of an older attention form)."""
    import posert.models as models_pkg

    files = sorted(Path(models_pkg.__file__).parent.glob("*.py")) + [Path(__file__)]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def cached_onnx(lifter_ckpt: str | Path | None = None, refiner_ckpt: str | Path | None = None,
                cache: str | Path | None = None) -> tuple[Path, Path]:
    """ONNX files of the given (default: committed) checkpoints, exported once and cached under
    ``<cache>/onnx/<sha256 of the checkpoints, torch version and export code>/``.
    Returns (lifter_step.onnx, denoiser_step.onnx)."""
    from posert.data.sources import cache_dir
    from posert.models.io import default_checkpoint_dir, load_lifter, load_refiner

    lp = Path(lifter_ckpt) if lifter_ckpt else default_checkpoint_dir() / "lifter.pt"
    rp = Path(refiner_ckpt) if refiner_ckpt else default_checkpoint_dir() / "refiner.pt"
    for p in (lp, rp):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint not found: {p}")
    key = hashlib.sha256((file_sha256(lp) + file_sha256(rp) + torch.__version__ + _export_code_sha256()).encode())
    key = key.hexdigest()[:16]
    folder = Path(cache or cache_dir()) / "onnx" / key
    lifter_onnx, den_onnx = folder / "lifter_step.onnx", folder / "denoiser_step.onnx"
    if not lifter_onnx.exists():
        export_step(load_lifter(lp), lifter_onnx.with_suffix(".tmp"))
        lifter_onnx.with_suffix(".tmp").rename(lifter_onnx)
    if not den_onnx.exists():
        export_step(load_refiner(rp)[0], den_onnx.with_suffix(".tmp"))
        den_onnx.with_suffix(".tmp").rename(den_onnx)
    return lifter_onnx, den_onnx
