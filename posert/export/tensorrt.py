"""TensorRT 10 engine building from the exported ONNX step models, in small composable steps
(the shape of Polygraphy's loaders): :func:`network_from_onnx` → :func:`create_config` →
:func:`build_serialized_engine`. Imports ``tensorrt`` lazily; raises ImportError with the reason
where it is missing.

Networks are built *strongly typed*: the precision is the one written in the ONNX model (FP32,
FP16 from :mod:`posert.export.fp16`, or Q/DQ INT8 from :mod:`posert.calibration`), so no
precision builder flags are set. This is TensorRT's recommended path for explicit
quantisation, and the only one TensorRT 11 keeps. One optimisation profile covers the batch
axis (1 … ``max_batch``); every other axis is static (checked by
:mod:`posert.export.trt_compat` before building).
"""

from __future__ import annotations

from pathlib import Path

from posert.errors import MissingDependency
from posert.export.trt_compat import assert_tensorrt_compatible


def import_tensorrt():
    """``import tensorrt`` (TensorRT ≥ 10), or ImportError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise MissingDependency("TensorRT is not installed: on Jetson it comes with JetPack (python3-libnvinfer), on "
                          "desktop GPUs `pip install tensorrt` from NVIDIA's index (see README)") from e
    if int(trt.__version__.split(".")[0]) < 10:
        raise MissingDependency("posert needs TensorRT ≥ 10 (execute_async_v3, set_tensor_address); "
                                f"found {trt.__version__}")
    return trt


def network_from_onnx(builder, onnx_path: str | Path, logger):
    """Parse ``onnx_path`` into a strongly typed network; returns (network, parser).

    Raises ValueError listing the parser's errors (with node names).
    """
    trt = import_tensorrt()
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ValueError(f"TensorRT cannot parse {onnx_path}:\n" + "\n".join(errors))
    return network, parser


def create_config(builder, network, max_batch: int, timing_cache: bytes = b"", opt_batch: int | None = None,
                  workspace_bytes: int = 1 << 30):
    """Builder config with one optimisation profile over the batch axis of every input
    (min 1, opt ``opt_batch`` (default min(8, max_batch)), max ``max_batch``), a workspace limit
    and the given serialized timing cache (empty: a new one).

    Raises ValueError if an input has a dynamic axis other than the batch.
    """
    trt = import_tensorrt()
    if max_batch < 1:
        raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
    opt = opt_batch or min(8, max_batch)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if any(d < 0 for d in shape[1:]):
            raise ValueError(f"input {t.name} has a dynamic axis besides the batch: {shape}")
        profile.set_shape(t.name, [1, *shape[1:]], [opt, *shape[1:]], [max_batch, *shape[1:]])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return config


def build_serialized_engine(onnx_path: str | Path, max_batch: int, timing_cache_path: str | Path | None = None,
                            log_level: str = "WARNING") -> bytes:
    """Build a serialized engine of ``onnx_path``; reads and updates the timing cache file.

    Raises TensorRTCompatibilityError (static check), ValueError (parser) or RuntimeError
    (the builder returned nothing; its log says why).
    """
    assert_tensorrt_compatible(onnx_path)
    trt = import_tensorrt()
    logger = trt.Logger(getattr(trt.Logger, log_level))
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(builder, onnx_path, logger)
    tc_path = Path(timing_cache_path) if timing_cache_path else None
    tc = tc_path.read_bytes() if tc_path and tc_path.exists() else b""
    config = create_config(builder, network, max_batch, tc)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path} (see the log above)")
    if tc_path is not None:
        tc_path.parent.mkdir(parents=True, exist_ok=True)
        tc_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
