"""The backends against each other on real streams: torch, ONNX Runtime (split and single graphs,
I/O bindings), native, the resident CUDA chain on the CPU."""

import numpy as np
import pytest
import torch

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.dataset import make_input
from posert.runtime import Pipeline
from posert.runtime.backends.torch import TorchBackend
from tests.helpers import assert_same_streams, run_streams, stream

#: Backend comparisons run without the bone depth (see :func:`tests.helpers.assert_same_streams`).
NO_BONE_DEPTH = PipelineConfig(correction=CorrectionConfig(bone_depth=False))


def test_torch_and_onnxruntime_backends_agree(ort_pipe, real_views):
    px = real_views[0][2]
    torch_pipe = Pipeline(backend=TorchBackend.from_checkpoints(), max_streams=2)
    a = stream(ort_pipe, px, frames=30)
    b = stream(torch_pipe, px, frames=30)
    np.testing.assert_allclose(np.stack([r.refined for r in a]), np.stack([r.refined for r in b]), atol=0.1)


def test_ort_bindings_read_inputs_in_place_and_reuse_outputs(ort_pipe, real_views, cameras):
    """The ORT backend runs through cached I/O bindings: a second call on the same buffers sees
    their new contents (the caches change every tick), writes into the same output arrays (no
    allocation), and equals a run on fresh copies; non-contiguous inputs fall back to a copy.
    Both ways of running the attention: the split step graphs with the C++ cores (default) and
    the single step graph (checked against a plain ``InferenceSession.run``)."""
    from posert.runtime.backends.onnxruntime import OrtBackend

    for be in (ort_pipe.backend, OrtBackend.from_checkpoints(attention="graph")):
        _check_bindings(be, real_views, cameras)


def _check_bindings(be, real_views, cameras):
    px = real_views[0]
    c = cameras[0]
    B, (G, J, h, M, d) = 3, be.lifter_cache_shape
    inp = np.stack([make_input(px[0, 10 * i], np.ones(17, np.float32), c.width, c.height) for i in range(B)])
    lag = np.full((B, M), M + 1, np.int64)
    caches = [np.zeros((B, J, h, M, d), np.float32) for _ in range(G)]
    pose1, kv1 = be.lift_step(inp, lag, caches)
    pose1 = pose1.copy()
    # one frame of history in slot 0, through the same buffers
    for g in range(G):
        caches[g][:, :, :, 0] = kv1[g]
    lag[:, 0] = 1
    inp[:] = np.stack([make_input(px[0, 10 * i + 1], np.ones(17, np.float32), c.width, c.height) for i in range(B)])
    pose2, kv2 = be.lift_step(inp, lag, caches)
    assert pose2 is be.lift_step(inp, lag, caches)[0]  # the binding's own output array, reused
    feeds = {"inp": inp, "lag": lag, **{f"cache_{g}": caches[g] for g in range(G)}}
    if be.split:
        ref_pose, ref_kv = (o.copy() for o in be._lift.run({k: v.copy() for k, v in feeds.items()}))
    else:
        ref_pose, ref_kv = be._lift.ort_session.run(None, feeds)
    np.testing.assert_array_equal(pose2, ref_pose)
    np.testing.assert_array_equal(kv2, ref_kv)
    assert np.abs(pose2 - pose1).max() > 1e-4  # the history changed the pose: inputs were re-read
    strided = np.stack([inp, inp], axis=1)[:, 0]  # same values, not C-contiguous
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(be.lift_step(strided, lag, caches)[0], ref_pose)


def test_split_attention_pipeline_equals_single_graph(ort_pipe, real_views):
    """The default ORT backend (split step graphs + C++ attention cores) and the single step
    graphs give the same lifted and refined poses on real streams with gaps (within 1e-3 mm)."""
    from posert.runtime.backends.onnxruntime import OrtBackend

    assert ort_pipe.backend.split
    px = real_views[0]
    kernel = run_streams(Pipeline(NO_BONE_DEPTH, backend=OrtBackend.from_checkpoints(attention="kernel"), max_streams=8,
                                  workers=1), px)
    graph = run_streams(Pipeline(NO_BONE_DEPTH, backend=OrtBackend.from_checkpoints(attention="graph"), max_streams=8,
                                 workers=1), px)
    for (ids_a, ref_a, lift_a), (ids_b, ref_b, lift_b) in zip(kernel, graph):
        assert ids_a == ids_b
        np.testing.assert_allclose(ref_a, ref_b, atol=1e-3)  # mm
        np.testing.assert_allclose(lift_a, lift_b, atol=1e-3)
    with pytest.raises(ValueError, match="fp32 only"):
        OrtBackend.from_checkpoints(attention="kernel", precision="fp16")
    with pytest.raises(ValueError, match="attention must be one of"):
        OrtBackend.from_checkpoints(attention="fused")


