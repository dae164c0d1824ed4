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
        _C.ddim_update_cuda(int(dx.ptr), int(de.ptr), int(do.ptr), x.size, *coef)
        _check(cudart.cudaDeviceSynchronize())
        np.testing.assert_array_equal(do.get(), cpu)
        for d in (dx, de, do):
            d.close()


def test_ring_cuda_equals_cpu():
    rng = np.random.default_rng(0)
    S, N, F = 5, 9, 51
    storage, head, count = np.zeros((S, N, F), np.float32), np.zeros(S, np.int32), np.zeros(S, np.int32)
    d_storage, d_head, d_count = Dev(storage), Dev(head), Dev(count)
    for _ in range(25):
        slots = rng.choice(S, size=rng.integers(1, S + 1), replace=False).astype(np.int32)
        frames = rng.normal(size=(len(slots), F)).astype(np.float32)
        _C.ring_push(storage, head, count, slots, frames)
        ds, df = Dev(slots), Dev(frames)
        _C.ring_push_cuda(int(d_storage.ptr), int(d_head.ptr), int(d_count.ptr), S, N, F, int(ds.ptr), int(df.ptr),
                          len(slots))
        q = rng.permutation(S).astype(np.int32)
        cpu = np.empty((S, N, F), np.float32)
        _C.ring_gather(storage, head, count, q, cpu)
        dq, dout = Dev(q), Dev(np.zeros((S, N, F), np.float32))
        _C.ring_gather_cuda(int(d_storage.ptr), int(d_head.ptr), int(d_count.ptr), S, N, F, int(dq.ptr), S,
                            int(dout.ptr))
        _check(cudart.cudaDeviceSynchronize())
        np.testing.assert_array_equal(dout.get(), cpu)
        for d in (ds, df, dq, dout):
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
        _C.kv_push_cuda(int(d_storage.ptr), G, S, R, M, D, int(df.ptr), B, int(dr.ptr), int(dp.ptr), len(rows))
        _check(cudart.cudaDeviceSynchronize())
        np.testing.assert_array_equal(d_storage.get(), storage)
        for d in (df, dr, dp):
            d.close()
    first = S - B  # one shard: fresh holds the last B streams
    fresh = rng.normal(size=(G, B, R, D)).astype(np.float32)
    rows, pos = np.arange(first, S, dtype=np.int32)[::-1].copy(), rng.integers(0, M, B).astype(np.int32)
    _C.kv_push(storage, fresh, rows, pos, first)
    df, dr, dp = Dev(fresh), Dev(rows), Dev(pos)
    _C.kv_push_cuda(int(d_storage.ptr), G, S, R, M, D, int(df.ptr), B, int(dr.ptr), int(dp.ptr), len(rows), 0, first)
    _check(cudart.cudaDeviceSynchronize())
    np.testing.assert_array_equal(d_storage.get(), storage)
    for d in (df, dr, dp):
        d.close()
    d_storage.close()


@pytest.fixture(scope="module")
def torch_cpu_streams(real_views, mixed_streams):
    from posert.runtime import Pipeline
    from posert.runtime.backends.torch import TorchBackend

    return mixed_streams(Pipeline(TorchBackend.from_checkpoints(), max_streams=8), real_views[0])


@pytest.mark.parametrize("graphs,compile", [(False, False), (True, False), (True, True)],
                         ids=["eager", "graph", "graph+compile"])
def test_cuda_backend_equals_torch_cpu(real_views, mixed_streams, torch_cpu_streams, graphs, compile):
    """The whole tick on the GPU (eager, replayed as CUDA graphs, and with torch.compile) gives the
    CPU torch backend's poses within 1e-4 m on real streams whose due set and membership change
    from tick to tick (every bucket 1, 2, 4, 8 is captured and replayed)."""
    from posert.runtime import Pipeline
    from posert.runtime.backends.cuda import CudaBackend

    be = CudaBackend.from_checkpoints(device="cuda", graphs=graphs, compile=compile)
    got = mixed_streams(Pipeline(be, max_streams=8), real_views[0])
    if graphs:
        assert sorted(be._graph) == [1, 2, 4, 8]
    for s, (ref, ref_lift) in torch_cpu_streams.items():
        np.testing.assert_allclose(got[s][1], ref_lift, atol=0.1)  # mm
        np.testing.assert_allclose(got[s][0], ref, atol=0.1)


def test_cuda_graph_replay_equals_eager(real_views, mixed_streams):
    """Replaying the captured graphs runs the same kernels on the same data as the eager chain."""
    from posert.runtime import Pipeline
    from posert.runtime.backends.cuda import CudaBackend

    eager = mixed_streams(Pipeline(CudaBackend.from_checkpoints(graphs=False), max_streams=8), real_views[0])
    graph = mixed_streams(Pipeline(CudaBackend.from_checkpoints(graphs=True), max_streams=8), real_views[0])
    for s in eager:
        np.testing.assert_array_equal(graph[s][0], eager[s][0])
