"""Saving and loading checkpoints; where the default (committed) weights live.

A checkpoint is read with ``torch.load(weights_only=True)``: its unpickler rebuilds tensors and
plain containers only, so a crafted file cannot run code (older checkpoints that hold NumPy arrays
load through the same unpickler, with NumPy's array types allowed and nothing else). Every
checkpoint that posert writes carries the SHA-256 of its contents (``content_sha256``), checked
on load, so flipped bits in the weights are caught; the committed ``checkpoints/`` are also
listed with the SHA-256 of their files in ``checkpoints/SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from posert.models.denoiser import Denoiser, DenoiserConfig
from posert.models.diffusion import CND
from posert.models.lifter import Lifter, LifterConfig


class CheckpointError(ValueError):
    """A file is not a posert checkpoint of the expected kind, is corrupt, or fails its checksum."""


def default_checkpoint_dir() -> Path:
    """``$POSERT_CHECKPOINTS`` or the repository's ``checkpoints/`` folder."""
    env = os.environ.get("POSERT_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "checkpoints"


def _committed_sums() -> dict[str, str]:
    """{file name: sha256} of the committed checkpoints (``checkpoints/SHA256SUMS``)."""
    path = Path(__file__).resolve().parents[2] / "checkpoints" / "SHA256SUMS"
    if not path.exists():
        return {}
    return {name: digest for digest, name in (line.split() for line in path.read_text().splitlines() if line.strip())}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(ckpt: dict) -> str:
    """SHA-256 of a checkpoint's contents: every tensor and array (name, dtype, shape, bytes) and the
    config, in a canonical order; independent of how the file was pickled."""
    h = hashlib.sha256()

    def feed(name: str, value) -> None:
        if isinstance(value, dict):
            for k in sorted(value, key=str):
                feed(f"{name}/{k}", value[k])
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            h.update(f"{name}:{a.dtype}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(f"{name}={value!r}".encode())

    for key in ("kind", "config", "state_dict", "cnd"):
        if key in ckpt:
            feed(key, ckpt[key])
    return h.hexdigest()


def _numpy_globals() -> list:
    """The NumPy types an older checkpoint's arrays unpickle through (no callable beyond them)."""
    from numpy.core import multiarray

    out = [multiarray._reconstruct, np.ndarray, np.dtype]
    out += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return out


def _read(path: Path) -> dict:
    import re
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says it all
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                if "numpy" not in str(e):
                    raise
                with torch.serialization.safe_globals(_numpy_globals()):
                    return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = re.search(r"Unsupported (global|operand)[^.]*", str(e))
        why = f": {what.group(0)}" if what else ""
        raise CheckpointError(f"{path} is not a loadable posert checkpoint (refused by the safe unpickler: it holds "
                              f"more than tensors and plain data{why})") from None
    except Exception as e:  # noqa: BLE001 - the unpickler on arbitrary bytes raises anything (IndexError, KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a loadable posert checkpoint (corrupt, truncated or not a torch file: "
                              f"{first})") from None


def _load(path: str | Path | None, name: str, kind: str) -> dict:
    path = Path(path) if path else default_checkpoint_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{kind} checkpoint not found: {path} (train one with `posert train {kind}`)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a {kind} checkpoint")
    committed = _committed_sums()
    if path.resolve().parent == (Path(__file__).resolve().parents[2] / "checkpoints") and path.name in committed:
        if file_sha256(path) != committed[path.name]:
            raise CheckpointError(f"{path} does not match its recorded SHA-256 (checkpoints/SHA256SUMS): corrupt or "
                                  "modified; restore it with `git checkout -- checkpoints/`")
    ckpt = _read(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in ("lifter", "refiner"):
        raise CheckpointError(f"{path} is not a posert checkpoint")
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']!r} checkpoint, expected {kind!r}")
    recorded = ckpt.get("content_sha256")
    if recorded is not None and recorded != content_sha256(ckpt):
        raise CheckpointError(f"{path}: its weights do not match the checksum recorded when it was saved (corrupt)")
    for key in ("config", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: no {key} in the checkpoint")
    return ckpt


def _save(ckpt: dict, path: str | Path) -> None:
    ckpt["content_sha256"] = content_sha256(ckpt)
    torch.save(ckpt, path)


def save_lifter(model: Lifter, path: str | Path, meta: dict | None = None) -> None:
    """Write a lifter checkpoint (config, weights, ``meta``, and the contents' SHA-256)."""
    _save({"kind": "lifter", "config": model.config_dict(), "state_dict": model.state_dict(), "meta": meta or {}},
          path)


def _model(cls, cfg_cls, ckpt: dict, path):
    try:
        model = cls(cfg_cls(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: the weights do not fit the model its config describes ({first})") from None
    return model.eval()


def load_lifter(path: str | Path | None = None) -> Lifter:
    """Load a lifter (default: ``checkpoints/lifter.pt``) in eval mode.

    Raises FileNotFoundError if missing, CheckpointError (a ValueError) if the file is not a lifter
    checkpoint, is corrupt or fails its checksum.
    """
    return _model(Lifter, LifterConfig, _load(path, "lifter.pt", "lifter"), path)


def save_refiner(model: Denoiser, cnd: CND, path: str | Path, meta: dict | None = None) -> None:
    """Write a refiner checkpoint: the denoiser, its CND (arrays as tensors), ``meta``, the SHA-256."""
    cnd_state = {k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
                 for k, v in cnd.state_dict().items()}
    _save({"kind": "refiner", "config": model.config_dict(), "state_dict": model.state_dict(), "cnd": cnd_state,
           "meta": meta or {}}, path)


def load_refiner(path: str | Path | None = None) -> tuple[Denoiser, CND]:
    """Load the denoiser and its CND (default: ``checkpoints/refiner.pt``), eval mode. Raises as
    :func:`load_lifter`."""
    ckpt = _load(path, "refiner.pt", "refiner")
    state = ckpt.get("cnd")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a refiner checkpoint without its CND")
    try:
        cnd = CND.from_state({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()})
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its CND is malformed ({e})") from None
    return _model(Denoiser, DenoiserConfig, ckpt, path), cnd