@pytest.mark.parametrize("fused", [False, True], ids=["torch-chain", "fused-step"])
def test_resident_backend_chain_equals_torch_backend(real_views, mixed_streams, fused):
    """The CUDA-graph backend's chain (device-resident caches, batches padded to a power of two
    with idle rows marked −1, lags and ring positions computed as tensor ops), run here on the CPU
    with the kernels' C++ twins, gives the torch backend's poses on real streams whose due set,
    highest slot and membership change from tick to tick: both as the torch modules' step with
    kv_push/ddim_update between them and as the fused transformer_step (one call per step)."""
    from posert.runtime.backends.cuda import CudaBackend

    be = CudaBackend.from_checkpoints(device="cpu", fused=fused)
    assert be.capabilities.kind == "resident" and not be.graphs
    got = mixed_streams(Pipeline(NO_BONE_DEPTH, backend=be, max_streams=8), real_views[0])
    ref = mixed_streams(Pipeline(NO_BONE_DEPTH, backend=TorchBackend.from_checkpoints(), max_streams=8),
                        real_views[0])
    assert_same_streams(got, ref)
    assert {be.bucket(h) for h in range(1, 9)} == {1, 2, 4, 8}
    assert be.bucket(5) == 8 and be.bucket(1) == 1
    with pytest.raises(ValueError, match="hypotheses"):
        Pipeline(PipelineConfig(refiner=RefinerConfig(hypotheses=2)), backend=be, max_streams=2)
    # thread-block clusters: off without a Hopper GPU; with one, only for batches that fit in 64 SMs
    assert be.cluster == 1
    if fused:
        be8 = CudaBackend.from_checkpoints(device="cpu", cluster=8)
        assert [be8.cluster_for(b) for b in (1, 4, 8, 16, 64)] == [8, 8, 8, 1, 1]
        with pytest.raises(ValueError, match="cluster"):
            CudaBackend.from_checkpoints(device="cpu", cluster=3)


def test_cuda_backend_without_gpu_raises_clearly():
    from posert.runtime.backends import create_backend

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/kernels/test_cuda.py covers the cuda backend")
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        create_backend(BackendConfig(name="cuda"))
    with pytest.raises(ValueError, match="fp32 only"):
        create_backend(BackendConfig(name="cuda", precision="fp16"))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kv", ["float32", "float16"])


def test_native_backend_equals_torch_backend(real_views, mixed_streams, workers, kv):
    """The native backend (each step one call of the fast fused C++ kernel, caches written in place
    by the kernel) gives the torch backend's lifted and refined poses on real streams whose due
    set, highest slot and membership change from tick to tick, in one batch and in two shards:
    to float rounding (2e-3 mm) with float32 caches, within 0.2 mm with the default float16 ones
    (0.11 mm measured)."""
    from posert.runtime.backends.native import NativeBackend

    cfg = PipelineConfig(backend=BackendConfig(min_shard=1), correction=CorrectionConfig(bone_depth=False))
    pipe = Pipeline(cfg, backend=NativeBackend.from_checkpoints(kv_dtype=kv), max_streams=8, workers=workers)
    assert pipe.workers == workers and pipe.backend.capabilities.kind == "fused" and pipe.cache_dtype == np.dtype(kv)
    got = mixed_streams(pipe, real_views[0])
    pipe.close()
    ref = mixed_streams(Pipeline(NO_BONE_DEPTH, backend=TorchBackend.from_checkpoints(), max_streams=8),
                        real_views[0])
    assert_same_streams(got, ref, atol=2e-3 if kv == "float32" else 0.2)
    if kv == "float16":  # the half caches do move the poses, by rounding only
        assert max(np.abs(got[s][0] - ref[s][0]).max() for s in ref) > 1e-3


def test_native_backend_hypotheses_and_default(real_views):
    """H = 2 hypotheses on the native backend with float32 caches (H denoiser rows per stream, each
    with its own caches) equal the ONNX Runtime backend's with the same seed; the default backend
    is native at fp32 (with float16 caches) and ONNX Runtime at int8/fp16; native refuses other
    precisions and cache types."""
    from posert.runtime.backends import create_backend
    from posert.runtime.backends.native import NativeBackend

    px = real_views[0]
    native = NativeBackend.from_checkpoints(kv_dtype="float32")
    cfg = PipelineConfig(refiner=RefinerConfig(hypotheses=2, seed=3), correction=CorrectionConfig(bone_depth=False))
    a = run_streams(Pipeline(cfg, backend=native, max_streams=8), px, ticks=20)
    b = run_streams(Pipeline(cfg, backend="onnxruntime", max_streams=8), px, ticks=20)
    for (ids_a, ref_a, lift_a), (ids_b, ref_b, lift_b) in zip(a, b, strict=True):
        assert ids_a == ids_b
        np.testing.assert_allclose(lift_a, lift_b, atol=1e-3)  # mm
        np.testing.assert_allclose(ref_a, ref_b, atol=1e-3)
    default = Pipeline(max_streams=1)
    assert type(default.backend).__name__ == "NativeBackend" and default.cache_dtype == np.float16
    with pytest.raises(ValueError, match="kv_dtype"):
        NativeBackend.from_checkpoints(kv_dtype="bfloat16")
    assert type(create_backend(BackendConfig(attention="graph"))).__name__ == "OrtBackend"
    with pytest.raises(ValueError, match="fp32 only"):
        create_backend(BackendConfig(name="native", precision="int8"))


def test_backends_declare_their_kind_and_are_checked_against_it():
    """A backend declares its kind (step, fused, resident) in ``capabilities``; the pipeline checks
    it against that kind's contract instead of probing for methods, and refuses an object that
    declares nothing or lacks what its kind needs, naming it."""
    from posert.runtime.backends.base import Capabilities, check_backend
    from posert.runtime.backends.native import NativeBackend

    torch_be = TorchBackend.from_checkpoints()
    assert check_backend(torch_be).kind == "step" and check_backend(NativeBackend.from_checkpoints()).kind == "fused"

    class Undeclared:
        pass

    class HalfStep:  # a step backend without its denoiser step
        capabilities = Capabilities(kind="step")
        name, window, schedule, cnd = "half", torch_be.window, torch_be.schedule, torch_be.cnd
        lifter_cache_shape, denoiser_cache_shape = torch_be.lifter_cache_shape, torch_be.denoiser_cache_shape
        cache_dtype = np.dtype(np.float32)
        lift_step = torch_be.lift_step

    with pytest.raises(TypeError, match="capabilities"):
        Pipeline(backend=Undeclared(), max_streams=1)
    with pytest.raises(TypeError, match="denoise_step"):
        Pipeline(backend=HalfStep(), max_streams=1)
