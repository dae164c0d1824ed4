"""TensorRT backend: the lifter step and one denoiser step as TensorRT 10 engines, run with
cuda-python on one CUDA stream.

Data path of one step call (the shape of TensorRT's ``common_runtime.py``): copy the inputs
into pinned host buffers → H2D copies → ``set_input_shape`` for the batch →
``execute_async_v3`` → D2H copies of the outputs → stream synchronise. Every buffer (pinned host
and device, sized for ``max_batch``) and every tensor address is set up once when the backend
is built; a step call allocates nothing. Engines come from :mod:`posert.runtime.engine_cache`
(built on first use with :mod:`posert.export.tensorrt`).

Imported lazily by :func:`posert.runtime.backends.create_backend`; importing this module needs
neither TensorRT nor cuda-python, building a backend needs both (ImportError says which is
missing). The caches still live in the pipeline's host memory and cross PCIe on every call; the
GPU-resident tick (caches on the device, ``posert._C`` CUDA kernels, one CUDA graph) is the
``cuda`` backend.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from posert.errors import MissingDependency
from posert.models.diffusion import CND, Schedule
from posert.models.io import _load
from posert.runtime.backends.base import Capabilities


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise MissingDependency("cuda-python is not installed: `pip install posert[gpu]`") from e
    return cudart


def check(result):
    """Unpack a cuda-python ``(err, *values)`` tuple; raise RuntimeError naming the error."""
    cudart = import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (values or None)


def device_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device; RuntimeError without one."""
    cudart = import_cudart()
    prop = check(cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}"


