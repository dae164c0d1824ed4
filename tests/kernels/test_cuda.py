"""CUDA kernels equal their CPU twins. Runs only where a GPU and cuda-python are present."""

import numpy as np
import pytest

from posert import _C
from posert.models.diffusion import Schedule

cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed (extra 'gpu')")
if not _C.built_with_cuda() or cudart.cudaGetDeviceCount()[0] != cudart.cudaError_t.cudaSuccess:
    pytest.skip("no CUDA build or no GPU", allow_module_level=True)


def _check(res):
    err = res[0] if isinstance(res, tuple) else res
    assert err == cudart.cudaError_t.cudaSuccess, err
    return res[1] if isinstance(res, tuple) and len(res) > 1 else None


class Dev:
    """A device copy of a NumPy array (freed on close)."""

    def __init__(self, a: np.ndarray):
        self.a = np.ascontiguousarray(a)
        self.ptr = _check(cudart.cudaMalloc(max(self.a.nbytes, 1)))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart.cudaMemcpy(self.ptr, self.a.ctypes.data, self.a.nbytes, h2d))

    def get(self) -> np.ndarray:
        out = np.empty_like(self.a)
        _check(cudart.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return out

    def close(self):
        _check(cudart.cudaFree(self.ptr))


def test_ddim_cuda_equals_cpu(real_views):
    x = real_views[1][:, :300].astype(np.float32).copy()
    e = (0.05 * np.roll(x, 5, axis=1)).astype(np.float32)
    sched = Schedule(50, 2)
    for t, tp in sched.pairs():
        coef = sched.ddim_coefficients(t, tp)
        cpu = np.empty_like(x)
        _C.ddim_update(x, e, cpu, *coef)
        dx, de, do = Dev(x), Dev(e), Dev(np.zeros_like(x))
        _C._ddim_update_cuda(int(dx.ptr), int(de.ptr), int(do.ptr), x.size, *coef)
        _check(cudart.cudaDeviceSynchronize())
        np.testing.assert_array_equal(do.get(), cpu)
        for d in (dx, de, do):
            d.close()


def test_kv_push_cuda_equals_cpu():
    rng = np.random.default_rng(2)
    G, S, R, M, D, B = 8, 6, 68, 9, 16, 5
    storage = rng.normal(size=(G, S, R, M, D)).astype(np.float32)
    d_storage = Dev(storage)
    for _ in range(10):
        fresh = rng.normal(size=(G, B, R, D)).astype(np.float32)
        rows = rng.choice(B, size=rng.integers(1, B + 1), replace=False).astype(np.int32)
        rows[rng.random(len(rows)) < 0.3] = -1  # idle rows of a padded batch write nothing
        pos = rng.integers(0, M, len(rows)).astype(np.int32)
        _C.kv_push(storage, fresh, rows, pos)
        df, dr, dp = Dev(fresh), Dev(rows), Dev(pos)
        _C._kv_push_cuda(int(d_storage.ptr), G, S, R, M, D, int(df.ptr), B, int(dr.ptr), int(dp.ptr), len(rows))
        _check(cudart.cudaDeviceSynchronize())
        np.testing.assert_array_equal(d_storage.get(), storage)
        for d in (df, dr, dp):
            d.close()
    first = S - B  # one shard: fresh holds the last B streams
    fresh = rng.normal(size=(G, B, R, D)).astype(np.float32)
    rows, pos = np.arange(first, S, dtype=np.int32)[::-1].copy(), rng.integers(0, M, B).astype(np.int32)
    _C.kv_push(storage, fresh, rows, pos, first)
    df, dr, dp = Dev(fresh), Dev(rows), Dev(pos)
    _C._kv_push_cuda(int(d_storage.ptr), G, S, R, M, D, int(df.ptr), B, int(dr.ptr), int(dp.ptr), len(rows), 0, first)
    _check(cudart.cudaDeviceSynchronize())
    np.testing.assert_array_equal(d_storage.get(), storage)
    for d in (df, dr, dp):
        d.close()
    d_storage.close()


@pytest.fixture(scope="module")
def torch_cpu_streams(real_views, mixed_streams):
    from posert.runtime import Pipeline
    from posert.runtime.backends.torch import TorchBackend

    return mixed_streams(Pipeline(backend=TorchBackend.from_checkpoints(), max_streams=8), real_views[0])


def _hopper() -> bool:
    import torch

    return torch.cuda.get_device_capability()[0] >= 9


@pytest.mark.parametrize("graphs,compile,fused,cluster",
                         [(False, False, False, 1), (True, False, False, 1), (True, True, False, 1),
                          (False, False, True, 1), (True, False, True, 1), (True, False, True, 8),
                          (True, False, True, 16)],
                         ids=["torch-eager", "torch-graph", "torch-graph+compile", "fused-eager", "fused-graph",
                              "fused-graph-cluster8", "fused-graph-cluster16"])
def test_cuda_backend_equals_torch_cpu(real_views, mixed_streams, torch_cpu_streams, graphs, compile, fused, cluster):
    """The whole tick on the GPU (the torch modules' kernels, eager, replayed as CUDA graphs and
    with torch.compile; the fused transformer_step kernel, eager and replayed) gives the CPU torch
    backend's poses within 1e-4 m on real streams whose due set and membership change from tick
    to tick (every bucket 1, 2, 4, 8 is captured and replayed)."""
    from posert.runtime import Pipeline
    from posert.runtime.backends.cuda import CudaBackend

    if cluster > 1 and not _hopper():
        pytest.skip("thread-block clusters need sm_90+")
    be = CudaBackend.from_checkpoints(device="cuda", graphs=graphs, compile=compile, fused=fused, cluster=cluster)
    got = mixed_streams(Pipeline(backend=be, max_streams=8), real_views[0])
    if graphs:
        assert sorted(be._graph) == [1, 2, 4, 8]
    for s, (ref, ref_lift) in torch_cpu_streams.items():
        np.testing.assert_allclose(got[s][1], ref_lift, atol=0.1)  # mm
        np.testing.assert_allclose(got[s][0], ref, atol=0.1)


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "fused"])
def test_cuda_graph_replay_equals_eager(real_views, mixed_streams, fused):
    """Replaying the captured graphs runs the same kernels on the same data as the eager chain."""
    from posert.runtime import Pipeline
    from posert.runtime.backends.cuda import CudaBackend

    runs = [mixed_streams(Pipeline(backend=CudaBackend.from_checkpoints(graphs=g, fused=fused), max_streams=8),
                          real_views[0])
            for g in (False, True)]
    for s in runs[0]:
        np.testing.assert_array_equal(runs[1][s][0], runs[0][s][0])


