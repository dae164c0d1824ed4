"""posert._C's key/value ring-cache push and fused DDIM update against NumPy, and the CUDA entry
points without a GPU."""

import numpy as np
import pytest

from posert import _C
from posert.models.diffusion import Schedule


def ddim_numpy(x, e, a, b, ap, bp):
    """Eq. 9 in float32 NumPy, the same operation order as the kernel."""
    a, b, ap, bp = (np.float32(v) for v in (a, b, ap, bp))
    x0 = (x - b * e) / (a + b)
    return (ap + bp) * x0 + bp * e


def test_ddim_kernel_bit_exact_on_random_and_real(real_views):
    sched = Schedule(50, 2)
    rng = np.random.default_rng(1)
    real = real_views[1][:, :200]  # (C, T, 17, 3) metres
    cases = [(rng.normal(size=(64, 27, 17, 3)).astype(np.float32), rng.normal(size=(64, 27, 17, 3)).astype(np.float32)),
             (real.copy(), (0.05 * np.roll(real, 7, axis=1)).astype(np.float32))]
    for x, e in cases:
        for t, tp in sched.pairs():
            coef = sched.ddim_coefficients(t, tp)
            out = np.empty_like(x)
            _C.ddim_update(x, e, out, *coef)
            np.testing.assert_array_equal(out, ddim_numpy(x, e, *coef))
            inplace = x.copy()
            _C.ddim_update(inplace, e, inplace, *coef)
            np.testing.assert_array_equal(inplace, out)


def test_cuda_entry_points_fail_clearly_without_gpu():
    if not _C.built_with_cuda():
        with pytest.raises(RuntimeError, match="without CUDA"):
            _C._ddim_update_cuda(1, 1, 1, 1, 1.0, 0.0, 1.0, 0.0)
        return
    try:
        from cuda.bindings import runtime as cudart

        has_gpu = cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaSuccess
    except ImportError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: see test_cuda_kernels_equal_cpu_twins")
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _C._ddim_update_cuda(1, 1, 1, 1, 1.0, 0.0, 1.0, 0.0)
    dims = (17, 64, 4, 4, 7, 3, 128, 0.25, 1e-5, 0, 0)
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _C._transformer_step_cuda(dims, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, cluster=8)


def test_kv_push_matches_numpy_and_rejects_bad_rows():
    """Key/value ring-cache write: storage[:, rows[k], :, pos[k]] = fresh[:, rows[k]] only."""
    rng = np.random.default_rng(1)
    G, S, R, M, D, B = 6, 5, 68, 7, 16, 4
    storage = rng.normal(size=(G, S, R, M, D)).astype(np.float32)
    ref = storage.copy()
    for _ in range(20):
        fresh = rng.normal(size=(G, B, R, D)).astype(np.float32)
        rows = rng.choice(B, size=rng.integers(1, B + 1), replace=False).astype(np.int32)
        pos = rng.integers(0, M, len(rows)).astype(np.int32)
        _C.kv_push(storage, fresh, rows, pos)
        for r, p in zip(rows, pos):
            ref[:, r, :, p] = fresh[:, r]
        np.testing.assert_array_equal(storage, ref)  # stream 4 (≥ B) and unlisted rows untouched
    with pytest.raises(IndexError):
        _C.kv_push(storage, fresh, np.array([B], np.int32), np.array([0], np.int32))
    with pytest.raises(IndexError):
        _C.kv_push(storage, fresh, np.array([0], np.int32), np.array([M], np.int32))
    with pytest.raises(ValueError, match="shape"):
        _C.kv_push(storage, fresh[:, :, :5], np.array([0], np.int32), np.array([0], np.int32))
    np.testing.assert_array_equal(storage, ref)


def test_kv_push_first_offset_writes_one_block_of_streams():
    """fresh holds streams first … first + B − 1 (one shard of a tick): storage[:, r] gets
    fresh[:, r − first]; rows outside the block are refused before anything is written."""
    rng = np.random.default_rng(3)
    G, S, R, M, D, B, first = 4, 9, 68, 7, 16, 3, 5
    storage = rng.normal(size=(G, S, R, M, D)).astype(np.float32)
    ref = storage.copy()
    fresh = rng.normal(size=(G, B, R, D)).astype(np.float32)
    rows, pos = np.array([7, 5], np.int32), np.array([6, 0], np.int32)
    _C.kv_push(storage, fresh, rows, pos, first)
    ref[:, 7, :, 6] = fresh[:, 2]
    ref[:, 5, :, 0] = fresh[:, 0]
    np.testing.assert_array_equal(storage, ref)
    for bad in (4, 8):  # below the block; past its end
        with pytest.raises(IndexError, match="out of range"):
            _C.kv_push(storage, fresh, np.array([6, bad], np.int32), np.array([0, 0], np.int32), first)
    np.testing.assert_array_equal(storage, ref)


def test_kv_push_negative_row_writes_nothing():
    """A padded batch (the CUDA-graph tick) marks idle rows −1: they write nothing, whatever their
    ring position, and the other rows are written as usual."""
    rng = np.random.default_rng(4)
    G, S, R, M, D = 4, 6, 68, 5, 16
    storage = rng.normal(size=(G, S, R, M, D)).astype(np.float32)
    ref = storage.copy()
    fresh = rng.normal(size=(G, S, R, D)).astype(np.float32)
    rows = np.array([0, -1, 2, -1, -1, 5], np.int32)
    pos = np.array([3, 99, 0, -7, 4, 1], np.int32)  # idle rows' positions are never read
    _C.kv_push(storage, fresh, rows, pos)
    for r, p in zip(rows, pos):
        if r >= 0:
            ref[:, r, :, p] = fresh[:, r]
    np.testing.assert_array_equal(storage, ref)
