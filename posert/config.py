"""Configuration as data: what a :class:`~posert.runtime.Pipeline` runs, in frozen dataclasses.

A :class:`PipelineConfig` holds four sections: :class:`BackendConfig` (where and how the models
run), :class:`RefinerConfig` (the diffusion refiner's sampling), :class:`CorrectionConfig` (the
stage after the refiner that uses the 2D and the camera) and :class:`GuardConfig` (what input
reaches the models and what every reported pose must be). Every default of the runtime lives
here, once; the runtime, the C++ kernels' callers and the command line read it from here.

A config round-trips through plain data: :meth:`PipelineConfig.to_dict` /
:meth:`PipelineConfig.from_dict`, and :meth:`PipelineConfig.from_file` reads TOML, YAML or JSON
(``posert eval|bench|run --config FILE``; ``posert config`` prints the defaults as TOML)::

    max_streams = 16
    [backend]
    name = "onnxruntime"
    precision = "int8"
    [correction]
    mode = "given"

Keys that a file leaves out keep their defaults; an unknown key or a bad value raises
ValueError naming it. ``None`` (no value in TOML) means "as the checkpoint says" where a field
documents it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: Backend names (:func:`posert.runtime.backends.create_backend`).
BACKENDS = ("auto", "native", "onnxruntime", "torch", "tensorrt", "cuda")
#: Model precisions.
PRECISIONS = ("fp32", "fp16", "int8")
#: How the ONNX Runtime backend runs the attention cores of a step.
ATTENTION_MODES = ("auto", "kernel", "graph")
#: Which streams the correction stage serves.
CORRECTION_MODES = ("guess", "given", "off")


def _fail(section: str, name: str, why: str, value: Any) -> None:
    raise ValueError(f"{section}.{name} {why}, got {value!r}")


def _positive_int(section: str, name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(section, name, "must be an integer ≥ 1" + (" or None" if optional else ""), value)


def _number(section: str, name: str, value: Any, lo: float, hi: float = math.inf, lo_open: bool = False,
            allow_inf: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi and (allow_inf or math.isfinite(value))
    if not ok:
        bound = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        _fail(section, name, f"must be a number in {bound}", value)


@dataclass(frozen=True)
class BackendConfig:
    """Where and how the lifter and the denoiser run.

    Attributes:
        name: ``auto`` (default: ``native`` at fp32 with ``attention`` auto, else
            ``onnxruntime``), ``native`` (posert's fused C++ step kernel on the CPU, fp32),
            ``onnxruntime`` (CPU; fp32, fp16, Q/DQ int8), ``torch`` (the reference, fp32),
            ``tensorrt`` (engines on an NVIDIA GPU) or ``cuda`` (the whole tick as one CUDA graph).
        precision: ``fp32``, ``fp16`` or ``int8`` (docs/precision.md).
        lifter, refiner: checkpoint paths; None: the committed ``checkpoints/``.
        threads: inference threads of ONNX Runtime and torch; None: one per shard.
        workers: 1, or 2 to run a tick of at least ``2 · min_shard`` streams as two blocks at once
            (backends that allow concurrent runs); None: 2 where the process may use ≥ 2 cores.
        min_shard: the fewest streams a shard of a two-worker tick holds.
        attention: ONNX Runtime only: ``kernel`` (split step graphs with the C++ attention cores
            between them), ``graph`` (one graph per step) or ``auto`` (kernel at fp32).
    """

    name: str = "auto"
    precision: str = "fp32"
    lifter: str | None = None
    refiner: str | None = None
    threads: int | None = None
    workers: int | None = None
    min_shard: int = 4
    attention: str = "auto"

    def __post_init__(self):
        s = "backend"
        if self.name not in BACKENDS:
            _fail(s, "name", f"must be one of {BACKENDS}", self.name)
        if self.precision not in PRECISIONS:
            _fail(s, "precision", f"must be one of {PRECISIONS}", self.precision)
        if self.attention not in ATTENTION_MODES:
            _fail(s, "attention", f"must be one of {ATTENTION_MODES}", self.attention)
        for name in ("lifter", "refiner"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                _fail(s, name, "must be a checkpoint path or None", v)
        _positive_int(s, "threads", self.threads, optional=True)
        if self.workers not in (None, 1, 2):
            _fail(s, "workers", "must be 1, 2 or None", self.workers)
        _positive_int(s, "min_shard", self.min_shard)


@dataclass(frozen=True)
class RefinerConfig:
    """How the diffusion refiner samples (D3PRefiner; DDIM, Song et al. 2021).

    Attributes:
        steps: K, the DDIM steps from x_T; None: the checkpoint's. The denoiser is trained on
            every t in [1, T], so any 1 ≤ K ≤ T is valid.
        hypotheses: H (DiffHPE-style averaging): H copies of every stream start from x_T + δ_h,
            δ_h an AR(1) process per stream with the CND's residual covariance and ρ, and the H
            refined poses are averaged (host backends only).
        seed: the seed of those draws.
        cnd_mean: subtract the CND's conditional mean μ_a|b(y, x_T) (its causal EMA μ̄) from x_T
            before the DDIM steps; None: as the checkpoint says (``subtract_mean``).
        mean_ema: α in (0, 1] of that EMA along each stream; None: the checkpoint's.
    """

    steps: int | None = None
    hypotheses: int = 1
    seed: int = 0
    cnd_mean: bool | None = None
    mean_ema: float | None = None

    def __post_init__(self):
        s = "refiner"
        _positive_int(s, "steps", self.steps, optional=True)
        _positive_int(s, "hypotheses", self.hypotheses)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail(s, "seed", "must be an integer ≥ 0", self.seed)
        if self.cnd_mean not in (None, True, False):
            _fail(s, "cnd_mean", "must be true, false or None", self.cnd_mean)
        if self.mean_ema is not None:
            _number(s, "mean_ema", self.mean_ema, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class CorrectionConfig:
    """The correction stage after the refiner (docs/design.md, "The correction"): every refined
    pose moves onto the camera rays of its 2D keypoints across the line of sight (the lateral
    step), each bone's extent along the line of sight follows the stream's running bone lengths
    (the bone depth), and the pose moves in depth to the stream's tracked distance (the distance
    step). Each constant below was chosen on the validation motion and checked on held-out motion
    (experiments/README.md).

    Attributes:
        mode: which streams are corrected: ``guess`` (every stream; intrinsics from the camera it
            was added with, else guessed from the image size: :meth:`posert.camera.Camera.guess`),
            ``given`` (only streams added with a camera) or ``off`` (the refiner's output as is).
        lateral_ema: β of the causal EMA of the lateral correction: ``auto`` (the steady-state
            Kalman gain for each stream's estimated 2D noise, Muth 1960) or a fixed number in
            (0, 1]. ``auto`` assumes 2D detected at the models' 50 fps: for 2D resampled from
            another rate ``posert run`` uses ``noise_fallback`` instead
            (:func:`posert.video.resample.config_for_rate`).
        pixel_noise: also estimate the 2D noise from the keypoints' own third differences; the
            smaller of that and the innovations' estimate sets β.
        noise_q: px² per frame, the random walk the lateral EMA tracks (σ = 5 px gives β ≈ 0.1).
        noise_tau: EMA weight of the noise variance estimates (a 20-frame time constant).
        noise_min_joints: the fewest joints measured over consecutive frames for an estimate.
        noise_fallback: β while a stream has no noise estimate yet.
        bone_depth: set each bone's extent along the line of sight from the running bone lengths.
        bone_ema: EMA weight of the bone depth's moves (whatever the lateral β).
        bone_gate: a bone whose extent along the line of sight is below ``bone_gate`` · L moves
            proportionally less, so that its front/back side never flips between frames.
        bone_horizon: frames after which a running bone length forgets with weight 1 / horizon.
        bone_view_power: a frame's weight in a bone's running length is min(1, e / L₀)^P, e the
            bone's extent across the line of sight: the frames where the 2D sees it whole count.
        bone_view_cap: L₀ is the weighted length capped at this multiple of the plain running
            length, so that a bad first frame is forgotten (``inf``: uncapped).
        bone_symmetry: pool each left/right bone's running length with its mirror image's.
        distance_index: tracking index λ of the α-β tracker of each stream's distance (Kalata
            1984); 0: each frame's own least-squares distance.
        undistort_iterations: fixed-point iterations of the lens undistortion (OpenCV's method).
    """

    mode: str = "guess"
    lateral_ema: float | str = "auto"
    pixel_noise: bool = True
    noise_q: float = 0.3
    noise_tau: float = 0.05
    noise_min_joints: int = 6
    noise_fallback: float = 0.1
    bone_depth: bool = True
    bone_ema: float = 0.1
    bone_gate: float = 0.3
    bone_horizon: float = 1000.0
    bone_view_power: float = 4.0
    bone_view_cap: float = 1.25
    bone_symmetry: bool = True
    distance_index: float = 1e-3
    undistort_iterations: int = 8

    def __post_init__(self):
        s = "correction"
        if self.mode not in CORRECTION_MODES:
            _fail(s, "mode", f"must be one of {CORRECTION_MODES}", self.mode)
        if self.lateral_ema != "auto":
            _number(s, "lateral_ema", self.lateral_ema, 0.0, 1.0, lo_open=True)
        for name in ("pixel_noise", "bone_depth", "bone_symmetry"):
            if not isinstance(getattr(self, name), bool):
                _fail(s, name, "must be true or false", getattr(self, name))
        _number(s, "noise_q", self.noise_q, 0.0, lo_open=True)
        _number(s, "noise_tau", self.noise_tau, 0.0, 1.0, lo_open=True)
        _positive_int(s, "noise_min_joints", self.noise_min_joints)
        _number(s, "noise_fallback", self.noise_fallback, 0.0, 1.0)
        _number(s, "bone_ema", self.bone_ema, 0.0, 1.0, lo_open=True)
        _number(s, "bone_gate", self.bone_gate, 0.0, lo_open=True)
        _number(s, "bone_horizon", self.bone_horizon, 1.0)
        _number(s, "bone_view_power", self.bone_view_power, 0.0)
        _number(s, "bone_view_cap", self.bone_view_cap, 1.0, allow_inf=True)
        _number(s, "distance_index", self.distance_index, 0.0)
        _positive_int(s, "undistort_iterations", self.undistort_iterations)


@dataclass(frozen=True)
class GuardConfig:
    """What a stream's input must be to reach the models, and what every reported pose must be
    (docs/design.md, "Trust").

    Attributes:
        view_margin: a visible keypoint farther than this many image widths (x) or heights (y)
            outside the image is out of view (a detector's guess, or a point behind the camera):
            it is treated as missing (confidence 0) and counted, never fed to the models.
        min_joints: a frame with fewer visible joints carries no pose of its own: the stream
            coasts (the models predict from its context) and the pose is not valid.
        restart_after_s: a stream that coasted longer than this (seconds of its timestamps)
            restarts at its next frame with a pose: caches, the CND mean and the correction's
            state are cleared, so a person who walks out of view and back is a fresh track.
        max_reach_mm: no reported joint is farther than this from the pelvis (a standing adult
            with raised arms reaches ~1.2 m).
        max_bone_ratio: no reported bone is longer than this multiple of the stream's running
            length of that bone, nor of the reference adult's
            (:data:`~posert.skeleton.REFERENCE_BONES_MM`).
    """

    view_margin: float = 2.0
    min_joints: int = 6
    restart_after_s: float = 0.5
    max_reach_mm: float = 1300.0
    max_bone_ratio: float = 2.0

    def __post_init__(self):
        s = "guard"
        _number(s, "view_margin", self.view_margin, 0.0)
        _positive_int(s, "min_joints", self.min_joints)
        _number(s, "restart_after_s", self.restart_after_s, 0.0, allow_inf=True)
        _number(s, "max_reach_mm", self.max_reach_mm, 0.0, lo_open=True)
        _number(s, "max_bone_ratio", self.max_bone_ratio, 1.0, lo_open=True)


_SECTIONS = {"backend": BackendConfig, "refiner": RefinerConfig, "correction": CorrectionConfig,
             "guard": GuardConfig}


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a :class:`~posert.runtime.Pipeline` runs.

    Attributes:
        max_streams: capacity; every buffer and cache for this many streams is allocated once.
        backend, refiner, correction, guard: the sections (:class:`BackendConfig`,
            :class:`RefinerConfig`, :class:`CorrectionConfig`, :class:`GuardConfig`).
    """

    max_streams: int = 64
    backend: BackendConfig = field(default_factory=BackendConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self):
        _positive_int("pipeline", "max_streams", self.max_streams)
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                _fail("pipeline", name, f"must be a {cls.__name__}", getattr(self, name))

    def to_dict(self) -> dict:
        """Plain data (str, int, float, bool, None in nested dicts) that :meth:`from_dict` reads
        back to an equal config."""
        out = asdict(self)
        for sec in _SECTIONS:
            out[sec] = {k: str(v) if isinstance(v, Path) else v for k, v in out[sec].items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        """The config of ``data`` (as :meth:`to_dict` writes it; missing keys keep their
        defaults). Raises ValueError for an unknown section or key, or a bad value."""
        if not isinstance(data, dict):
            raise ValueError(f"a pipeline config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"max_streams", *_SECTIONS}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: max_streams, {', '.join(_SECTIONS)}")
        kwargs: dict[str, Any] = {}
        if "max_streams" in data:
            kwargs["max_streams"] = data["max_streams"]
        for name, sec in _SECTIONS.items():
            if name in data:
                kwargs[name] = _section(sec, name, data[name])
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> PipelineConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file. Raises FileNotFoundError for a
        missing file and ValueError for an unreadable one, another suffix or a bad config."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".yaml", ".yml", ".json"):
            raise ValueError(f"config files are .toml, .yaml, .yml or .json, not {path.suffix!r}")
        text = path.read_text()
        try:
            if suffix == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib
                data = tomllib.loads(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except Exception as e:  # each parser's own error type
            raise ValueError(f"{path}: not a valid {suffix[1:]} file ({e})") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_toml(self) -> str:
        """The config as a TOML document (None fields left out: they mean "the default")."""
        import tomli_w

        def clean(d):
            return {k: clean(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

        return tomli_w.dumps(clean(self.to_dict()))

    def override(self, values: dict[str, Any]) -> PipelineConfig:
        """A copy with ``{"section.field": value}`` (or ``"max_streams"``) replaced; a None value
        leaves the field as it is. Raises ValueError for an unknown key or a bad value."""
        out = self
        for key, value in values.items():
            if value is None:
                continue
            if key == "max_streams":
                out = replace(out, max_streams=value)
                continue
            sec, _, name = key.partition(".")
            if sec not in _SECTIONS or name not in {f.name for f in fields(_SECTIONS[sec])}:
                raise ValueError(f"unknown config key {key!r}")
            out = replace(out, **{sec: replace(getattr(out, sec), **{name: value})})
        return out


def _section(cls, name: str, data: Any):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config section [{name}] must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown keys in [{name}]: {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)
