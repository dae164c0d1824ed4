"""TensorRT backend on a GPU: engines from the shipped step models, outputs against ONNX
Runtime on real streamed frames, the engine cache, the streaming pipeline end to end.

Runs only where ``tensorrt`` (≥ 10) and ``cuda-python`` import and a CUDA device exists;
skipped with the reason everywhere else (this project's CPU machines and CI).
"""

from __future__ import annotations

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack or NVIDIA's pip index; see README)")
pytest.importorskip("cuda", reason="cuda-python is not installed (pip install posert[gpu])")

from posert.calibration.windows import calibration_windows, record_step_inputs  # noqa: E402
from posert.runtime.backends.onnxruntime import OrtBackend, create_session  # noqa: E402
from posert.runtime.backends.tensorrt import TrtBackend, build_engines, device_info  # noqa: E402
from posert.runtime.engine_cache import EngineCacheError  # noqa: E402

try:
    device_info()
except RuntimeError as e:  # TensorRT installed, but no usable GPU
    pytest.skip(f"no CUDA device: {e}", allow_module_level=True)


@pytest.fixture(scope="module")
def feeds(motion, cameras):
    windows = calibration_windows({"cmu": motion}, cameras, n=8, length=32, seed=2)
    return record_step_inputs(OrtBackend.from_checkpoints(), windows, stride=8, batch=8)


@pytest.mark.parametrize("precision,tol_m", [("fp32", 1e-3), ("fp16", 5e-3)])
def test_trt_step_matches_onnxruntime(precision, tol_m, feeds):
    from posert.export.precision import precision_onnx

    backend = TrtBackend.from_checkpoints(precision=precision, max_batch=16)
    paths = precision_onnx(precision)
    lifter_feeds, den_feeds = feeds
    ref_l, ref_d = create_session(paths[0]), create_session(paths[1])
    for f in lifter_feeds:
        n = sum(k.startswith("cache_") for k in f)
        got = backend.lift_step(f["inp"], f["lag"], [f[f"cache_{i}"] for i in range(n)])
        for g, w in zip(got, ref_l.run(None, f)):
            assert np.abs(g - w).max() < tol_m
    for f in den_feeds:
        n = sum(k.startswith("cache_") for k in f)
        got = backend.denoise_step(f["inp"], f["x_t"], float(f["t"][0]), f["lag"], [f[f"cache_{i}"] for i in range(n)])
        for g, w in zip(got, ref_d.run(None, f)):
            assert np.abs(g - w).max() < tol_m


def test_trt_pipeline_equals_ort_pipeline_on_real_motion(real_views, cameras):
    from posert.runtime import Pipeline

    px, _ = real_views
    pipes = [Pipeline(backend="tensorrt", max_streams=4), Pipeline(backend="onnxruntime", max_streams=4)]
    outs = []
    for pipe in pipes:
        for c in range(len(cameras)):
            pipe.add_stream(c, cameras[c].width, cameras[c].height)
        poses = []
        for t in range(60):
            pipe.push_many(list(range(len(cameras))), px[:, t])
            poses.append(pipe.tick().refined)
        outs.append(np.stack(poses))
    assert np.abs(outs[0] - outs[1]).max() < 1.0  # mm


def test_engine_cache_reuses_and_rejects_a_corrupt_engine():
    from posert.export.precision import precision_onnx

    paths = precision_onnx("fp32")
    first = build_engines(paths, "fp32", max_batch=16)
    mtime = first["lifter"].stat().st_mtime_ns
    again = build_engines(paths, "fp32", max_batch=16)
    assert again == first and first["lifter"].stat().st_mtime_ns == mtime  # cached, not rebuilt
    data = bytearray(first["lifter"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    first["lifter"].write_bytes(bytes(data))
    with pytest.raises(EngineCacheError, match="corrupt"):
        TrtBackend.from_checkpoints(precision="fp32", max_batch=16)
    first["lifter"].unlink()  # a deleted engine is simply rebuilt
    assert TrtBackend.from_checkpoints(precision="fp32", max_batch=16).lifter.engine is not None


def test_trt_rejects_batch_above_profile(feeds):
    backend = TrtBackend.from_checkpoints(precision="fp32", max_batch=2)
    f = feeds[0][0]
    n = sum(k.startswith("cache_") for k in f)
    with pytest.raises(ValueError, match="max_batch"):
        backend.lift_step(f["inp"], f["lag"], [f[f"cache_{i}"] for i in range(n)])
