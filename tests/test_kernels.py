"""posert._C kernels against NumPy references, on random and real data."""

import numpy as np
import pytest

from posert import _C
from posert.data.dataset import make_input
from posert.models.diffusion import Schedule


def ring_reference(frames_per_stream: list[np.ndarray], N: int) -> np.ndarray:
    """Last N frames of each stream, edge-padded with the oldest kept frame; zeros if empty."""
    out = []
    for frames in frames_per_stream:
        if len(frames) == 0:
            out.append(np.zeros((N, *frames.shape[1:]), np.float32))
            continue
        last = frames[-N:]
        pad = np.repeat(last[:1], N - len(last), axis=0)
        out.append(np.concatenate([pad, last]))
    return np.stack(out)


@pytest.mark.parametrize("N", [1, 5, 27])
def test_ring_buffer_matches_numpy_on_random_pushes(N):
    rng = np.random.default_rng(N)
    S, J, C = 6, 17, 3
    ring = _C.RingBuffer(S, N, J, C)
    history = [np.zeros((0, J, C), np.float32) for _ in range(S)]
    for _ in range(3 * N + 4):
        slots = rng.choice(S, size=rng.integers(1, S + 1), replace=False).astype(np.int32)
        frames = rng.normal(size=(len(slots), J, C)).astype(np.float32)
        ring.push(slots, frames)
        for s, f in zip(slots, frames):
            history[s] = np.concatenate([history[s], f[None]])
        query = rng.permutation(S).astype(np.int32)
        out = np.full((S, N, J, C), np.nan, np.float32)
        ring.gather(query, out)
        np.testing.assert_array_equal(out, ring_reference([history[q] for q in query], N))
    assert [ring.count(s) for s in range(S)] == [min(len(h), N) for h in history]


def test_ring_buffer_real_keypoints_and_edge_padding(real_views, cameras):
    px = real_views[0]
    N, S = 27, 2
    ring = _C.RingBuffer(S, N, 17, 3)
    frames = np.stack([make_input(px[c, :40], np.ones((40, 17), np.float32), 1000, 1000) for c in range(S)])
    out = np.empty((S, N, 17, 3), np.float32)
    for t in range(40):
        ring.push(np.arange(S, dtype=np.int32), frames[:, t])
        ring.gather(np.arange(S, dtype=np.int32), out)
        np.testing.assert_array_equal(out, ring_reference([frames[s, :t + 1] for s in range(S)], N))
    ring.reset(1)
    ring.gather(np.array([1], np.int32), out[:1])
    assert not out[0].any()


def test_functional_ring_api_matches_class(real_views):
    px = real_views[0][0, :30]
    S, N, F = 3, 8, 17 * 3
    storage = np.zeros((S, N, F), np.float32)
    head = np.zeros(S, np.int32)
    count = np.zeros(S, np.int32)
    ring = _C.RingBuffer(S, N, 17, 3)
    for t in range(30):
        f = make_input(px[t], np.ones(17, np.float32), 1000, 1000)
        slots = np.array([t % S], np.int32)
        _C.ring_push(storage, head, count, slots, f.reshape(1, F))
        ring.push(slots, f[None])
    a = np.empty((S, N, F), np.float32)
    b = np.empty((S, N, 17, 3), np.float32)
    _C.ring_gather(storage, head, count, np.arange(S, dtype=np.int32), a)
    ring.gather(np.arange(S, dtype=np.int32), b)
    np.testing.assert_array_equal(a, b.reshape(S, N, F))


