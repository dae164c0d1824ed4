"""On-disk cache of serialized TensorRT engines (no TensorRT import here).

An engine is only valid for the exact ONNX model, precision, optimisation profile, TensorRT
version and GPU it was built for (jetson-inference's ``tensorNet`` keys its cache the same way).
Every engine file ``<name>-<digest>.engine`` has a JSON sidecar with its full
:class:`EngineKey` and the engine's own sha256:

- no file, or a sidecar whose key differs (another TensorRT, another GPU, a re-exported model:
  a *stale or foreign* engine) → :meth:`EngineCache.load` returns None and the caller rebuilds;
- a file whose bytes do not match the sha256 recorded when it was stored, a missing, unreadable or
  malformed sidecar next to an engine, or an engine path that is not a file →
  :class:`EngineCacheError` (a *corrupt* engine is never handed to the runtime, whose deserialiser
  may crash on it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


class EngineCacheError(RuntimeError):
    """A cached engine file is corrupt (checksum mismatch, missing or unreadable metadata)."""


@dataclass(frozen=True)
class EngineKey:
    """Everything that invalidates an engine.

    Attributes:
        onnx_sha256: sha256 of the ONNX file the engine is built from.
        precision: ``fp32`` | ``fp16`` | ``int8`` (FP16/INT8 are explicit in the ONNX itself).
        trt_version: ``tensorrt.__version__``.
        gpu_name: CUDA device name, e.g. ``NVIDIA H100 80GB HBM3`` or ``Orin``.
        compute_capability: ``"major.minor"``, e.g. ``"9.0"`` (H100), ``"8.7"`` (Jetson Orin).
        max_batch: the optimisation profile's largest batch (min 1).
    """

    onnx_sha256: str
    precision: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    max_batch: int

    def digest(self) -> str:
        """16 hex digits of the sha256 of every field (the cache file name)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class EngineCache:
    """Engines under ``root`` (created on first store)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str, key: EngineKey) -> Path:
        return self.root / f"{name}-{key.precision}-{key.digest()}.engine"

    def load(self, name: str, key: EngineKey) -> bytes | None:
        """The engine bytes stored for ``key``, or None (not built yet, or stale/foreign).

        Raises EngineCacheError for a corrupt entry (see the module docstring).
        """
        path = self.path(name, key)
        if not path.exists():
            return None
        if not path.is_file():
            raise EngineCacheError(f"engine {path} is not a file; delete it to rebuild")
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise EngineCacheError(f"engine {path} has no readable metadata ({e}); delete it to rebuild") from e
        if not isinstance(meta, dict):
            raise EngineCacheError(f"engine {path}: its metadata is not a JSON object; delete it to rebuild")
        if meta.get("key") != asdict(key):
            return None  # same digest, other key: a foreign file under this name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise EngineCacheError(f"engine {path} cannot be read ({e}); delete it to rebuild") from e
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            raise EngineCacheError(f"engine {path} is corrupt (sha256 differs from when it was built); delete it "
                                   "to rebuild")
        return data

    def store(self, name: str, key: EngineKey, data: bytes) -> Path:
        """Write the engine and its metadata atomically (temporary files, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(name, key)
        meta = {"key": asdict(key), "engine_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for target, payload in ((path, data), (path.with_suffix(".json"), json.dumps(meta, indent=2).encode())):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            tmp.write_bytes(payload)
            tmp.replace(target)
        return path

    def stale(self, name: str, key: EngineKey) -> list[Path]:
        """Engines of ``name`` and ``key.precision`` in the cache built for another key."""
        keep = self.path(name, key)
        return sorted(p for p in self.root.glob(f"{name}-{key.precision}-*.engine") if p != keep)
