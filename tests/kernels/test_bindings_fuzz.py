"""Every posert._C entry point against malformed arguments: a clean Python exception or a correct
result, never a crash, an out-of-bounds access or a silent copy. Each case starts from valid
arguments and breaks one thing (a dtype, a shape, a stride, an index, a size, a dimension), so
the checks in front of every kernel are reached one by one. ``make sanitize`` runs this file
under AddressSanitizer and UndefinedBehaviorSanitizer."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posert import _C
from posert.config import CorrectionConfig
from posert.runtime.correction import CorrectionState
from posert.runtime.correction.stage import kernel_params
from posert.skeleton import FLIP_PERM, PARENTS

CLEAN = (ValueError, TypeError, IndexError, RuntimeError, OverflowError)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, object]
INDICES = [0, 1, -1, 2, 7, 2**31 - 1, 2**31, 2**62, 2**63 - 1, -(2**63)]


def _break(a: np.ndarray, how: str, rng: np.random.Generator):
    """``a`` with one thing wrong."""
    if how == "dtype":
        return a.astype(DTYPES[rng.integers(len(DTYPES))]) if a.size else a.astype(np.int8)
    if how == "shape":
        shape = list(a.shape) or [1]
        i = rng.integers(len(shape))
        shape[i] = max(0, shape[i] + int(rng.choice([-1, 1, 5])))
        return np.zeros(shape, a.dtype)
    if how == "ndim":
        return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)
    if how == "strides":
        return np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    return a


HOWS = ["dtype", "shape", "ndim", "strides", "readonly", "none"]


def _call(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except CLEAN:
        pass


@pytest.fixture(scope="module")
def step_args():
    """Valid arguments of ``_C.transformer_step`` for a small lifter-shaped step."""
    from posert.models.lifter import Lifter, LifterConfig
    from posert.runtime.backends.packing import pack_step, step_dims

    lifter = Lifter(LifterConfig(window=9, dim=16, depth=1, heads=2)).eval()
    dims, w = step_dims(lifter), pack_step(lifter)
    J, C, h, L, M = dims[:5]
    B, S = 2, 3
    return dict(weights=w, dims=dims, inp=np.zeros((B, J, 3), np.float32), x=np.zeros((B, J, 3), np.float32),
                x_T=None, cond=None, count=np.array([0, 5], np.int64), rows=np.array([0, 1], np.int32),
                cache=np.zeros((2 * L, S, J, h, M, C // h), np.float32), ddim=None)


@SETTINGS
@given(st.sampled_from(["weights", "inp", "x", "count", "rows", "cache"]), st.sampled_from(HOWS),
       st.sampled_from(INDICES), st.booleans(), st.integers(0, 2**32 - 1))
def test_transformer_step_refuses_what_it_cannot_run(step_args, name, how, row0, fast, seed):
    args = dict(step_args)
    args[name] = _break(args[name], how, np.random.default_rng(seed))
    _call(_C.transformer_step, **args, row0=row0, fast=fast)


@SETTINGS
@given(st.integers(0, 10), st.sampled_from(INDICES), st.sampled_from(INDICES))
def test_transformer_step_dims_and_cluster_pack(step_args, field, value, cluster):
    dims = list(step_args["dims"])
    dims[field] = value
    _call(_C.transformer_step, **{**step_args, "dims": tuple(dims)})
    _call(_C.transformer_step_cluster_pack, step_args["weights"], tuple(dims), cluster)
    _call(_C.transformer_step_cluster_pack, step_args["weights"], step_args["dims"], cluster)


@SETTINGS
@given(st.integers(0, 8), st.sampled_from(HOWS), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5),
       st.integers(-3, 12), st.integers(0, 2**32 - 1))
def test_attention_cores(which, how, B, H, M, lag_value, seed):
    rng = np.random.default_rng(seed)
    J, D = 3, 4
    args = [rng.normal(size=(B, J, 3 * H * D)).astype(np.float32), np.zeros((B, J, H, M, D), np.float32),
            np.zeros((B, J, H, M, D), np.float32), np.full((B, M), lag_value, np.int64),
            np.zeros((H, M + 2), np.float32), 0.5, np.zeros((B, J, H * D), np.float32),
            np.zeros((B, J, H, D), np.float32), np.zeros((B, J, H, D), np.float32)]
    if which != 5:
        args[which] = _break(args[which], how, rng)
    _call(_C.cached_attention, *args)
    _call(_C.spatial_attention, args[0], H if which != 1 else int(rng.integers(-2, 9)), 0.5, args[6])


@SETTINGS
@given(st.integers(0, 3), st.sampled_from(HOWS), st.sampled_from(INDICES), st.sampled_from(INDICES),
       st.sampled_from(INDICES), st.integers(0, 2**32 - 1))
def test_kv_push_and_ddim(which, how, row, pos, first, seed):
    rng = np.random.default_rng(seed)
    G, S, R, M, D, B = 2, 4, 3, 5, 2, 2
    args = [np.zeros((G, S, R, M, D), np.float32), np.ones((G, B, R, D), np.float32),
            np.array([row, 1], np.int32) if abs(row) < 2**31 else np.array([1, 1], np.int32),
            np.array([pos, 0], np.int32) if abs(pos) < 2**31 else np.array([0, 0], np.int32)]
    args[which] = _break(args[which], how, rng)
    _call(_C.kv_push, *args, first)
    x = np.zeros(7, np.float32)
    _call(_C.ddim_update, _break(x, how, rng), x, np.zeros(7, np.float32), 1.0, 0.5, 1.0, 0.1)


@SETTINGS
@given(st.integers(0, 4), st.sampled_from(HOWS), st.sampled_from(INDICES), st.integers(0, 2**32 - 1))
def test_prepare_frames(which, how, slot, seed):
    rng = np.random.default_rng(seed)
    B, J, S = 3, 17, 4
    args = [rng.uniform(0, 100, (B, J, 2)), rng.uniform(0, 1, (B, J)), np.full((S, 2), 100, np.float32),
            np.array([0, 1, slot if abs(slot) < 2**63 else 2], np.int64), np.zeros((B, J, 3), np.float32)]
    if which < 5:
        args[which] = _break(args[which], how, rng)
    _call(_C.prepare_frames, *args)


@SETTINGS
@given(st.sampled_from(["K", "px", "conf", "lateral", "bone_length", "noise_hist", "distance"]), st.sampled_from(HOWS),
       st.sampled_from(INDICES), st.sampled_from(INDICES), st.sampled_from(INDICES), st.integers(0, 2**32 - 1))
def test_correction_kernel(field, how, row, slot, count, seed):
    import dataclasses

    rng = np.random.default_rng(seed)
    state = CorrectionState.allocate(3)
    bad = dataclasses.replace(state, **{field: _break(getattr(state, field), how, rng)})
    params = kernel_params(CorrectionConfig())
    _call(_C.CorrectionKernel, bad, params, np.array(PARENTS, np.int64), np.array(FLIP_PERM, np.int64))
    kernel = _C.CorrectionKernel(state, params, np.array(PARENTS, np.int64), np.array(FLIP_PERM, np.int64))
    pose = rng.normal(0, 300, (2, 17, 3)).astype(np.float32)
    state.px[:] = rng.uniform(0, 1000, state.px.shape)
    state.conf[:] = 1.0
    for s in range(3):
        state.reset(s, np.array([[1000.0, 0, 500], [0, 1000, 500], [0, 0, 1]]), np.zeros(5))
    idx = [v if abs(v) < 2**62 else 0 for v in (row, slot, count)]
    _call(kernel.apply, pose, np.array([0, idx[0]], np.int64), np.array([1, idx[1]], np.int64),
          np.array([3, idx[2]], np.int64))


def test_cuda_entry_points_are_private_and_refuse_without_a_gpu():
    """The raw-pointer entry points are not part of the public module surface; without a GPU (or
    a CUDA build) they raise."""
    public = [n for n in dir(_C) if not n.startswith("_")]
    assert not [n for n in public if n.endswith("_cuda") and n != "built_with_cuda"]
    assert {"_ddim_update_cuda", "_kv_push_cuda", "_transformer_step_cuda"} <= set(dir(_C))
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/kernels/test_cuda.py covers these")
    with pytest.raises(RuntimeError, match="without CUDA|no usable GPU"):
        _C._ddim_update_cuda(1, 1, 1, 1, 1.0, 0.0, 1.0, 0.0)