def test_ring_buffer_rejects_bad_arguments():
    ring = _C.RingBuffer(2, 4, 17, 3)
    with pytest.raises(IndexError):
        ring.push(np.array([2], np.int32), np.zeros((1, 17, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        ring.push(np.array([0], np.int32), np.zeros((1, 16, 3), np.float32))
    with pytest.raises(TypeError):  # out would be a silent copy: refused
        ring.gather(np.array([0], np.int32), np.zeros((1, 4, 17, 3), np.float64))
    with pytest.raises(ValueError):
        _C.RingBuffer(0, 4, 17, 3)


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
            _C.ddim_update_cuda(1, 1, 1, 1, 1.0, 0.0, 1.0, 0.0)
        return
    try:
        from cuda.bindings import runtime as cudart

        has_gpu = cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaSuccess
    except ImportError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: see test_cuda_kernels_equal_cpu_twins")
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _C.ddim_update_cuda(1, 1, 1, 1, 1.0, 0.0, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _C.ring_gather_cuda(1, 1, 1, 1, 1, 1, 1, 1, 1)
    dims = (17, 64, 4, 4, 7, 3, 128, 0.25, 1e-5, 0, 0)
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _C.transformer_step_cuda(dims, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, cluster=8)


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


def cluster_layout(dims: tuple, nc: int) -> tuple[list, list, int, int]:
    """The per-layer layout of transformer_step_cluster_pack (csrc/transformer_step.h, cluster_layout),
    restated: (Cin, Cout) of the eight linears, their (w, b) offsets, the lag table's offset, and
    the floats per layer."""
    J, C, H, depth, M, _, hid = dims[:7]
    shapes = [(C, 3 * C), (C, C), (C, hid), (hid, C)] * 2
    r4 = lambda n: (n + 3) // 4 * 4  # noqa: E731
    offs, o = [], 0
    for ci, co in shapes:
        cs = co // nc
        offs.append((o, o + r4(ci * cs)))
        o += r4(ci * cs) + r4(cs)
    return shapes, offs, o, o + r4(H * (M + 2))


def test_cluster_pack_slices_and_folds_layernorm_on_real_activations(models, real_views):
    """The thread-block cluster form's per-rank weights: the linears without a LayerNorm are exact
    column slices of W and b, the lag table is copied, and for qkv and fc1 the folded slices give
    linear(LayerNorm(h)) of the torch modules on real residual-stream rows of a real window as the
    CUDA kernel computes it, ρ·((h − μ)·W') + b' with (μ, ρ) from sums shifted by the row's first
    value (to float32 rounding)."""
    import torch

    from posert.runtime.backends.cuda import pack_step, step_dims

    lifter, den = models
    px = real_views[0][0, : lifter.window]
    inp = torch.from_numpy(make_input(px, np.ones(px.shape[:2], np.float32), 1000, 1000)[None])
    rows = []
    norms = [m for m in lifter.modules() if isinstance(m, torch.nn.LayerNorm)]
    hooks = [m.register_forward_hook(lambda m, i, o: rows.append(i[0].reshape(-1, i[0].shape[-1]))) for m in norms]
    with torch.no_grad():
        lifter(inp)
    for hk in hooks:
        hk.remove()
    h = torch.cat(rows)  # (n, C) float32: every LayerNorm input of the lifter on real motion
    x = h.double() - h[:, :1].double()  # shifted by the first channel, as the kernel's ln_stats
    m = x.mean(1, keepdim=True)
    rstd = 1.0 / torch.sqrt((x * x).mean(1, keepdim=True) - m**2 + 1e-5)
    centred = x - m  # h − μ
    worst = 0.0
    for model in (lifter, den):
        dims, W = step_dims(model), pack_step(model)
        for nc in (8, 16):
            P = _C.transformer_step_cluster_pack(W, dims, nc)
            shapes, offs, table, per_layer = cluster_layout(dims, nc)
            assert P.shape == (nc, dims[3] * per_layer)
            for li, blk in enumerate(model.backbone.blocks):
                lins = [blk.s_attn.qkv, blk.s_attn.proj, blk.s_mlp[0], blk.s_mlp[2],
                        blk.t_attn.qkv, blk.t_attn.proj, blk.t_mlp[0], blk.t_mlp[2]]
                lns = [blk.s_norm1, None, blk.s_norm2, None, blk.t_norm1, None, blk.t_norm2, None]
                base = li * per_layer
                for k, (lin, ln) in enumerate(zip(lins, lns)):
                    (ci, co), (ow, ob) = shapes[k], offs[k]
                    cs = co // nc
                    Wf = np.concatenate([P[r, base + ow: base + ow + ci * cs].reshape(ci, cs) for r in range(nc)], 1)
                    bf = np.concatenate([P[r, base + ob: base + ob + cs] for r in range(nc)])
                    if ln is None:
                        np.testing.assert_array_equal(Wf, lin.weight.detach().numpy().T)
                        np.testing.assert_array_equal(bf, lin.bias.detach().numpy())
                        continue
                    with torch.no_grad():
                        ref = lin(ln(h)).double().numpy()
                    got = (rstd * (centred @ torch.from_numpy(Wf).double())).numpy() + bf
                    worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
                tb = blk.t_attn.bias_table().detach().numpy().reshape(-1)
                for r in range(nc):
                    np.testing.assert_array_equal(P[r, base + table: base + table + tb.size], tb)
    assert worst < 1e-5, worst
    with pytest.raises(ValueError, match="cluster 3"):
        _C.transformer_step_cluster_pack(pack_step(lifter), step_dims(lifter), 3)


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
    import torch

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
    from posert.runtime import Pipeline
    from posert.runtime.backends import onnxruntime as ortb

    pipe = Pipeline("onnxruntime", max_streams=2, workers=1)
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
        pipe.push("a", real_views[0][0, t], timestamp=t)
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


def test_prepare_frames_matches_numpy_normalisation(real_views):
    """Pipeline.push_many's C++ validation + normalisation equals the NumPy form of
    normalize_screen bit for bit on real 2D (missing joints with NaN coordinates included), and
    reports the first bad confidence before the first NaN on a visible joint."""
    px = real_views[0][:, :40].reshape(-1, 17, 2).astype(np.float64)  # 4 cameras × 40 frames
    rng = np.random.default_rng(5)
    B = len(px)
    size = np.array([[1000, 1000], [1920, 1080], [640, 480], [1000, 1002]], np.float32)
    slots = rng.integers(0, len(size), B)
    conf = rng.uniform(0, 1, (B, 17))
    conf[rng.random((B, 17)) < 0.15] = 0.0
    px[conf == 0] = np.nan  # documented: ignored where confidence is 0
    w, h = size[slots, 0, None], size[slots, 1, None]
    ref = np.empty((B, 17, 3), np.float32)
    with np.errstate(invalid="ignore"):
        ref[..., 0] = np.where(conf > 0, px[..., 0] / w * 2 - 1, 0.0)
        ref[..., 1] = np.where(conf > 0, px[..., 1] / w * 2 - h / w, 0.0)
    ref[..., 2] = conf
    out = np.full_like(ref, np.nan)
    assert _C.prepare_frames(px, conf, size, slots, out) == (-1, 0)
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    bad_conf, bad_kp = conf.copy(), px.copy()
    bad_conf[70, 3] = 1.5
    bad_kp[12, 5] = np.inf
    bad_conf[12, 5] = 0.5
    assert _C.prepare_frames(bad_kp, bad_conf, size, slots, out) == (70, 1)  # confidences are checked first
    bad_conf[70, 3] = 1.0
    assert _C.prepare_frames(bad_kp, bad_conf, size, slots, out) == (12, 2)
    with pytest.raises(IndexError):
        _C.prepare_frames(px, conf, size, np.full(B, 9), out)


@pytest.mark.parametrize("bones", [None, "viewed", "own", "plain", "adaptive", "distance"],
                         ids=["lateral", "bone-depth", "bone-depth-own", "bone-depth-plain", "adaptive", "distance"])
def test_reproject_kernel_equals_numpy_reference(motion, models, bones):
    """``_C.reproject`` (the Pipeline's camera-aware correction) against its NumPy definition,
    :func:`pixels_to_rays` + :func:`ray_correction` + the per-slot EMA + re-rooting, and with
    ``bones`` then :func:`bone_depth_correction` with its per-slot state, on real motion seen
    through a lens with H36M's distortion and lifted by the committed lifter: several ticks (the
    EMAs and running lengths carry over), rows in another order than slots, hidden joints with
    NaN pixels, a row with one visible joint (no correction) and a stream with another lens.
    ``viewed``: the default bone lengths (weighted by view against the running length capped at
    1.25× the plain one, left/right pooled); ``own``: uncapped (session 22);
    ``plain``: session 21's (every frame alike, no pooling); ``adaptive``: the default bone
    lengths with the pipeline's default β, :func:`noise_gain` from the stream's innovations (its
    state carried over too), and the bone depth's own EMA weight; ``distance``: that, and then the
    pipeline's default distance tracker (:func:`distance_track`, :func:`distance_correction`)."""
    import torch

    from posert.camera import Camera, pixels_to_rays, ring_rig
    from posert.data.dataset import center_on_floor, render
    from posert.runtime.reprojection import (
        DISTANCE_INDEX,
        bone_depth_correction,
        distance_correction,
        distance_track,
        noise_gain,
        pixel_noise,
        ray_correction,
    )
    from posert.skeleton import FLIP_PERM, PARENTS

    lifter = models[0]
    K = np.array([[1145.0494, 0.0, 512.5415], [0.0, 1143.7811, 515.4515], [0.0, 0.0, 1.0]])
    lens = np.array([-0.20709891, 0.24777518, -0.00142447, -0.0009757, -0.00307515])
    S, B, T = 5, 3, 12
    cams = [Camera(c.name, c.R, c.t, K, lens * (1 + 0.2 * i), 1000, 1002) for i, c in enumerate(ring_rig(n=B))]
    world = center_on_floor(motion[:40])
    views = [render(world, c)[0] for c in cams]  # (40, 17, 2) px each
    inp = np.stack([make_input(v[:27], np.ones((27, 17), np.float32), 1000, 1002) for v in views])
    with torch.no_grad():
        poses = lifter(torch.from_numpy(inp)).numpy() * 1000  # (B, 27, 17, 3) mm
    slots = np.array([4, 0, 2])
    Ks, dists = np.tile(np.eye(3), (S, 1, 1)), np.zeros((S, 5))
    Ks[slots], dists[slots] = K, np.stack([c.dist for c in cams])
    px, conf = np.zeros((S, 17, 2)), np.zeros((S, 17))
    dbar, ref_dbar = np.zeros((S, 17, 3)), np.zeros((S, 17, 3))
    state, ref_state = ([np.zeros((S, 16, 2)), np.zeros((S, 16, 2)), np.zeros((S, 16))] for _ in range(2))
    parents = np.array(PARENTS, np.int64)
    mirror = np.array(FLIP_PERM, np.int64)
    kw = dict(zip(("bone_length", "bone_count", "bone_delta"), state), parents=parents) if bones else {}
    ref_kw = {"plain": dict(view_power=0.0, mirror=None), "own": dict(view_cap=np.inf)}.get(bones, {})
    if bones:
        kw.update(view_power=0.0) if bones == "plain" else kw.update(mirror=mirror)
        if bones == "own":
            kw.update(view_cap=np.inf)
    hist, var = np.full((S, 2, 17, 2), np.nan), np.full((S, 2), np.nan)
    ref_hist, ref_var = hist.copy(), var.copy()
    raw, raw_var = np.full((S, 3, 17, 2), np.nan), np.full((S, 2), np.nan)
    ref_raw, ref_raw_var = raw.copy(), raw_var.copy()
    dstate, ref_dstate = np.zeros((S, 4)), np.zeros((S, 4))
    adaptive = bones in ("adaptive", "distance")
    if adaptive:
        kw.update(noise_hist=hist, noise_var=var, noise_raw=raw, noise_raw_var=raw_var)
    if bones == "distance":
        kw.update(distance=dstate, distance_index=DISTANCE_INDEX)
    rng = np.random.default_rng(0)
    before = None  # slot 1's Δ̄ before the frame without a valid correction
    for t in range(T):
        for b, s in enumerate(slots):
            px[s] = views[b][t]
            conf[s] = rng.uniform(0.3, 1.0, 17)
        hide = rng.random((S, 17)) < 0.2
        conf[hide], px[hide] = 0.0, np.nan
        if t == 3:
            conf[slots[1], 1:] = 0.0  # one visible joint: this row gets no correction
        pose = np.ascontiguousarray(poses[:, t][::-1])  # rows in reverse slot order
        rows = np.arange(B)[::-1].copy()
        weight = np.maximum(0.1, np.full(B, 1.0 / (t + 1)))
        ref = pose.astype(np.float64)
        rays = pixels_to_rays(px[slots], Ks[slots], dists[slots])
        delta, R = ray_correction(ref[rows], rays, conf[slots], return_position=True)
        beta, bone_ema = weight, weight
        if adaptive:
            weight = np.full(B, 1.0 / (t + 1))
            bone_ema = np.maximum(0.1, weight) * (1 + 0.5 * np.arange(B))  # a weight per row
            kw["bone_ema"] = bone_ema
            ref_raw[slots], ref_raw_var[slots] = pixel_noise(px[slots], conf[slots], ref_raw[slots],
                                                             ref_raw_var[slots])
            gain, ref_hist[slots], ref_var[slots] = noise_gain(ref[rows], rays, conf[slots], Ks[slots, 0, 0],
                                                               ref_hist[slots], ref_var[slots],
                                                               other_var=ref_raw_var[slots, 0])
            beta = np.maximum(weight, gain)
        valid = R[:, 2] > 0  # a frame without a valid correction keeps Δ̄
        ref_dbar[slots] += ((beta * valid)[:, None] * conf[slots])[..., None] * (delta - ref_dbar[slots])
        out = ref[rows] + ref_dbar[slots]
        ref[rows] = out - out[:, :1]
        if bones:
            ref[rows], *new = bone_depth_correction(ref[rows], rays, conf[slots], *(a[slots] for a in ref_state),
                                                    bone_ema, **ref_kw)
            for a, n in zip(ref_state, new):
                a[slots] = n
        if bones == "distance":
            ref_dstate[slots] = distance_track(R[:, 2], beta, ref_dstate[slots])
            ref[rows] = distance_correction(ref[rows], rays, conf[slots], ref_dstate[slots])
        _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **kw)
        np.testing.assert_allclose(dbar, ref_dbar, atol=1e-9)
        np.testing.assert_allclose(hist, ref_hist, atol=1e-9, rtol=1e-9)
        np.testing.assert_allclose(var, ref_var, rtol=1e-9)
        np.testing.assert_allclose(raw, ref_raw, rtol=1e-12)
        np.testing.assert_allclose(raw_var, ref_raw_var, rtol=1e-9)
        np.testing.assert_allclose(dstate, ref_dstate, rtol=1e-12, atol=1e-9)
        for a, b in zip(state, ref_state):
            np.testing.assert_allclose(a, b, atol=1e-9)
        np.testing.assert_allclose(pose, ref, atol=1e-3)  # float32 output, mm
        if t == 3:
            assert np.all(delta[1] == 0) and not valid[1]
            np.testing.assert_array_equal(dbar[slots[1]], before)  # no valid correction: Δ̄ kept
        if t == 2:
            before = dbar[slots[1]].copy()
    assert np.abs(ref_dbar).max() > 10  # mm: the lifter's pose was corrected
    if bones:
        assert np.abs(ref_state[2][slots]).max() > 10  # mm: some bone's depth was corrected
        n, frames = ref_state[1][slots][..., 0], ref_state[1][slots][..., 1]  # weighted by view; every frame 1
        assert 1 <= frames.min() and frames.max() < T and np.array_equal(frames, np.round(frames))
        assert (np.array_equal(n, frames) if bones == "plain" else 0 < n.min() and np.all(n <= frames))
        if bones != "plain":
            assert np.abs(n - np.round(n)).max() > 0.01  # weights below 1, not frame counts
        if bones == "distance":
            # every slot with a row tracks a distance (rows with one visible joint skip a frame), the
            # others none; the tracker moved the pose: its lead x − m over the EMA'd distance is not 0
            n = dstate[:, 2]
            assert np.all(n[slots] >= T - 1) and np.all(n[[1, 3]] == 0) and np.all(dstate[[1, 3]] == 0)
            assert np.abs(dstate[slots, 0] - dstate[slots, 3]).max() > 1.0  # mm
            for bad, match in ((dict(distance=np.zeros((S, 3))), "distance"),
                               (dict(distance_index=0.0), "distance_index"),
                               (dict(distance_index=np.nan), "distance_index")):
                with pytest.raises(ValueError, match=match):
                    _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **{**kw, **bad})
        if adaptive:
            # every slot with a row has an estimate, the others none; the gain, not 1 / (n + 1), set β
            assert np.all(np.isfinite(var[slots])) and np.isnan(var[[1, 3]]).all()
            assert np.all(np.isfinite(raw_var[slots])) and np.isnan(raw_var[[1, 3]]).all()
            assert np.all(gain > 2 * weight)
            for bad, match in ((dict(noise_var=None), "both"), (dict(noise_q=0.0), "noise_q"),
                               (dict(noise_tau=1.5), "noise_tau"),
                               (dict(noise_hist=np.zeros((S, 17, 2))), "noise_hist"),
                               (dict(noise_raw_var=None), "noise_raw"),
                               (dict(noise_raw=np.zeros((S, 2, 17, 2))), "noise_raw"),
                               (dict(bone_ema=np.zeros(B + 1)), "bone_ema")):
                with pytest.raises(ValueError, match=match):
                    _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **{**kw, **bad})
        if bones == "viewed":
            with pytest.raises(ValueError, match="view_cap"):
                _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **{**kw, "view_cap": 0.5})
            with pytest.raises(ValueError, match="bone_length"):
                _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight,
                             **{**kw, "bone_length": np.zeros((S, 16))})
            with pytest.raises(ValueError, match="mirror"):
                _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **{**kw, "mirror": parents})
            with pytest.raises(ValueError, match="view_power"):
                _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, **{**kw, "view_power": -1.0})
        assert np.all(state[1][[1, 3]] == 0) and np.all(state[2][[1, 3]] == 0)  # slots of no row: untouched
        with pytest.raises(ValueError, match="all of"):
            _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight, parents=parents)
        with pytest.raises(ValueError, match="parent"):
            _C.reproject(pose, rows, slots, px, conf, Ks, dists, dbar, weight,
                         **{**kw, "parents": parents[::-1].copy()})
    with pytest.raises(IndexError, match="slot"):
        _C.reproject(pose, rows, np.array([0, 1, S]), px, conf, Ks, dists, dbar, weight)
    with pytest.raises(TypeError, match="float32"):
        _C.reproject(pose.astype(np.float64), rows, slots, px, conf, Ks, dists, dbar, weight)


