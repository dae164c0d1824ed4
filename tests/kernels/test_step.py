"""posert._C's fused transformer step: the fast CPU body against the reference twin (float32 and
half caches), and the cluster form's weight packing."""

import numpy as np
import pytest
import torch

from posert import _C
from posert.data.dataset import make_input
from posert.models.diffusion import Schedule


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

    from posert.runtime.backends.packing import pack_step, step_dims

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


@pytest.mark.parametrize("baseline", [False, True], ids=["cpu-isa", "baseline-isa"])
def test_fast_transformer_step_equals_twin_on_real_streams(models, real_windows, baseline):
    """The fast body of the fused step (csrc/step_fast.cpp: tiles, register-blocked products,
    rational-erf GELU) equals the plain-loop twin on the committed lifter and denoiser over 35
    real frames (the ring caches wrap), 11 rows in two tiles at cache rows 2…12 of 14: outputs and
    caches within float rounding, rows marked −1 and rows outside [row0, row0 + B) untouched,
    with both the AVX2 body (where the CPU has it) and the 4-lane baseline."""
    from posert.runtime.backends.packing import pack_step, step_cond, step_dims

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

    from posert.runtime.backends.packing import pack_step, step_cond, step_dims

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
