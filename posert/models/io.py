"""Saving and loading checkpoints; where the default (committed) weights live."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from posert.models.denoiser import Denoiser, DenoiserConfig
from posert.models.diffusion import CND
from posert.models.lifter import Lifter, LifterConfig


def default_checkpoint_dir() -> Path:
    """``$POSERT_CHECKPOINTS`` or the repository's ``checkpoints/`` folder."""
    env = os.environ.get("POSERT_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "checkpoints"


def _load(path: str | Path | None, name: str, kind: str) -> dict:
    path = Path(path) if path else default_checkpoint_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{kind} checkpoint not found: {path} (train one with `posert train {kind}`)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("kind") != kind:
        raise ValueError(f"{path} holds a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return ckpt


def save_lifter(model: Lifter, path: str | Path, meta: dict | None = None) -> None:
    torch.save({"kind": "lifter", "config": model.config_dict(), "state_dict": model.state_dict(),
                "meta": meta or {}}, path)


def load_lifter(path: str | Path | None = None) -> Lifter:
    """Load a lifter (default: ``checkpoints/lifter.pt``) in eval mode.

    Raises FileNotFoundError if missing, ValueError if the file holds another kind of model.
    """
    ckpt = _load(path, "lifter.pt", "lifter")
    model = Lifter(LifterConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def save_refiner(model: Denoiser, cnd: CND, path: str | Path, meta: dict | None = None) -> None:
    torch.save({"kind": "refiner", "config": model.config_dict(), "state_dict": model.state_dict(),
                "cnd": cnd.state_dict(), "meta": meta or {}}, path)


def load_refiner(path: str | Path | None = None) -> tuple[Denoiser, CND]:
    """Load the denoiser and its CND (default: ``checkpoints/refiner.pt``), eval mode."""
    ckpt = _load(path, "refiner.pt", "refiner")
    model = Denoiser(DenoiserConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), CND.from_state(ckpt["cnd"])