class HostDeviceBuffer:
    """Pinned host memory and device memory for one tensor of ``shape`` at the largest batch;
    ``host`` is a NumPy view of the pinned block. Freed by :meth:`free` (or when collected)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        cudart = import_cudart()
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.host_ptr = check(cudart.cudaMallocHost(self.nbytes))
        self.device_ptr = check(cudart.cudaMalloc(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def free(self) -> None:
        if getattr(self, "device_ptr", None) is not None:
            cudart = import_cudart()
            self.host = None
            cudart.cudaFree(self.device_ptr)
            cudart.cudaFreeHost(self.host_ptr)
            self.device_ptr = self.host_ptr = None

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the CUDA context may be gone already
            pass


class TrtStep:
    """One step engine with an execution context and buffers for ``max_batch`` rows.

    ``run(feeds)`` takes arrays whose first axis is the batch and returns views of the pinned
    output buffers in their runtime shapes (``kv``: (2L, B, 17, heads, d)), valid until the
    next ``run``.
    Raises ValueError for a missing input or a batch above ``max_batch``.
    """

    def __init__(self, engine_bytes: bytes, max_batch: int, stream, logger=None):
        from posert.export.tensorrt import import_tensorrt

        trt = import_tensorrt()
        self.runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (corrupt, or built by another TensorRT)")
        self.context = self.engine.create_execution_context()
        self.stream, self.max_batch = stream, max_batch
        self.inputs, self.outputs, self.buffers = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = [max_batch if d < 0 else d for d in self.engine.get_tensor_shape(name)]
            buf = HostDeviceBuffer(tuple(shape), trt.nptype(self.engine.get_tensor_dtype(name)))
            self.buffers[name] = buf
            self.context.set_tensor_address(name, int(buf.device_ptr))
            (self.inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart = import_cudart()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        batch = None
        for name in self.inputs:
            if name not in feeds:
                raise ValueError(f"missing input {name!r}")
            x, buf = feeds[name], self.buffers[name]
            batch = x.shape[0]
            if batch > self.max_batch:
                raise ValueError(f"batch {batch} exceeds the engine's max_batch {self.max_batch}")
            dst = buf.host[:batch]
            np.copyto(dst, x, casting="same_kind")
            check(cudart.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, dst.nbytes, h2d, self.stream))
            self.context.set_input_shape(name, dst.shape)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        outs = []
        for name in self.outputs:  # TensorRT writes each output densely in its runtime shape
            buf = self.buffers[name]
            shape = tuple(self.context.get_tensor_shape(name))
            view = buf.host.reshape(-1)[:int(np.prod(shape))].reshape(shape)
            check(cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, view.nbytes, d2h, self.stream))
            outs.append(view)
        check(cudart.cudaStreamSynchronize(self.stream))
        return outs


def build_engines(onnx_paths, precision: str, max_batch: int = 64, cache_dir: str | Path | None = None) -> dict:
    """Build (or find in the cache) the engines of the (lifter, denoiser) step models.

    Returns {"lifter": engine path, "denoiser": engine path}. Stale engines of the same model
    and precision (another TensorRT, GPU or ONNX) are removed after a rebuild. Raises
    EngineCacheError for a corrupt cached engine.
    """
    return {name: cache.path(name, key) for name, (cache, key) in _engines(onnx_paths, precision, max_batch,
                                                                           cache_dir).items()}


def _engines(onnx_paths, precision: str, max_batch: int, cache_dir) -> dict:
    from posert.data.sources import cache_dir as default_cache
    from posert.export.tensorrt import build_serialized_engine, import_tensorrt
    from posert.models.io import file_sha256
    from posert.runtime.engine_cache import EngineCache, EngineKey

    trt = import_tensorrt()
    gpu, cc = device_info()
    root = Path(cache_dir or default_cache()) / "engines"
    cache = EngineCache(root)
    out = {}
    for name, path in zip(("lifter", "denoiser"), onnx_paths):
        key = EngineKey(file_sha256(path), precision, trt.__version__, gpu, cc, max_batch)
        if cache.load(name, key) is None:
            data = build_serialized_engine(path, max_batch, root / f"timing-{trt.__version__}-{cc}.cache")
            cache.store(name, key, data)
            for old in cache.stale(name, key):
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        out[name] = (cache, key)
    return out


class TrtBackend:
    """The step contract (:class:`~posert.runtime.backends.base.StepBackend`) on two TensorRT
    engines (one CUDA stream)."""

    name = "tensorrt"
    capabilities = Capabilities(kind="step", device="cuda", precisions=("fp32", "fp16", "int8"))
    cache_dtype = np.dtype(np.float32)

    def __init__(self, lifter_engine: bytes, denoiser_engine: bytes, window: int, schedule: Schedule,
                 cnd: CND | None = None, max_batch: int = 64):
        cudart = import_cudart()
        self.stream = check(cudart.cudaStreamCreate())
        self.lifter = TrtStep(lifter_engine, max_batch, self.stream)
        self.denoiser = TrtStep(denoiser_engine, max_batch, self.stream)
        self.window, self.schedule, self.cnd, self.max_batch = window, schedule, cnd, max_batch
        self.lifter_cache_shape = self._cache_shape(self.lifter)
        self.denoiser_cache_shape = self._cache_shape(self.denoiser)
        self._t = np.zeros(max_batch, np.float32)

    @staticmethod
    def _cache_shape(step: TrtStep) -> tuple[int, ...]:
        caches = [n for n in step.inputs if n.startswith("cache_")]
        if not caches:
            raise ValueError("not a streaming step engine: no cache_* inputs")
        return (len(caches), *step.buffers[caches[0]].host.shape[1:])

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, precision: str = "fp32",
                         max_batch: int = 64):
        """Engines of the given (default: committed) checkpoints at ``precision``, built and cached
        on first use. INT8 needs the gated Q/DQ models of ``posert build --precision int8``."""
        from posert.export.precision import precision_onnx

        lcfg = _load(lifter, "lifter.pt", "lifter")["config"]
        rckpt = _load(refiner, "refiner.pt", "refiner")
        dcfg = rckpt["config"]
        paths = precision_onnx(precision, lifter, refiner)
        data = {name: cache.load(name, key) for name, (cache, key) in _engines(paths, precision, max_batch,
                                                                                 None).items()}
        cnd = CND.from_state(rckpt["cnd"])
        return cls(data["lifter"], data["denoiser"], lcfg["window"], Schedule(dcfg["T"], dcfg["K"]), cnd, max_batch)

    @staticmethod
    def _feeds(caches, feeds: dict) -> dict:
        for i, c in enumerate(caches):
            feeds[f"cache_{i}"] = c
        return feeds

    def lift_step(self, inp: np.ndarray, lag: np.ndarray, caches: list[np.ndarray]):
        return self.lifter.run(self._feeds(caches, {"inp": inp, "lag": lag}))

    def denoise_step(self, inp: np.ndarray, x_t: np.ndarray, t: float, lag: np.ndarray, caches: list[np.ndarray]):
        tt = self._t[:inp.shape[0]]
        tt.fill(t)
        return self.denoiser.run(self._feeds(caches, {"inp": inp, "x_t": x_t, "t": tt, "lag": lag}))

