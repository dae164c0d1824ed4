"""Inference backends of the incremental tick. Each exposes ``window`` (receptive field N),
``schedule``, ``cnd``, ``lifter_cache_shape`` and ``denoiser_cache_shape`` (per-stream
(2·layers, 17, heads, M, C/heads)), and

- ``lift_step(inp (B, 17, 3), lag (B, M) int64, caches) -> (x_T (B, 17, 3), kv (2L, B, 17, h, d))``
- ``denoise_step(inp, x_t (B, 17, 3), t: float, lag, caches) -> (ê (B, 17, 3), kv)``

with float32 arrays, poses root-relative in metres, ``caches`` a list of 2L arrays
(B, 17, heads, M, C/heads) read in place (see :mod:`posert.runtime.pipeline`). The returned
arrays may be buffers the backend owns and reuses (ONNX Runtime I/O bindings, TensorRT's pinned
outputs): they are valid until the next call on the same input buffers, so a caller copies what
it keeps.

A *fused* backend (``fused = True``: :class:`~posert.runtime.backends.native.NativeBackend`)
instead runs each step as one kernel that reads and writes the pipeline's caches in place:
``lift_fused`` and ``denoise_fused`` (see :mod:`.native`).

A *resident* backend (``resident = True``: :class:`~posert.runtime.backends.cuda.CudaBackend`)
keeps the caches on its device instead and runs whole ticks: ``allocate(max_streams, pairs,
coefs)`` once, then ``run(hi, due, inp, count) -> (x_0, x_T)`` per tick.

Heavy imports (onnxruntime, torch, tensorrt) happen inside each module, so importing the runtime
costs nothing until a backend is built.
"""

from __future__ import annotations

BACKENDS = ("auto", "native", "onnxruntime", "torch", "tensorrt", "cuda")


def create_backend(name: str, lifter: str | None = None, refiner: str | None = None, threads: int | None = None,
                   precision: str = "fp32", attention: str = "auto"):
    """Build a backend by name: ``auto`` (default: ``native`` at fp32 with ``attention`` auto, else
    ``onnxruntime``), ``native`` (CPU, posert's fused C++ step kernel; FP32; :mod:`.native`),
    ``onnxruntime`` (CPU; FP32, FP16, Q/DQ INT8), ``torch`` (reference, FP32 only),
    ``tensorrt`` (GPU engines built and cached from the ONNX models of ``precision``) or ``cuda``
    (torch on the GPU, the whole tick captured as one CUDA graph; FP32; :mod:`.cuda`).

    ``attention`` (``auto`` | ``kernel`` | ``graph``) chooses how ONNX Runtime runs the attention
    cores of a step (:meth:`OrtBackend.from_checkpoints`); other backends take ``auto`` only.

    Raises ValueError for an unknown name, a precision or attention mode the backend lacks,
    ImportError (with the reason) for ``tensorrt`` where TensorRT or cuda-python is not installed,
    RuntimeError for ``cuda`` without a usable GPU or without the CUDA build of ``posert._C``.
    """
    if name == "auto":
        name = "native" if precision == "fp32" and attention == "auto" else "onnxruntime"
    if name == "onnxruntime":
        from posert.runtime.backends.onnxruntime import OrtBackend

        return OrtBackend.from_checkpoints(lifter, refiner, threads=threads, precision=precision, attention=attention)
    if attention != "auto":
        raise ValueError(f"attention={attention!r} applies to the onnxruntime backend only")
    if name == "native":
        if precision != "fp32":
            raise ValueError("the native backend runs fp32 only (fp16/int8 on the CPU: the onnxruntime backend)")
        from posert.runtime.backends.native import NativeBackend

        return NativeBackend.from_checkpoints(lifter, refiner)
    if name == "torch":
        if precision != "fp32":
            raise ValueError("the torch reference backend runs fp32 only")
        from posert.runtime.backends.torch import TorchBackend

        return TorchBackend.from_checkpoints(lifter, refiner, threads=threads)
    if name == "cuda":
        if precision != "fp32":
            raise ValueError("the cuda backend runs fp32 only (fp16/int8 on the GPU: the tensorrt backend)")
        from posert.runtime.backends.cuda import CudaBackend

        return CudaBackend.from_checkpoints(lifter, refiner)
    if name == "tensorrt":
        from posert.runtime.backends.tensorrt import TrtBackend

        return TrtBackend.from_checkpoints(lifter, refiner, precision=precision)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
