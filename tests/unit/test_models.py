"""Models and diffusion math: causality, root-relativity, schedule, DDIM inversion, CND."""

import numpy as np
import pytest
import torch

from posert.models import CND, Denoiser, Lifter, Schedule
from posert.models.denoiser import DenoiserConfig
from posert.models.diffusion import ddim_step
from posert.models.lifter import LifterConfig
from posert.runtime.chain import ring_lags


def test_cosine_schedule_shape():
    s = Schedule(50, 2)
    assert s.alpha_bar[0] == 1.0 and s.alpha_bar[-1] < 1e-3
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert s.timesteps == [50, 25] and s.pairs() == [(50, 25), (25, 0)]
    assert Schedule(50, 5).pairs()[-1] == (10, 0)


def test_ddim_with_true_error_recovers_x0_exactly(real_windows):
    """With ê = e, Eq. 9 inverts the forward process x_t = √ᾱ x0 + √(1−ᾱ)(x0 + e) at every step."""
    s = Schedule(50, 2)
    rng = np.random.default_rng(0)
    x0 = torch.from_numpy(rng.normal(0, 0.3, (4, 27, 17, 3)))
    e = torch.from_numpy(rng.normal(0, 0.05, (4, 27, 17, 3)))
    x = s.q_sample(x0, x0 + e, torch.full((4,), 50))
    for t, tp in s.pairs():
        a, b, ap, bp = (float(np.sqrt(s.alpha_bar[t])), float(np.sqrt(1 - s.alpha_bar[t])),
                        float(np.sqrt(s.alpha_bar[tp])), float(np.sqrt(1 - s.alpha_bar[tp])))
        x = ddim_step(x, e, (a, b, ap, bp))
        np.testing.assert_allclose(x, s.q_sample(x0, x0 + e, torch.full((4,), tp)), atol=1e-12)
    np.testing.assert_allclose(x, x0, atol=1e-12)


def _ar1(rng, shape, rho):
    z = rng.normal(size=shape)
    for n in range(1, shape[1]):
        z[:, n] = rho * z[:, n - 1] + np.sqrt(1 - rho ** 2) * z[:, n]
    return z


def test_cnd_conditional_matches_regression_and_samples():
    rng = np.random.default_rng(0)
    W, N, J = 1000, 20, 17
    b = rng.normal(size=(W, N, J, 5))
    A = rng.normal(size=(J, 3, 5)) * 0.1
    e = np.einsum("jab,wnjb->wnja", A, b) + 0.01 + 0.02 * _ar1(rng, (W, N, J, 3), 0.8)
    cnd = CND.fit(e, b[..., :2], b[..., 2:])
    np.testing.assert_allclose(cnd.gain, A, atol=0.01)  # Σ_ab Σ_bb⁻¹ is the regression matrix
    np.testing.assert_allclose(cnd.cond_cov, np.broadcast_to(np.eye(3) * 0.02 ** 2, (J, 3, 3)), atol=5e-5)
    assert cnd.rho == pytest.approx(0.8, abs=0.02)  # temporal correlation of the residual
    assert CND.fit(e, b[..., :2], b[..., 2:], temporal=False).rho == 0.0
    mu = cnd.conditional_mean(b[:5, 0, :, :2], b[:5, 0, :, 2:])
    np.testing.assert_allclose(mu, np.einsum("jab,mjb->mja", A, b[:5, 0]) + 0.01, atol=0.02)
    y = torch.from_numpy(np.repeat(b[:1, :, :, :2], 3000, 0))
    x = torch.from_numpy(np.repeat(b[:1, :, :, 2:], 3000, 0))
    draws = cnd.sample(y, x, torch.Generator().manual_seed(0)).numpy()  # (3000, N, J, 3)
    mu0 = cnd.conditional_mean(b[0, :, :, :2], b[0, :, :, 2:])
    np.testing.assert_allclose(draws.mean(0), mu0, atol=3e-3)
    np.testing.assert_allclose(draws.std(0), 0.02, rtol=0.1)  # marginal unchanged by the AR(1)
    r = draws - mu0
    lag1 = (r[:, 1:] * r[:, :-1]).sum() / (r[:, :-1] ** 2).sum()
    assert lag1 == pytest.approx(0.8, abs=0.02)


