"""``posert data``: fetch every source, convert, and write the dataset, its manifest and the
validation motion file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posert.data.dataset import VALIDATION, load_positions, save_positions, split
from posert.data.sources import MODEL_FPS, SOURCES, cache_dir, h36m_camera_file
from posert.skeleton import JOINT_NAMES

DATASET_NAME = "data_3d_posert.npz"
VAL_MOTION_NAME = "val_motion.npz"


def dataset_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / DATASET_NAME


def build_dataset(root: Path | None = None, force: bool = False) -> Path:
    """Fetch and convert all sources (cached); write ``data_3d_posert.npz``, ``sources.json``
    and ``val_motion.npz`` (validation sequences, the ``posert eval --motion`` format) to ``root``.

    Returns the dataset path. Raises RuntimeError if a download fails.
    """
    root = root or cache_dir()
    out = dataset_path(root)
    if out.exists() and not force:
        return out
    h36m_camera_file(root)
    positions: dict[str, dict[str, np.ndarray]] = {}
    manifest = {"fps": MODEL_FPS, "units": "mm", "frame": "world, z-up", "joints": list(JOINT_NAMES),
                "validation": [f"{s}/{a}" for s, a in VALIDATION], "sources": []}
    for src in tqdm(SOURCES, desc="posert data: sources", unit="source"):
        seqs = src.load(root)
        positions[src.subject] = seqs
        manifest["sources"].append({
            "subject": src.subject, "description": src.description, "licence": src.licence,
            "origin": src.origin, "frames": {k: int(len(v)) for k, v in seqs.items()}})
    save_positions(out, positions, MODEL_FPS)
    manifest["total_frames"] = int(sum(len(v) for s in positions.values() for v in s.values()))
    (root / "sources.json").write_text(json.dumps(manifest, indent=2))
    _, val = split(load_positions(out))
    np.savez_compressed(root / VAL_MOTION_NAME, **{k.replace("/", "_"): v for k, v in val.items()})
    return out


def training_sequences(holdout: str | None = None) -> dict[str, np.ndarray]:
    """The training sequences ``{"subject/action": (T, 17, 3) mm}`` of the dataset (built on first
    use); ``holdout`` drops a whole source (leave-one-source-out). ValueError for an unknown source."""
    positions = load_positions(build_dataset())
    if holdout is not None:
        if holdout not in positions:
            raise ValueError(f"unknown source {holdout!r}; have {sorted(positions)}")
        positions = {k: v for k, v in positions.items() if k != holdout}
    return split(positions)[0]
