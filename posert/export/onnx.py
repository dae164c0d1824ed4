"""Export the streaming step models to ONNX (dynamo exporter, opset 17, dynamic batch) and verify
ONNX Runtime against torch.

The runtime runs one frame per tick (docs/design.md): the lifter step and one denoiser step
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
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from posert.models.blocks import PoseSequenceModel
from posert.models.denoiser import Denoiser, timestep_embedding
from posert.models.io import file_sha256
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


class StepSegment(torch.nn.Module):
    """Piece ``index`` (0 … 2L) of ``model.step`` cut at its 2L attention cores (a spatial and a
    temporal one per block).

    The ONNX Runtime CPU backend runs the dense layers as these 2L + 1 graphs and the cores
    between them in C++: ``posert._C.spatial_attention`` after every even piece and
    ``posert._C.cached_attention`` (with the block's key/value ring cache) after every odd one
    (csrc/attention.h). Every piece but the first sees only per-token operations, so its tensors
    are 2-D (N = B·17 tokens, joint-minor) and the cuts cost no reshape. Shapes (C channels):

    - piece 0: ``inp`` (B, 17, 3) [denoiser: ``x_t`` (B, 17, 3), ``t`` (B,)] → ``x`` (N, C)
      block 0's input, ``qkv`` (N, 3C) its spatial qkv [denoiser: and ``cond`` (N, C), the
      timestep embedding of each token's stream, added before every block];
    - piece 2i + 1: ``x_prev`` (block i's input), ``a_prev`` (its spatial core's output) →
      ``x`` the residual stream after the spatial layer, ``qkv`` the temporal qkv;
    - piece 2i + 2 < 2L: ``x_prev``, ``a_prev`` (the temporal core's output) [``cond``] →
      block i + 1's input and spatial qkv;
    - piece 2L: ``x_prev``, ``a_prev`` → ``pose`` / ``e_hat`` (B, 17, 3) metres, root-relative.

    Composed with the cores this is :meth:`PoseSequenceModel.step`, layer for layer.
    """

    def __init__(self, model: PoseSequenceModel, index: int):
        super().__init__()
        if not 0 <= index <= 2 * len(model.backbone.blocks):
            raise ValueError(f"piece {index} out of range 0 … {2 * len(model.backbone.blocks)}")
        self.model, self.index = model, index
        self.denoiser = isinstance(model, Denoiser)

    def forward(self, *args):
        m, k = self.model, self.index
        bb, L, C = m.backbone, len(m.backbone.blocks), m.cfg.dim
        if k == 0:
            inp = args[0]
            B, J, _ = inp.shape
            cond = None
            if self.denoiser:
                x_t, t = args[1], args[2]
                h = m.embed(torch.cat([x_t, inp], dim=-1).reshape(B * J, -1))
                cond = m.t_mlp(timestep_embedding(t, C))[:, None, :].expand(B, J, C).reshape(B * J, C)
            else:
                h = m.embed(inp.reshape(B * J, -1))
            x = (h.reshape(B, J, C) + bb.joint_pos[0]).reshape(B * J, C)
            if cond is not None:
                x = x + cond
            outs = (x, bb.blocks[0].spatial_qkv(x))
            return outs + (cond,) if cond is not None else outs
        x, a = args[0], args[1]
        i = (k - 1) // 2
        if k % 2:  # after block i's spatial core
            s = bb.blocks[i].post_spatial(x, a)
            return s, bb.blocks[i].t_attn.qkv(bb.blocks[i].t_norm1(s))
        x = bb.blocks[i].post_attention(x, a)  # after block i's temporal core
        if k == 2 * L:
            return m.decode(bb.norm(x))
        if self.denoiser:
            x = x + args[2]
        return x, bb.blocks[i + 1].spatial_qkv(x)


def segment_io_names(model: PoseSequenceModel, index: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of :class:`StepSegment` ``index``."""
    L, den = len(model.backbone.blocks), isinstance(model, Denoiser)
    if index == 0:
        return (["inp", "x_t", "t"] if den else ["inp"]), (["x", "qkv", "cond"] if den else ["x", "qkv"])
    if index == 2 * L:
        return ["x_prev", "a_prev"], ["e_hat" if den else "pose"]
    cond = den and index % 2 == 0
    return ["x_prev", "a_prev"] + (["cond"] if cond else []), ["x", "qkv"]


def export_split_step(model: PoseSequenceModel, folder: str | Path) -> Path:
    """Write ``model.step`` (causal) as 2L + 1 :class:`StepSegment` graphs ``segment_{i}.onnx``
    (dynamo exporter, opset 17, dynamic batch) and ``attention.npz`` with what the cores need:
    ``tables`` (L, heads, M + 2) float32 bias by lag (:meth:`TemporalAttention.bias_table`),
    ``scale`` (the query scale of every core), ``heads``, ``pieces`` (2L + 1), ``kind``
    ("lifter" | "denoiser"). Returns ``folder``.
    Raises ValueError for an offline model."""
    if not model.causal:
        raise ValueError("only causal models stream incrementally; export an offline model's forward instead")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    ex = example_step_inputs(model)
    B, J, C = ex["inp"].shape[0], ex["inp"].shape[1], model.cfg.dim
    L = len(model.backbone.blocks)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    g = torch.Generator().manual_seed(1)
    tokens = torch.export.Dim("tokens", min=1, max=MAX_BATCH * J)
    for i in range(2 * L + 1):
        ins, outs = segment_io_names(model, i)
        if i == 0:
            args, dim = tuple(ex[n] for n in ins), batch
        else:
            args, dim = tuple(torch.randn(B * J, C, generator=g) for _ in ins), tokens
        prog = torch.onnx.export(StepSegment(model, i).eval(), args, dynamo=True, opset_version=OPSET,
                                 input_names=ins, output_names=outs,
                                 dynamic_shapes=(tuple({0: dim} for _ in ins),), external_data=False,
                                 verbose=False)
        prog.save(str(folder / f"segment_{i}.onnx"))
        onnx.checker.check_model(str(folder / f"segment_{i}.onnx"))
    with torch.no_grad():
        tables = torch.stack([b.t_attn.bias_table() for b in model.backbone.blocks]).numpy().astype(np.float32)
    np.savez(folder / "attention.npz", tables=tables, scale=np.float32(model.backbone.blocks[0].t_attn.scale),
             heads=np.int64(model.cfg.heads), pieces=np.int64(2 * L + 1),
             kind=np.array("denoiser" if isinstance(model, Denoiser) else "lifter"))
    return folder


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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    if path.is_dir():
        parts = [f"{f.name}:{file_sha256(f)}" for f in sorted(path.iterdir()) if f.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return file_sha256(path)


def record_sha256(path: str | Path) -> Path:
    """Write ``<path>.sha256`` beside a cached model file (or split-model folder): the checksum that
    :func:`verified` holds it to. Returns ``path``."""
    path = Path(path)
    tmp = _sidecar(path).with_suffix(".tmp")
    tmp.write_text(_content_sha256(path) + "\n")
    tmp.replace(_sidecar(path))
    return path


def verified(path: str | Path) -> bool:
    """Whether a cached model file (or folder) exists and equals the checksum recorded when it was
    written (False for a missing, corrupt or unrecorded one)."""
    path, side = Path(path), _sidecar(Path(path))
    if not (path.exists() and side.is_file()):
        return False
    try:
        return side.read_text().strip() == _content_sha256(path)
    except OSError:
        return False


def stale(path: Path) -> bool:
    """Whether a cache entry must be (re)written: missing, or present but not as recorded (warned)."""
    if verified(path):
        return False
    if path.exists():
        warnings.warn(f"{path} does not match its recorded checksum (corrupt or unrecorded): re-creating it",
                      stacklevel=3)
    return True


def cached_onnx(lifter_ckpt: str | Path | None = None, refiner_ckpt: str | Path | None = None,
                cache: str | Path | None = None) -> tuple[Path, Path]:
    """ONNX files of the given (default: committed) checkpoints, exported once and cached under
    ``<cache>/onnx/<sha256 of the checkpoints, torch version and export code>/``, each with the
    checksum it was written with (:func:`record_sha256`): a corrupt file is exported again.
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
    for dst, load in ((lifter_onnx, lambda: load_lifter(lp)), (den_onnx, lambda: load_refiner(rp)[0])):
        if stale(dst):
            export_step(load(), dst.with_suffix(".tmp"))
            dst.with_suffix(".tmp").replace(dst)
            record_sha256(dst)
    return lifter_onnx, den_onnx


def cached_split_onnx(lifter_ckpt: str | Path | None = None, refiner_ckpt: str | Path | None = None,
                      cache: str | Path | None = None) -> tuple[Path, Path]:
    """Split step models (:func:`export_split_step`) of the given (default: committed)
    checkpoints, exported once into the folder of :func:`cached_onnx` (same cache key).
    Returns (lifter_step.split/, denoiser_step.split/) folders, checksummed as :func:`cached_onnx`'s files."""
    import shutil

    from posert.models.io import default_checkpoint_dir, load_lifter, load_refiner

    lifter_onnx, _ = cached_onnx(lifter_ckpt, refiner_ckpt, cache)
    folder = lifter_onnx.parent
    lp = Path(lifter_ckpt) if lifter_ckpt else default_checkpoint_dir() / "lifter.pt"
    rp = Path(refiner_ckpt) if refiner_ckpt else default_checkpoint_dir() / "refiner.pt"
    out = folder / "lifter_step.split", folder / "denoiser_step.split"
    for dst, load in zip(out, (lambda: load_lifter(lp), lambda: load_refiner(rp)[0])):
        if stale(dst):
            tmp = dst.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            export_split_step(load(), tmp)
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
            record_sha256(dst)
    return out