def test_pose_cnd_keeps_the_correlation_between_joints():
    """A limb turned in depth moves every joint below it together: the whole-pose CND draws such
    errors, the per-joint one draws each joint on its own."""
    rng = np.random.default_rng(1)
    W, N, J = 400, 10, 17
    y, x = rng.normal(size=(W, N, J, 2)) * 0.3, rng.normal(size=(W, N, J, 3)) * 0.2
    x[..., 0, :] = 0.0  # root-relative: the pelvis is always 0
    shared = 0.05 * _ar1(rng, (W, N, 1), 0.9)[..., None]  # one depth error for the whole left arm
    e = 0.002 * _ar1(rng, (W, N, J, 3), 0.9)  # lifter errors are smooth in time
    e[..., [11, 12, 13], 2] += shared[..., 0, :]
    e[..., 0, :] = 0.0
    pose, joint = CND.fit(e, y, x, kind="pose"), CND.fit(e, y, x, kind="joint")
    assert pose.kind == "pose" and pose.gain.shape == (1, 51, 85) and pose.chol.shape == (1, 51, 51)
    assert joint.kind == "joint" and joint.gain.shape == (17, 3, 5)
    assert pose.rho == pytest.approx(0.9, abs=0.05) and joint.rho == pytest.approx(0.9, abs=0.05)
    ty, tx = torch.from_numpy(y[:200]), torch.from_numpy(x[:200])
    for cnd, linked in ((pose, True), (joint, False)):
        d = cnd.sample(ty, tx, torch.Generator().manual_seed(0)).numpy()
        assert d.shape == (200, N, J, 3) and np.abs(d[..., 0, :]).max() < 1e-3  # the pelvis stays put
        r = np.corrcoef(d[..., 11, 2].ravel(), d[..., 13, 2].ravel())[0, 1]  # shoulder and wrist depth
        assert (r > 0.9) if linked else (abs(r) < 0.1)
        np.testing.assert_allclose(d[..., 13, 2].std(), np.hypot(0.05, 0.002), rtol=0.1)
    z = np.random.default_rng(2).standard_normal((5, J, 3)).astype(np.float32)
    np.testing.assert_allclose(joint.draw_residual(z), np.einsum("jab,mjb->mja", joint.chol, z), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="kind"):
        CND.fit(e, y, x, kind="limb")
    with pytest.raises(ValueError, match=r"\(17, 8\) or \(1, 136\)"):
        CND(np.zeros((3, 8)), np.zeros((3, 8, 8)))


def test_cnd_mean_map_is_the_conditional_mean_and_travels_in_the_checkpoint():
    """:meth:`CND.mean_map` (the affine map the runtime subtracts from x_T) gives
    :meth:`CND.conditional_mean` for both forms, and ``subtract_mean`` survives a state round trip."""
    rng = np.random.default_rng(3)
    y, x = rng.normal(size=(300, 4, 17, 2)), rng.normal(size=(300, 4, 17, 3))
    e = 0.3 * x + 0.1 * np.concatenate([y, y[..., :1]], -1) + 0.05 * rng.normal(size=x.shape)
    e[..., 0, :] = 0.0
    for kind in CND.KINDS:
        cnd = CND.fit(e, y, x, kind=kind)
        A, c = cnd.mean_map()
        assert A.shape == (85, 51) and c.shape == (51,)
        mu = (np.concatenate([y[:7, 0].reshape(7, 34), x[:7, 0].reshape(7, 51)], -1) @ A + c).reshape(7, 17, 3)
        np.testing.assert_allclose(mu, cnd.conditional_mean(y[:7, 0], x[:7, 0]), atol=1e-12)
        assert np.abs(mu[:, 0]).max() == 0.0  # the pelvis error is 0, so is its mean
        assert np.abs(mu - e[:7, 0]).mean() < 0.5 * np.abs(e[:7, 0]).mean()  # it predicts the linear part
        assert not cnd.subtract_mean
        cnd.subtract_mean = True
        back = CND.from_state(cnd.state_dict())
        assert back.subtract_mean and back.kind == kind and back.rho == cnd.rho
        assert not CND.from_state({"mean": cnd.mean, "cov": cnd.cov}).subtract_mean  # older checkpoints
        assert CND.from_state({"mean": cnd.mean, "cov": cnd.cov}).mean_ema == 1.0
        cnd.mean_ema = 0.3
        assert CND.from_state(cnd.state_dict()).mean_ema == 0.3


