"""Inference backends of the streaming tick, one module each, imported lazily (importing the
runtime costs nothing until a backend is built). What a backend provides, in three kinds (step,
fused, resident), is in :mod:`posert.runtime.backends.base`."""

from __future__ import annotations

from posert.config import BACKENDS, BackendConfig


def create_backend(config: BackendConfig | None = None):
    """Build the backend ``config`` names (:class:`~posert.config.BackendConfig`; default: ``auto``,
    ``native`` at fp32 with ``attention`` auto, else ``onnxruntime``): ``native`` (CPU, posert's
    fused C++ step kernel; fp32), ``onnxruntime`` (CPU; fp32, fp16, Q/DQ int8), ``torch`` (the
    reference, fp32), ``tensorrt`` (GPU engines built and cached from the ONNX models of the
    precision) or ``cuda`` (the whole tick as one CUDA graph on the GPU; fp32).

    Raises ValueError for a precision or attention mode the backend lacks, MissingDependency
    (an ImportError naming the package) for ``tensorrt`` without TensorRT or cuda-python,
    BackendUnavailable (a RuntimeError) for ``cuda`` without a usable GPU or CUDA build of
    ``posert._C``.
    """
    c = config or BackendConfig()
    name = c.name
    if name == "auto":
        name = "native" if c.precision == "fp32" and c.attention == "auto" else "onnxruntime"
    if name == "onnxruntime":
        from posert.runtime.backends.onnxruntime import OrtBackend

        return OrtBackend.from_checkpoints(c.lifter, c.refiner, threads=c.threads, precision=c.precision,
                                           attention=c.attention)
    if c.attention != "auto":
        raise ValueError(f"attention={c.attention!r} applies to the onnxruntime backend only")
    if name == "native":
        if c.precision != "fp32":
            raise ValueError("the native backend runs fp32 only (fp16/int8 on the CPU: the onnxruntime backend)")
        from posert.runtime.backends.native import NativeBackend

        return NativeBackend.from_checkpoints(c.lifter, c.refiner)
    if name == "torch":
        if c.precision != "fp32":
            raise ValueError("the torch reference backend runs fp32 only")
        from posert.runtime.backends.torch import TorchBackend

        return TorchBackend.from_checkpoints(c.lifter, c.refiner, threads=c.threads)
    if name == "cuda":
        if c.precision != "fp32":
            raise ValueError("the cuda backend runs fp32 only (fp16/int8 on the GPU: the tensorrt backend)")
        from posert.runtime.backends.cuda import CudaBackend

        return CudaBackend.from_checkpoints(c.lifter, c.refiner)
    from posert.runtime.backends.tensorrt import TrtBackend  # the last of BACKENDS

    return TrtBackend.from_checkpoints(c.lifter, c.refiner, precision=c.precision)


__all__ = ["BACKENDS", "create_backend"]
