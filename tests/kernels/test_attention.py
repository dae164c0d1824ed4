"""posert._C's attention cores against NumPy and torch, on random and real data."""

import numpy as np
import pytest
import torch

from posert import _C
from posert.runtime import Pipeline


def attention_numpy(qkv, cache_k, cache_v, lag, table, scale):
    """float64 reference of csrc/attention.h: softmax over the own frame and M cached frames."""
    B, J, H, M, D = cache_k.shape
    q, k, v = (qkv.astype(np.float64).reshape(B, J, 3, H, D)[:, :, i] for i in range(3))
    q = q * scale
    own = (q * k).sum(-1, keepdims=True) + table[None, None, :, :1]
    bias = np.stack([table[:, lag[b]] for b in range(B)])[:, None]  # (B, 1, H, M)
    past = np.einsum("bjhd,bjhmd->bjhm", q, cache_k) + bias
    s = np.concatenate([own, past], -1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = p[..., :1] * v + np.einsum("bjhm,bjhmd->bjhd", p[..., 1:], cache_v)
    return out.reshape(B, J, H * D), k, v


@pytest.fixture(params=["cpu", "baseline"])
def attention_body(request):
    """Run an attention-core test on the body this CPU selects (AVX2 + FMA on x86-64 that has it)
    and on the baseline body, forced: a machine with AVX2 checks both."""
    _C.set_attention_isa(request.param == "baseline")
    yield _C.attention_isa()
    _C.set_attention_isa(False)


def _attention_args(B, H, M, D, rng, empty=0):
    qkv = rng.standard_normal((B, 17, 3 * H * D)).astype(np.float32)
    ck, cv = (rng.standard_normal((B, 17, H, M, D)).astype(np.float32) for _ in range(2))
    lag = np.stack([rng.permutation(M) + 1 for _ in range(B)]).astype(np.int64)
    lag[:, :empty] = M + 1  # empty slots (stream start)
    table = np.concatenate([rng.standard_normal((H, M + 1)), np.full((H, 1), -1.0e4)], 1).astype(np.float32)
    return qkv, ck, cv, lag, table


@pytest.mark.parametrize("B,H,M,D,empty", [(1, 4, 7, 16, 0), (5, 4, 9, 16, 3), (3, 2, 4, 8, 4), (2, 3, 5, 20, 1),
                                                 (2, 4, 11, 16, 0), (2, 4, 3, 16, 1), (1, 4, 12, 16, 5)])
def test_cached_attention_matches_numpy_on_random(B, H, M, D, empty, attention_body):
    """Random inputs, the D = 16 vector path and the generic path, slots in any order, empty
    slots masked; out, k_new and v_new against a float64 NumPy evaluation."""
    qkv, ck, cv, lag, table = _attention_args(B, H, M, D, np.random.default_rng(B * 100 + M), empty)
    out, kn, vn = (np.empty((B, 17, H * D), np.float32), np.empty((B, 17, H, D), np.float32),
                   np.empty((B, 17, H, D), np.float32))
    _C.cached_attention(qkv, ck, cv, lag, table, D ** -0.5, out, kn, vn)
    ref, k, v = attention_numpy(qkv, ck, cv, lag, table, D ** -0.5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(kn, k.astype(np.float32))
    np.testing.assert_array_equal(vn, v.astype(np.float32))
    if empty == M:  # nothing cached: the frame attends to itself only
        np.testing.assert_allclose(out, v.reshape(B, 17, H * D), rtol=1e-6)


def spatial_numpy(qkv, heads, scale):
    """float64 reference of ``spatial_attention``: softmax attention over the J joints."""
    B, J, C3 = qkv.shape
    D = C3 // (3 * heads)
    q, k, v = (qkv.astype(np.float64).reshape(B, J, 3, heads, D)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    s = np.einsum("bhid,bhjd->bhij", q * scale, k)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, v).transpose(0, 2, 1, 3).reshape(B, J, heads * D)


@pytest.mark.parametrize("B,H,D", [(1, 4, 16), (6, 4, 16), (3, 2, 8), (2, 3, 20)])
def test_spatial_attention_matches_numpy_and_torch_on_random(B, H, D, attention_body):

    from posert.models.blocks import Attention

    qkv = np.random.default_rng(B * 10 + D).standard_normal((B, 17, 3 * H * D)).astype(np.float32) * 2
    out = np.empty((B, 17, H * D), np.float32)
    _C.spatial_attention(qkv, H, D ** -0.5, out)
    np.testing.assert_allclose(out, spatial_numpy(qkv, H, D ** -0.5), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the torch core the single step graph exports
        ref = Attention(H * D, H).core_flat(torch.from_numpy(qkv.reshape(B * 17, -1)), B).numpy()
    np.testing.assert_allclose(out.reshape(B * 17, -1), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 · heads"):
        _C.spatial_attention(qkv[:, :, :-1], H, 0.25, out)
    with pytest.raises(ValueError, match="out"):
        _C.spatial_attention(qkv, H, 0.25, out[:, :-1].copy())


def test_attention_cores_match_numpy_on_real_stream(real_views):
    """Every attention core the ORT backend runs while streaming real 2D (spatial cores on real
    features; cached cores on a wrapped ring of real keys and values; both models) equals the
    float64 NumPy evaluation."""
    from posert.runtime.backends import onnxruntime as ortb

    pipe = Pipeline(backend="onnxruntime", max_streams=2, workers=1)
    assert pipe.backend.split
    seen, spatial = [], []
    for step in (pipe.backend._lift, pipe.backend._den):
        def record(*args, real=step._cached):
            real(*args)
            seen.append([a.copy() if isinstance(a, np.ndarray) else a for a in args])

        def record_spatial(*args, real=step._spatial):
            real(*args)
            spatial.append([a.copy() if isinstance(a, np.ndarray) else a for a in args])
        step._cached, step._spatial = record, record_spatial
    pipe.add_stream("a", 1000, 1000)
    for t in range(30):  # past the lifter's and the denoiser's span: the rings wrap
        pipe.push("a", real_views[0][0, t], timestamp=t / 50)
        pipe.tick()
    assert isinstance(pipe.backend, ortb.OrtBackend) and len(seen) == len(spatial) == 30 * 10
    for qkv, heads, scale, out in spatial[-20:]:
        np.testing.assert_allclose(out, spatial_numpy(qkv, heads, scale), rtol=1e-5, atol=1e-5)
    for qkv, ck, cv, lag, table, scale, out, kn, vn in seen[-20:]:
        ref, k, v = attention_numpy(qkv, ck, cv, lag, table, scale)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(kn, k.astype(np.float32))
        np.testing.assert_array_equal(vn, v.astype(np.float32))
    assert np.abs(seen[-1][1]).max() > 0  # the caches held real keys


def test_cached_attention_rejects_bad_arguments():
    qkv, ck, cv, lag, table = _attention_args(2, 4, 7, 16, np.random.default_rng(0))
    out, kn = np.empty((2, 17, 64), np.float32), np.empty((2, 17, 4, 16), np.float32)
    bad = lag.copy()
    bad[1, 3] = 0
    with pytest.raises(IndexError, match="lag 0 out of range"):
        _C.cached_attention(qkv, ck, cv, bad, table, 0.25, out, kn, kn.copy())
    with pytest.raises(ValueError, match="table"):
        _C.cached_attention(qkv, ck, cv, lag, table[:, :-1], 0.25, out, kn, kn.copy())
    with pytest.raises(ValueError, match="qkv"):
        _C.cached_attention(qkv[:, :, :-1], ck, cv, lag, table, 0.25, out, kn, kn.copy())
    with pytest.raises(TypeError, match="float32"):
        _C.cached_attention(qkv, ck, cv, lag, table, 0.25, np.empty(out.shape), kn, kn.copy())