@pytest.mark.parametrize("cluster,threads", [(1, 512), (8, 256), (8, 512), (16, 256)])
def test_transformer_step_cuda_equals_cpu_twin(real_views, models, cluster, threads):
    """The fused step kernel (one block per row, or a thread-block cluster per row) against its
    C++ twin on a real stream (batch 3, rings wrapping, one row idle at some ticks): poses, DDIM
    state and every cache entry agree to float rounding (FMA and reduction order differ), and idle
    rows write no cache."""
    import torch

    if cluster > 1 and not _hopper():
        pytest.skip("thread-block clusters need sm_90+")
    from posert.data.dataset import make_input
    from posert.models.diffusion import Schedule
    from posert.runtime.backends.packing import pack_step, step_cond, step_dims

    lifter, den = models
    px = real_views[0]
    B, T = 3, 40
    inp_seq = np.stack([make_input(px[c, :T], np.ones((T, 17), np.float32), 1000, 1000) for c in range(B)], 1)
    inp_seq = inp_seq.astype(np.float32)
    sched = Schedule(den.cfg.T, den.cfg.K)
    t, tp = sched.pairs()[0]
    coef = np.array(sched.ddim_coefficients(t, tp), np.float32)
    for model in (lifter, den):
        dims, W = step_dims(model), pack_step(model)
        cs = model.cache_shape
        cache = np.random.default_rng(0).normal(size=(cs[0], B + 1, *cs[1:])).astype(np.float32)
        d_cache, d_W = torch.from_numpy(cache).cuda(), torch.from_numpy(W).cuda()
        d_P = torch.from_numpy(_C.transformer_step_cluster_pack(W, dims, cluster)).cuda() if cluster > 1 else None
        cond = step_cond(model, t) if dims[-1] else None
        d_cond = torch.from_numpy(cond).cuda() if cond is not None else None
        x = np.zeros((B, 17, 3), np.float32)
        d_x = torch.from_numpy(x).cuda()
        worst = 0.0
        for k in range(T):
            count = np.full(B, k, np.int64)
            rows = np.arange(B, dtype=np.int32)
            if k % 7 == 3:
                rows[1] = -1
            inp = inp_seq[k]
            x[...] = 0.2 * np.sin(np.arange(B * 51).reshape(B, 17, 3) + k)  # the denoiser's x_t (read), same on both
            x[:, 0] = 0.0
            d_x.copy_(torch.from_numpy(x))
            d_inp, d_count, d_rows = (torch.from_numpy(a).cuda() for a in (inp, count, rows))
            _C.transformer_step(W, dims, inp, x, None, cond, count, rows, cache, coef if cond is not None else None)
            _C._transformer_step_cuda(dims, d_W.data_ptr(), B, d_inp.data_ptr(), d_x.data_ptr(), 0,
                                     d_cond.data_ptr() if cond is not None else 0, d_count.data_ptr(),
                                     d_rows.data_ptr(), d_cache.data_ptr(), B + 1, *(coef if cond is not None else
                                                                                       (0, 0, 0, 0)),
                                     threads=threads, cluster=cluster,
                                     packed=d_P.data_ptr() if d_P is not None else 0)
            torch.cuda.synchronize()
            worst = max(worst, float(np.abs(d_x.cpu().numpy() - x).max()))
            np.testing.assert_allclose(d_cache.cpu().numpy(), cache, atol=1e-4)
        assert worst < 1e-5, worst  # metres
        assert np.abs(x).max() > 0.05  # real poses, not zeros


