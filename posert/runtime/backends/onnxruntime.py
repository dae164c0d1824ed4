"""ONNX Runtime CPU backend: the embedded default."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from posert.models.diffusion import CND, Schedule
from posert.models.io import _load


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Inference threads (``threads``, default 1), no inter-op pool and no spinning.

    A streaming tick is a few hundred tiny kernels on (B·17, 64) tensors: below a batch of a few
    dozen streams one thread beats a pool (dispatch costs more than the work), and a tick must not
    fight other processes for cores. Give ``threads`` > 1 for large batches.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def create_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session of one ONNX file (float32, FP16 or Q/DQ INT8) with :func:`session_options`.

    ORT's ``NchwcTransformer`` is disabled: it only rewrites Conv layouts (these models have
    none), and ORT 1.31 crashes creating FP16 and Q/DQ sessions with it (DESIGN.md).
    Raises FileNotFoundError for a missing file.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"],
                                disabled_optimizers=["NchwcTransformer"])


class BoundStep:
    """One ONNX Runtime session run through I/O bindings: inputs are read in place from the
    caller's arrays and outputs are written into arrays allocated once per set of input buffers.

    A tick feeds the same buffers every time (views of the pipeline's preallocated storage), so
    after the first tick of a given set of streams a run builds no feed dict, creates no
    ``OrtValue`` and allocates no output: it is ``run_with_iobinding`` on a cached binding.
    Bindings are keyed by every input's (data address, shape, dtype) and kept for the
    ``capacity`` most recent keys; each holds references to its arrays, so a bound address
    cannot be freed and reused while the binding exists. A caller that passes the very array
    objects of a binding again (the pipeline keeps its views per block of streams) skips even
    the address lookup. Inputs that are not C-contiguous are copied for that call (unbound).

    ``run(feeds)`` returns the outputs as arrays owned by the binding: valid until the next run
    with the same input buffers (the pipeline consumes them at once). Thread-safe for runs on
    different buffers (the pipeline's two shards); one set of buffers must not be run from two
    threads at once.
    """

    def __init__(self, session: ort.InferenceSession, capacity: int = 64):
        self.session, self.capacity = session, capacity
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._bindings: OrderedDict = OrderedDict()  # address key → (binding, outputs, arrays, id key)
        self._by_id: dict = {}  # ids of a binding's own (referenced) arrays → its address key
        self._lock = threading.Lock()  # guards the dicts, never a run

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feeds[n] for n in self.input_names]
        ids = tuple(map(id, arrays))
        with self._lock:
            key = self._by_id.get(ids)  # the binding holds these objects: ids cannot be reused
            entry = self._bindings.get(key) if key is not None else None
            if entry is not None:
                self._bindings.move_to_end(key)
        if entry is None:
            if not all(a.flags.c_contiguous for a in arrays):
                return self.session.run(None, {n: np.ascontiguousarray(a) for n, a in zip(self.input_names, arrays)})
            key = tuple((a.__array_interface__["data"][0], a.shape, a.dtype.str) for a in arrays)
            with self._lock:
                entry = self._bindings.get(key)
                if entry is not None:
                    self._bindings.move_to_end(key)
            if entry is None:
                entry = (*self._bind(arrays), ids)
                with self._lock:
                    self._bindings[key] = entry
                    self._by_id[ids] = key
                    while len(self._bindings) > self.capacity:
                        self._by_id.pop(self._bindings.popitem(last=False)[1][3], None)
        binding, outputs = entry[0], entry[1]
        self.session.run_with_iobinding(binding)
        return outputs

    def _bind(self, arrays: list[np.ndarray]):
        binding = self.session.io_binding()
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]  # CPU: shares the array's memory
        for name, v in zip(self.input_names, values):
            binding.bind_ortvalue_input(name, v)
        outputs = self._allocate_outputs(arrays[0].shape[0])
        if outputs is None:  # a graph whose output shapes are not (batch, fixed …): ask ORT once
            outputs = [np.empty_like(o) for o in self.session.run(None, dict(zip(self.input_names, arrays)))]
        for name, o in zip(self.output_names, outputs):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(o))
        return binding, outputs, (arrays, values)  # the arrays and OrtValues stay referenced

    _DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}

    def _allocate_outputs(self, batch: int) -> list[np.ndarray] | None:
        """Output arrays from the graph's declared shapes, the symbolic ``batch`` axis set to
        ``batch``; None if a shape has another unknown axis or a dtype is not listed."""
        out = []
        for o in self.session.get_outputs():
            dims = [batch if d == "batch" else d for d in o.shape]
            if not all(isinstance(d, int) and d > 0 for d in dims) or o.type not in self._DTYPES:
                return None
            out.append(np.empty(dims, self._DTYPES[o.type]))
        return out


class OrtBackend:
    """The lifter step and one denoiser step as ONNX Runtime sessions on the CPU execution
    provider (graphs from :mod:`posert.export.onnx`), run through cached I/O bindings
    (:class:`BoundStep`): cache arrays and the other inputs are read in place and outputs land in
    preallocated arrays, valid until the next call on the same input buffers. ``lift_step`` and
    ``denoise_step`` may be called from two threads at once on different buffers (ORT sessions
    are thread-safe for runs), which :class:`~posert.runtime.pipeline.Pipeline` uses to run two
    shards of a tick concurrently."""

    concurrent_runs = True

    def __init__(self, lifter_onnx: str | Path, denoiser_onnx: str | Path, window: int, schedule: Schedule,
                 threads: int | None = None, cnd: CND | None = None):
        self.lifter = create_session(lifter_onnx, threads)
        self.denoiser = create_session(denoiser_onnx, threads)
        self._lift, self._den = BoundStep(self.lifter), BoundStep(self.denoiser)
        self.window, self.schedule, self.cnd = window, schedule, cnd
        self.lifter_cache_shape = self._cache_shape(self.lifter)
        self.denoiser_cache_shape = self._cache_shape(self.denoiser)
        self._t: dict[tuple[int, float], np.ndarray] = {}  # read-only t inputs, shared by threads

    @staticmethod
    def _cache_shape(sess: ort.InferenceSession) -> tuple[int, ...]:
        caches = [i for i in sess.get_inputs() if i.name.startswith("cache_")]
        if not caches:
            raise ValueError("not a streaming step model: no cache_* inputs")
        return (len(caches), *caches[0].shape[1:])

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None,
                         precision: str = "fp32"):
        """Export (once, cached) and load the ONNX step models of the given or default checkpoints
        at ``precision`` (fp32 | fp16 | int8; see :func:`posert.export.precision.precision_onnx`)."""
        from posert.export.precision import precision_onnx

        lcfg = _load(lifter, "lifter.pt", "lifter")["config"]
        rckpt = _load(refiner, "refiner.pt", "refiner")
        dcfg = rckpt["config"]
        if not (lcfg["causal"] and dcfg["causal"]):
            raise ValueError("the streaming runtime needs causal models (an offline checkpoint was given)")
        lifter_onnx, den_onnx = precision_onnx(precision, lifter, refiner)
        cnd = CND(rckpt["cnd"]["mean"], rckpt["cnd"]["cov"], rckpt["cnd"].get("rho", 0.0))
        return cls(lifter_onnx, den_onnx, lcfg["window"], Schedule(dcfg["T"], dcfg["K"]), threads, cnd)

    @staticmethod
    def _feeds(caches: list[np.ndarray], feeds: dict) -> dict:
        for i, c in enumerate(caches):
            feeds[f"cache_{i}"] = c
        return feeds

    def lift_step(self, inp: np.ndarray, lag: np.ndarray, caches: list[np.ndarray]):
        feeds = self._feeds(caches, {"inp": inp, "lag": lag})
        return self._lift.run(feeds)

    def denoise_step(self, inp: np.ndarray, x_t: np.ndarray, t: float, lag: np.ndarray, caches: list[np.ndarray]):
        tt = self._t.get((inp.shape[0], t))
        if tt is None:
            tt = self._t.setdefault((inp.shape[0], t), np.full(inp.shape[0], t, np.float32))
        feeds = self._feeds(caches, {"inp": inp, "x_t": x_t, "t": tt, "lag": lag})
        return self._den.run(feeds)