def test_cnd_smooth_mean_is_a_causal_ema_restarted_at_frame_0():
    """:meth:`CND.smooth_mean` is μ̄_0 = μ_0, μ̄_t = μ̄_{t−1} + α (μ_t − μ̄_{t−1}) along the frame
    axis (what a stream computes tick by tick), is causal, and is the identity for α = 1."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(2, 40, 17, 3))
    cnd = CND(np.zeros((17, 8)), np.tile(np.eye(8), (17, 1, 1)), mean_ema=0.3)
    ref = mu.copy()
    for t in range(1, 40):
        ref[:, t] = ref[:, t - 1] + 0.3 * (mu[:, t] - ref[:, t - 1])
    got = cnd.smooth_mean(mu)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    later = mu.copy()
    later[:, 25:] += 1.0
    np.testing.assert_array_equal(cnd.smooth_mean(later)[:, :25], got[:, :25])  # causal
    assert CND(cnd.mean, cnd.cov).smooth_mean(mu) is mu
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="mean_ema"):
            CND(cnd.mean, cnd.cov, mean_ema=bad)


def test_lifter_is_causal_and_root_relative(real_windows):
    torch.manual_seed(0)
    model = Lifter(LifterConfig(window=27, dim=32, depth=2)).eval()
    x = torch.from_numpy(real_windows[:2])
    changed = x.clone()
    changed[:, 20:] += 0.3  # alter the future of frame 19
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-3
    assert a[..., 0, :].abs().max() == 0
    assert model.delay == 0 and Lifter(LifterConfig(causal=False)).delay == 13


def test_denoiser_is_causal_and_keeps_root(real_windows):
    torch.manual_seed(0)
    model = Denoiser().eval()
    y = torch.from_numpy(real_windows[:2])
    x = torch.randn(2, 27, 17, 3) * 0.2
    x2 = x.clone()
    x2[:, 10:] += 0.5
    t = torch.full((2,), 25.0)
    with torch.no_grad():
        a, b = model(y, x, t), model(y, x2, t)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert a[..., 0, :].abs().max() == 0


def _stream_steps(model, inp: torch.Tensor, extra=()):
    """Run ``model.step`` frame by frame over inp (B, T, 17, 3) with ring caches."""
    G, J, h, M, d = model.cache_shape
    B, T = inp.shape[:2]
    cache = np.zeros((G, B, J, h, M, d), np.float32)
    outs = []
    with torch.no_grad():
        for n in range(T):
            lag = torch.from_numpy(ring_lags(np.full(B, n), M))
            args = [inp[:, n]] + [a[:, n] if a.dim() > 1 else a for a in extra]
            out, kv = model.step(*args, lag, *[torch.from_numpy(cache[g]) for g in range(G)])
            cache[:, :, :, :, n % M] = kv.numpy()
            outs.append(out)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("window", [27, 81])  # spans 7 and 20 per layer
def test_incremental_step_equals_full_sequence(real_views, cameras, window):
    """One frame per step with key/value ring caches = the whole sequence at once, through
    ring wrap-arounds (relative positions: cached keys never go stale)."""
    from posert.data.dataset import make_input

    torch.manual_seed(0)
    px = real_views[0][:, 100:190]
    inp = torch.from_numpy(np.stack([make_input(p, np.ones((90, 17), np.float32), c.width, c.height)
                                     for p, c in zip(px[:2], cameras)]))
    lifter = Lifter(LifterConfig(window=window)).eval()
    den = Denoiser(DenoiserConfig(window=window)).eval()
    for m in (lifter, den):  # non-trivial relative biases, as after training
        for blk in m.backbone.blocks:
            torch.nn.init.normal_(blk.t_attn.rel, std=1.0)
    with torch.no_grad():
        full = lifter(inp)
    step = _stream_steps(lifter, inp)
    assert lifter.max_lag * lifter.cfg.depth >= lifter.window - 1 and 2 * lifter.max_lag < 90
    assert (step - full).abs().max() < 1e-5  # metres
    t = torch.full((2,), 25.0)
    with torch.no_grad():
        full_e = den(inp, full, t)
    step_e = _stream_steps(den, inp, (full, t))
    assert (step_e - full_e).abs().max() < 1e-5


def test_receptive_field_is_the_window(real_windows):
    """A frame depends on exactly the N − 1 frames before it (causal, span-limited layers)."""
    torch.manual_seed(0)
    model = Lifter(LifterConfig(window=27, dim=32, depth=2)).eval()
    x = torch.from_numpy(np.concatenate([real_windows[0], real_windows[1]]))[None]  # 54 frames
    far, near = x.clone(), x.clone()
    N = model.window
    M = model.max_lag
    far[:, : 53 - model.cfg.depth * M] += 0.5  # beyond the receptive field of frame 53
    near[:, 53 - model.cfg.depth * M] += 0.5  # its oldest frame
    with torch.no_grad():
        a, b, c = model(x), model(far), model(near)
    assert model.cfg.depth * M >= N - 1
    torch.testing.assert_close(a[:, -1], b[:, -1])
    assert (a[:, -1] - c[:, -1]).abs().max() > 1e-6  # exactly 0 if it did not reach
    with pytest.raises(ValueError, match="causal"):
        Lifter(LifterConfig(causal=False)).step(x[:, 0], torch.ones(1, 7, dtype=torch.int64), *[None] * 8)
