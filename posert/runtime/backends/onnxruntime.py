"""ONNX Runtime CPU backend: FP32, FP16 and Q/DQ INT8 step models on the CPU execution provider."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from posert.config import ATTENTION_MODES
from posert.models.diffusion import CND, Schedule
from posert.models.io import _load
from posert.runtime.backends.base import Capabilities


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
    """A CPU InferenceSession of one ONNX file (float32, FP16 or Q/DQ INT8) with :func:`session_options`.

    ORT's ``NchwcTransformer`` is disabled: it only rewrites Conv layouts (these models have
    none), and ORT 1.31 crashes creating FP16 and Q/DQ sessions with it.
    Raises FileNotFoundError for a missing file and ValueError for a file ONNX Runtime cannot load.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=["NchwcTransformer"])
    except Exception as e:  # ONNX Runtime's own error types (InvalidProtobuf, Fail, …)
        raise ValueError(f"{path} is not a loadable ONNX model ({' '.join(str(e).split())[:200]})") from None


class BoundStep:
    """One ONNX Runtime InferenceSession run through I/O bindings: inputs are read in place from the
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

    def __init__(self, ort_session: ort.InferenceSession, capacity: int = 64):
        self.ort_session, self.capacity = ort_session, capacity
        self.input_names = [i.name for i in ort_session.get_inputs()]
        self.output_names = [o.name for o in ort_session.get_outputs()]
        self._bindings: OrderedDict = OrderedDict()  # address key → (binding, outputs, arrays, id key)
        self._by_id: dict = {}  # ids of a binding's own (referenced) arrays → its address key
        self._lock = threading.Lock()  # guards the dicts, never a run

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feeds[n] for n in self.input_names]
        entry = self.entry(arrays)
        if entry is None:  # not C-contiguous: a plain run on copies
            return self.ort_session.run(None, {n: np.ascontiguousarray(a) for n, a in zip(self.input_names, arrays)})
        binding, outputs = entry[0], entry[1]
        self.ort_session.run_with_iobinding(binding)
        return outputs

    def entry(self, arrays: list[np.ndarray]):
        """The cached (binding, outputs, …) of these input arrays (in ``input_names`` order),
        created on first use; None if an array is not C-contiguous (it cannot be bound)."""
        ids = tuple(map(id, arrays))
        with self._lock:
            key = self._by_id.get(ids)  # the binding holds these objects: ids cannot be reused
            entry = self._bindings.get(key) if key is not None else None
            if entry is not None:
                self._bindings.move_to_end(key)
        if entry is None:
            if not all(a.flags.c_contiguous for a in arrays):
                return None
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
        return entry

    def _bind(self, arrays: list[np.ndarray]):
        binding = self.ort_session.io_binding()
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]  # CPU: shares the array's memory
        for name, v in zip(self.input_names, values):
            binding.bind_ortvalue_input(name, v)
        outputs = self._allocate_outputs(arrays[0].shape[0])
        if outputs is None:  # a graph whose output shapes are not (batch, fixed …): ask ORT once
            outputs = [np.empty_like(o) for o in self.ort_session.run(None, dict(zip(self.input_names, arrays)))]
        for name, o in zip(self.output_names, outputs):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(o))
        return binding, outputs, (arrays, values)  # the arrays and OrtValues stay referenced

    _DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}

    def _allocate_outputs(self, batch: int) -> list[np.ndarray] | None:
        """Output arrays from the graph's declared shapes, the symbolic ``batch`` axis set to
        ``batch``; None if a shape has another unknown axis or a dtype is not listed."""
        out = []
        for o in self.ort_session.get_outputs():
            dims = [batch if d == "batch" else d for d in o.shape]
            if not all(isinstance(d, int) and d > 0 for d in dims) or o.type not in self._DTYPES:
                return None
            out.append(np.empty(dims, self._DTYPES[o.type]))
        return out


class SplitStep:
    """A step model run as 2L + 1 ONNX Runtime graphs (:func:`posert.export.onnx.export_split_step`)
    with its 2L attention cores in C++ between them: ``posert._C.spatial_attention`` (the 17
    joints of a frame) and ``posert._C.cached_attention`` (the new frame over its key/value ring
    cache) for each of the L blocks (csrc/attention.h).

    ONNX Runtime's CPU kernels run these cores as batched GEMMs of tiny matrices (1 × 16 × M per
    stream, joint and head for the cached one), with a Split/Squeeze/Transpose chain around
    each: the larger part of a step's non-GEMM time (docs/kernels.md). The C++ loops do
    the same arithmetic in one call per core.

    Same interface as :class:`BoundStep`: ``run(feeds)`` with the single graph's input names
    returns ``[output (B, 17, 3), kv (2L, B, 17, heads, C/heads)]`` as arrays owned by a plan
    per set of input objects, valid until the next run on the same input buffers. The plan
    resolves once every piece's I/O binding (:class:`BoundStep`) and every core's arguments, so a
    tick on known buffers allocates nothing and runs 2L + 1 ``run_with_iobinding`` and 2L kernel
    calls. Thread-safe for runs on different buffers (the kernels release the GIL).

    Raises FileNotFoundError for a folder without ``attention.npz``, ValueError for a folder whose
    pieces do not match it or caches that do not match the model.
    """

    def __init__(self, folder: str | Path, threads: int | None = None, capacity: int = 64):
        from posert import _C

        folder = Path(folder)
        meta_path = folder / "attention.npz"
        if not meta_path.exists():
            raise FileNotFoundError(f"split step model not found: {meta_path}")
        with np.load(meta_path) as meta:
            self.tables = [np.ascontiguousarray(t, np.float32) for t in meta["tables"]]
            self.scale, self.heads = float(meta["scale"]), int(meta["heads"])
            pieces, self.kind = int(meta["pieces"]), str(meta["kind"])
        self.layers = len(self.tables)
        if pieces != 2 * self.layers + 1:
            raise ValueError(f"{folder}: {pieces} pieces for {self.layers} blocks (expected {2 * self.layers + 1})")
        self.segments = [BoundStep(create_session(folder / f"segment_{i}.onnx", threads), capacity)
                         for i in range(pieces)]
        self._graphs = [seg.ort_session for seg in self.segments]
        self.first_inputs = self.segments[0].input_names
        self.input_names = [*self.first_inputs, "lag", *(f"cache_{i}" for i in range(2 * self.layers))]
        C = self.segments[0].ort_session.get_outputs()[0].shape[-1]
        M = self.tables[0].shape[1] - 2
        #: per-stream (2L, 17, heads, M, C/heads), as :class:`OrtBackend` reports for a single graph
        self.cache_shape = (2 * self.layers, 17, self.heads, M, C // self.heads)
        self.capacity = capacity
        self._spatial, self._cached = _C.spatial_attention, _C.cached_attention
        self._plans: OrderedDict = OrderedDict()  # ids of the input arrays → plan
        self._lock = threading.Lock()

    def _plan(self, arrays: list[np.ndarray]):
        """The cached plan of these input objects: (chain: the piece bindings interleaved with the
        cores' argument tuples, output array, kv array, the keyed arrays, the pieces' binding
        entries — held so that a binding evicted from its :class:`BoundStep` keeps its arrays
        alive). Arrays that are not C-contiguous get a one-call plan on copies."""
        ids = tuple(map(id, arrays))
        with self._lock:
            plan = self._plans.get(ids)
            if plan is not None:
                self._plans.move_to_end(ids)
                return plan
        n0 = len(self.first_inputs)
        if not all(a.flags.c_contiguous for a in arrays):
            arrays = [np.ascontiguousarray(a) for a in arrays]
            ids = None
        first, lag, caches = arrays[:n0], arrays[n0], arrays[n0 + 1:]
        if len(caches) != 2 * self.layers:
            raise ValueError(f"expected {2 * self.layers} caches, got {len(caches)}")
        if caches[0].shape[1:] != self.cache_shape[1:]:
            raise ValueError(f"caches of shape {caches[0].shape[1:]} do not match the model's {self.cache_shape[1:]}")
        B, J, H, M, D = caches[0].shape
        kv = np.empty((2 * self.layers, B, J, H, D), np.float32)
        att = [np.empty((B, J, H * D), np.float32) for _ in range(2)]  # spatial, temporal core outputs
        att_tokens = [a.reshape(B * J, H * D) for a in att]  # the same memory as the pieces' (N, C) input
        chain, entries = [], []
        entry = self.segments[0].entry(list(first))
        entries.append(entry)
        outs = entry[1]
        cond = outs[2] if len(outs) > 2 else None
        chain.append(entry[0])
        for k in range(2 * self.layers):
            x, qkv = outs[0], outs[1].reshape(B, J, -1)  # (N, 3C) → (B, 17, 3C) view for the core
            i, temporal = k // 2, k % 2 == 1
            if temporal:
                chain.append((self._cached, (qkv, caches[2 * i], caches[2 * i + 1], lag, self.tables[i], self.scale,
                                             att[1], kv[2 * i], kv[2 * i + 1])))
            else:
                chain.append((self._spatial, (qkv, H, self.scale, att[0])))
            named = {"x_prev": x, "a_prev": att_tokens[1 if temporal else 0], "cond": cond}
            entry = self.segments[k + 1].entry([named[n] for n in self.segments[k + 1].input_names])
            entries.append(entry)
            outs = entry[1]
            chain.append(entry[0])
        plan = (chain, outs[0], kv, arrays, entries)  # arrays: keeps the keyed objects (and their ids) alive
        if ids is None:
            return plan
        with self._lock:
            self._plans[ids] = plan
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        chain, out, kv = self._plan([feeds[n] for n in self.input_names])[:3]
        graphs = self._graphs
        graphs[0].run_with_iobinding(chain[0])
        for k in range(1, len(graphs)):
            core, args = chain[2 * k - 1]
            core(*args)
            graphs[k].run_with_iobinding(chain[2 * k])
        return [out, kv]


class OrtBackend:
    """The lifter step and one denoiser step as ONNX Runtime sessions on the CPU execution
    provider (graphs from :mod:`posert.export.onnx`), run through cached I/O bindings
    (:class:`BoundStep`): cache arrays and the other inputs are read in place and outputs land in
    preallocated arrays, valid until the next call on the same input buffers. ``lift_step`` and
    ``denoise_step`` may be called from two threads at once on different buffers (ORT sessions
    are thread-safe for runs), which :class:`~posert.runtime.pipeline.Pipeline` uses to run two
    shards of a tick concurrently."""

    name = "onnxruntime"
    capabilities = Capabilities(kind="step", concurrent=True, precisions=("fp32", "fp16", "int8"))
    cache_dtype = np.dtype(np.float32)

    def __init__(self, lifter_onnx: str | Path, denoiser_onnx: str | Path, window: int, schedule: Schedule,
                 threads: int | None = None, cnd: CND | None = None):
        self._lift, self._den = self._step(lifter_onnx, threads), self._step(denoiser_onnx, threads)
        for step, path, want, other in ((self._lift, lifter_onnx, "lifter", "denoiser"),
                                        (self._den, denoiser_onnx, "denoiser", "lifter")):
            inputs = set(step.first_inputs if isinstance(step, SplitStep) else step.input_names)
            if ("x_t" in inputs) != (want == "denoiser"):
                raise ValueError(f"{path} is a {other} step model, given as the {want}'s")
        self.split = isinstance(self._lift, SplitStep)
        self.window, self.schedule, self.cnd = window, schedule, cnd
        self.lifter_cache_shape = self._lift.cache_shape
        self.denoiser_cache_shape = self._den.cache_shape
        self._t: dict[tuple[int, float], np.ndarray] = {}  # read-only t inputs, shared by threads

    @staticmethod
    def _step(path: str | Path, threads: int | None):
        """A :class:`SplitStep` for a split-model folder, else a :class:`BoundStep` of one ONNX file."""
        if Path(path).is_dir():
            return SplitStep(path, threads)
        step = BoundStep(create_session(path, threads))
        caches = [i for i in step.ort_session.get_inputs() if i.name.startswith("cache_")]
        if not caches or not {"inp", "lag"} <= set(step.input_names):
            raise ValueError(f"not a streaming step model: no inp, lag and cache_* inputs ({path})")
        step.cache_shape = (len(caches), *caches[0].shape[1:])
        return step

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, threads: int | None = None,
                         precision: str = "fp32", attention: str = "auto"):
        """Export (once, cached) and load the ONNX step models of the given or default checkpoints
        at ``precision`` (fp32 | fp16 | int8; see :func:`posert.export.precision.precision_onnx`).

        ``attention``: ``kernel`` runs the split step graphs with the C++ attention cores
        (:class:`SplitStep`, fp32 only), ``graph`` the single step graphs, ``auto`` (default)
        ``kernel`` at fp32 and ``graph`` otherwise. Raises ValueError for other values or for
        ``kernel`` at fp16/int8.
        """
        from posert.export.onnx import cached_split_onnx
        from posert.export.precision import precision_onnx

        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if attention == "kernel" and precision != "fp32":
            raise ValueError("the split step models (attention='kernel') are fp32 only")
        lcfg = _load(lifter, "lifter.pt", "lifter")["config"]
        rckpt = _load(refiner, "refiner.pt", "refiner")
        dcfg = rckpt["config"]
        if not (lcfg["causal"] and dcfg["causal"]):
            raise ValueError("the streaming runtime needs causal models (an offline checkpoint was given)")
        if precision == "fp32" and attention != "graph":
            lifter_onnx, den_onnx = cached_split_onnx(lifter, refiner)
        else:
            lifter_onnx, den_onnx = precision_onnx(precision, lifter, refiner)
        cnd = CND.from_state(rckpt["cnd"])
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
