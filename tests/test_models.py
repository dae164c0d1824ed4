"""Models and diffusion math: causality, root-relativity, schedule, DDIM inversion, CND."""

import numpy as np
import pytest
import torch

from posert.models import CND, Denoiser, Lifter, Schedule
from posert.models.diffusion import ddim_step
from posert.models.lifter import LifterConfig


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