@pytest.mark.parametrize("baseline", [False, True], ids=["cpu-isa", "baseline-isa"])
def test_fast_transformer_step_equals_twin_on_real_streams(models, real_windows, baseline):
    """The fast body of the fused step (csrc/step_fast.cpp: tiles, register-blocked products,
    rational-erf GELU) equals the plain-loop twin on the committed lifter and denoiser over 35
    real frames (the ring caches wrap), 11 rows in two tiles at cache rows 2…12 of 14: outputs and
    caches within float rounding, rows marked −1 and rows outside [row0, row0 + B) untouched,
    with both the AVX2 body (where the CPU has it) and the 4-lane baseline."""
    from posert.runtime.backends.cuda import pack_step, step_cond, step_dims

    lifter, den = models
    B, S, row0 = 11, 14, 2
    inp = np.concatenate([real_windows, real_windows[:3, ::-1]])[:B]  # (11, 27, 17, 3) real inputs
    inp = np.concatenate([inp, inp[:, :8]], axis=1)  # 35 frames per row
    rows = np.arange(B, dtype=np.int32)
    rows[[3, 9]] = -1  # idle rows: computed, no cache write
    count0 = np.arange(B, dtype=np.int64) % 5  # rows at different stream ages (0: empty caches)
    _C.set_attention_isa(baseline)
    try:
        for model in (lifter, den):
            dims, w = step_dims(model), pack_step(model)
            den_step = dims[-1] == 1
            cond = step_cond(den, 20.0) if den_step else None
            coef = np.array(Schedule(50, 2).ddim_coefficients(25, 0), np.float32) if den_step else None
            L, M = dims[3], dims[4]
            caches = [np.full((2 * L, S, 17, dims[2], M, dims[1] // dims[2]), 7.0, np.float32) for _ in range(2)]
            for f in range(inp.shape[1]):
                count = count0 + f
                xs = []
                for fast, cache in zip((False, True), caches, strict=True):
                    x = (inp[:, f] * 0.5).copy()  # a DDIM state for the denoiser (metres)
                    _C.transformer_step(w, dims, inp[:, f], x, None, cond, count, rows, cache, coef, row0=row0,
                                        fast=fast)
                    xs.append(x)
                np.testing.assert_allclose(xs[1], xs[0], atol=2e-5)  # metres
                np.testing.assert_allclose(caches[1], caches[0], atol=2e-4, rtol=1e-4)
            assert np.abs(xs[0]).max() > 0.05  # real poses, not zeros
            for cache in caches:
                assert (cache[:, :row0] == 7.0).all() and (cache[:, row0 + B:] == 7.0).all()
                assert (cache[:, row0 + 3] == 7.0).all() and (cache[:, row0 + 9] == 7.0).all()
                assert not (cache[:, row0] == 7.0).all()
        with pytest.raises(ValueError, match="row0"):
            _C.transformer_step(w, dims, inp[:, 0], x, None, cond, count, rows, caches[0], coef, row0=4, fast=True)
    finally:
        _C.set_attention_isa(False)


@pytest.mark.parametrize("baseline", [False, True], ids=["cpu-isa", "baseline-isa"])
def test_fast_step_with_half_caches(models, real_windows, baseline):
    """The fast body with float16 caches (the native backend's default, csrc/half.h) on the
    committed models and real inputs, on both ISAs:
    - writes: after the first frame (whose reads are all of the exactly representable fill value)
      the half cache holds the float32-cache body's keys and values rounded to nearest even,
      bit for bit as numpy rounds them, and the poses are the same; keys beyond ±65504 (a lifter
      whose first temporal qkv is scaled by 1e6) saturate instead of overflowing;
    - reads: from a cache of arbitrary halves (subnormals, negative zero, ±65504 included) the
      poses equal the float32 body's reading the same values widened;
    - over 35 frames of streams starting empty (ring wrap, idle rows) the poses stay within
      0.2 mm of the float32 twin."""
    import copy

    import torch

    from posert.runtime.backends.cuda import pack_step, step_cond, step_dims

    lifter, den = models
    B, S, row0 = 11, 14, 2
    inp = np.concatenate([real_windows, real_windows[:3, ::-1]])[:B]
    inp = np.concatenate([inp, inp[:, :8]], axis=1)  # (11, 35, 17, 3)
    rows = np.arange(B, dtype=np.int32)
    rows[[3, 9]] = -1
    count0 = np.arange(B, dtype=np.int64) % 5
    big = copy.deepcopy(lifter)
    with torch.no_grad():
        big.backbone.blocks[0].t_attn.qkv.weight.mul_(1e6)
    rng = np.random.default_rng(0)
    _C.set_attention_isa(baseline)
    try:
        for model in (lifter, den, big):
            dims, w = step_dims(model), pack_step(model)
            den_step = dims[-1] == 1
            cond = step_cond(den, 20.0) if den_step else None
            coef = np.array(Schedule(50, 2).ddim_coefficients(25, 0), np.float32) if den_step else None
            shape = (2 * dims[3], S, 17, dims[2], dims[4], dims[1] // dims[2])
            # reads: arbitrary finite halves, no writes
            bits = rng.integers(0, 0x7c00, size=shape, dtype=np.uint16) | (rng.integers(0, 2, shape, np.uint16) << 15)
            bits.reshape(-1)[:4] = [0x0001, 0x8000, 0x7bff, 0x83ff]  # subnormals, -0, 65504
            bits &= np.where(rng.random(shape) < 0.5, 0x8fff, 0xffff).astype(np.uint16)  # mostly small values
            half = bits.view(np.float16)
            wide = half.astype(np.float32)
            idle = np.full(B, -1, np.int32)
            xs = []
            for cache in (half, wide):
                x = (inp[:, 0] * 0.5).copy()
                _C.transformer_step(w, dims, inp[:, 0], x, None, cond, count0 + 3, idle, cache, coef, row0=row0,
                                    fast=True)
                xs.append(x)
            np.testing.assert_array_equal(xs[0], xs[1])
            assert np.isfinite(xs[0]).all() if model is not big else True
            # writes, and 35 frames against the twin
            caches = [np.full(shape, 7.0, np.float32), np.full(shape, 7.0, np.float32), np.full(shape, 7.0, np.float16)]
            frames = 1 if model is big else inp.shape[1]
            worst = 0.0
            for f in range(frames):
                xs = []
                for fast, cache in zip((False, True, True), caches, strict=True):
                    x = (inp[:, f] * 0.5).copy()
                    _C.transformer_step(w, dims, inp[:, f], x, None, cond, np.full(B, f), rows, cache, coef,
                                        row0=row0, fast=fast)
                    xs.append(x)
                if f == 0:
                    ref = caches[1][:2] if model is big else caches[1]  # big: layer 0's keys/values only
                    got = caches[2][:2] if model is big else caches[2]
                    if model is big:
                        assert np.abs(ref).max() > 1e5  # keys beyond the half range were written
                    want = np.clip(ref, -65504, 65504).astype(np.float16)
                    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
                    if model is not big:
                        np.testing.assert_array_equal(xs[2], xs[1])
                worst = max(worst, float(np.abs(xs[2] - xs[0]).max()))
            if model is not big:
                assert worst < 2e-4  # metres
                assert (caches[2][:, :row0] == 7.0).all() and (caches[2][:, row0 + 3] == 7.0).all()
        x = np.zeros((B, 17, 3), np.float32)
        with pytest.raises(TypeError, match="fast=True"):
            _C.transformer_step(w, dims, inp[:, 0], x, None, None, count0, rows, caches[2], None, fast=False)
        with pytest.raises(TypeError, match="float32 or float16"):
            _C.transformer_step(w, dims, inp[:, 0], x, None, None, count0, rows, caches[0].astype(np.float64), None,
                                fast=True)
    finally:
        _C.set_attention_isa(False)