def test_transformer_step_cuda_rejects_a_cluster_too_small(models):
    """A cluster whose weight slices do not fit in one block's shared memory (the lifter split over
    2 blocks: ~0.3 MB each) raises a clear error instead of launching; so does a cluster launched
    without its packed weights, or an unknown size."""
    import torch

    from posert.runtime.backends.packing import pack_step, step_dims

    lifter, _ = models
    dims, W = step_dims(lifter), torch.from_numpy(pack_step(lifter)).cuda()
    cs = lifter.cache_shape
    cache = torch.zeros((cs[0], 1, *cs[1:]), device="cuda")
    inp, x = torch.zeros((1, 17, 3), device="cuda"), torch.zeros((1, 17, 3), device="cuda")
    count, rows = torch.zeros(1, dtype=torch.int64, device="cuda"), torch.zeros(1, dtype=torch.int32, device="cuda")
    P2 = torch.from_numpy(_C.transformer_step_cluster_pack(W.cpu().numpy(), dims, 2)).cuda()
    with pytest.raises(RuntimeError, match="shared memory|compute capability"):
        _C._transformer_step_cuda(dims, W.data_ptr(), 1, inp.data_ptr(), x.data_ptr(), 0, 0, count.data_ptr(),
                                 rows.data_ptr(), cache.data_ptr(), 1, cluster=2, packed=P2.data_ptr())
    with pytest.raises(ValueError, match="packed"):  # a cluster without its packed weights
        _C._transformer_step_cuda(dims, W.data_ptr(), 1, inp.data_ptr(), x.data_ptr(), 0, 0, count.data_ptr(),
                                 rows.data_ptr(), cache.data_ptr(), 1, cluster=8)
    with pytest.raises(ValueError, match="cluster"):
        _C._transformer_step_cuda(dims, W.data_ptr(), 1, inp.data_ptr(), x.data_ptr(), 0, 0, count.data_ptr(),
                                 rows.data_ptr(), cache.data_ptr(), 1, cluster=3)
