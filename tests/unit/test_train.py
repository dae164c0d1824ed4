"""Training plumbing: k-fold cross-fitting splits, fold-lifter caching, refiner modes."""

import numpy as np
import pytest
import torch

from posert.camera import ring_rig
from posert.models.denoiser import DenoiserConfig
from posert.models.lifter import Lifter, LifterConfig
from posert.train.loops import (
    TrainConfig,
    sequence_folds,
    temporal_folds,
    train_fold_lifters,
    train_lifter,
    train_refiner,
)


def test_temporal_folds_partition_every_sequence(motion):
    seqs = {"a": motion[:301], "b": motion[400:1000]}
    folds = temporal_folds(seqs, 3)
    for name, seq in seqs.items():
        parts = [f[f"{name}#{i}"] for i, f in enumerate(folds)]
        np.testing.assert_array_equal(np.concatenate(parts), seq)  # disjoint, ordered, complete
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    with pytest.raises(ValueError):
        temporal_folds(seqs, 1)


def test_sequence_folds_keep_sequences_whole_and_balanced(motion):
    seqs = {"a": motion[:500], "b": motion[500:900], "c": motion[900:1000], "d": motion[:350]}
    folds = sequence_folds(seqs, 2)
    assert sorted(n for f in folds for n in f) == sorted(seqs)  # every sequence once, whole
    for f in folds:
        for name, seq in f.items():
            assert seq is seqs[name]
    assert sorted(sum(len(s) for s in f.values()) for f in folds) == [600, 750]  # longest first, to the lighter fold
    with pytest.raises(ValueError):
        sequence_folds({"a": motion}, 2)
    with pytest.raises(ValueError):
        train_fold_lifters(seqs, ring_rig(), TrainConfig(minutes=0.01), 2, fold_by="random")


def test_step_budget_runs_exactly_that_many_steps_and_repeats(motion):
    """A step budget (seed studies) ignores the wall clock: the same seed gives the same weights, another
    seed other weights, and the weights moved from their initialisation."""
    seqs, cams, tiny = {"cmu": motion[:300]}, ring_rig(), LifterConfig(window=9, dim=16, depth=1, heads=2)
    cfg = TrainConfig(minutes=1e-9, steps=3, batch=4, threads=1)  # the wall clock would allow no step
    a, stats = train_lifter(seqs, cams, cfg, tiny)
    b, _ = train_lifter(seqs, cams, cfg, tiny)
    c, _ = train_lifter(seqs, cams, TrainConfig(**{**cfg.__dict__, "seed": 1}), tiny)
    torch.manual_seed(0)
    init = Lifter(tiny)
    assert stats["steps"] == 3
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    assert any(not torch.equal(pa, p0) for pa, p0 in zip(a.parameters(), init.parameters()))
    with pytest.raises(ValueError, match="steps"):
        train_lifter(seqs, cams, TrainConfig(steps=0), tiny)


@pytest.mark.slow
@pytest.mark.parametrize("noise,loss", [("cnd", "mse"), ("regressor", "mpjpe")])
def test_refiner_training_reuses_cached_fold_lifters(motion, tmp_path, noise, loss):
    seqs = {"cmu": motion[:400]}
    cams = ring_rig()
    tiny_l = LifterConfig(window=9, dim=16, depth=1, heads=2)
    tiny_d = DenoiserConfig(window=9, dim=16, depth=1, heads=2, K=1 if noise == "regressor" else 2)
    cfg = TrainConfig(minutes=0.01, batch=4)
    den, cnd, stats = train_refiner(seqs, cams, cfg, fold_minutes=0.01, lifter_cfg=tiny_l, model_cfg=tiny_d,
                                    noise=noise, fold_cache=tmp_path, cnd_windows=128, loss=loss)
    assert stats["loss"] == loss
    cached = sorted(tmp_path.glob("fold_lifter_*.pt"))
    assert len(cached) == 2 and stats["steps"] >= 1 and np.isfinite(stats["cross_fit_lifter_mpjpe_mm"])
    assert np.all(np.isfinite(cnd.chol)) and cnd.gain.shape == (17, 3, 5)
    stamp = [p.stat().st_mtime_ns for p in cached]
    _, cnd2, _ = train_refiner(seqs, cams, cfg, fold_minutes=0.01, lifter_cfg=tiny_l, model_cfg=tiny_d,
                               noise=noise, fold_cache=tmp_path, cnd_windows=128)
    assert [p.stat().st_mtime_ns for p in cached] == stamp  # loaded, not retrained
    np.testing.assert_allclose(cnd2.mean, cnd.mean, rtol=0.5, atol=0.05)  # same lifters, new windows
    out = den(torch.zeros(1, 9, 17, 3), torch.zeros(1, 9, 17, 3), torch.full((1,), 50.0))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="loss"):
        train_refiner(seqs, cams, cfg, fold_minutes=0.01, lifter_cfg=tiny_l, model_cfg=tiny_d, fold_cache=tmp_path,
                      loss="l1")


@pytest.mark.slow
def test_refiner_conditioned_on_lifter_features(motion, tmp_path):
    """Issue 3's '2D + lifter features' variant: the denoiser takes the fold lifter's per-joint
    features in training, needs them at inference (and its output depends on them), and the
    streaming step refuses it with a clear error until the runtime carries the features."""
    from posert.models.denoiser import Refiner

    seqs, cams = {"cmu": motion[:400]}, ring_rig()
    tiny_l = LifterConfig(window=9, dim=16, depth=1, heads=2)
    tiny_d = DenoiserConfig(window=9, dim=16, depth=1, heads=2)
    den, _, stats = train_refiner(seqs, cams, TrainConfig(minutes=0.01, batch=4), fold_minutes=0.01,
                                  lifter_cfg=tiny_l, model_cfg=tiny_d, fold_cache=tmp_path, cnd_windows=128,
                                  features="final", feature_lifter=Lifter(tiny_l).eval())
    assert stats["features"] == "final" and den.cfg.feat_dim == 16
    with pytest.raises(ValueError, match="feature_lifter"):
        train_refiner(seqs, cams, TrainConfig(minutes=0.01, batch=4), fold_minutes=0.01, lifter_cfg=tiny_l,
                      model_cfg=tiny_d, fold_cache=tmp_path, cnd_windows=128, features="final")
    lifter = Lifter(tiny_l).eval()
    inp = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 12, 17, 3)).astype(np.float32))
    with torch.no_grad():
        feat = lifter.features(inp)
        torch.testing.assert_close(lifter.decode(feat), lifter(inp))
        a = Refiner(den)(inp, lifter(inp), feat)
        b = Refiner(den)(inp, lifter(inp), feat + 1.0)
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="feat_dim"):
        den(inp, lifter(inp), torch.full((1,), 50.0))
    with pytest.raises(ValueError, match="lifter features"):
        den.step(inp[:, 0], inp[:, 0], torch.full((1,), 50.0), torch.ones(1, den.max_lag, dtype=torch.int64),
                 *[torch.zeros(1, *den.cache_shape[1:]) for _ in range(den.cache_shape[0])])
