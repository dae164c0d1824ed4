"""Shared fixtures of every test layer (one instance for the whole run: package scope of tests/):
real motion (CMU 01_01), a fixed camera rig, real 2D windows, the committed models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from posert.camera import ring_rig
from posert.data.dataset import center_on_floor, make_input, render, root_relative_m

DATA = Path(__file__).parent / "data"

# CI runs the property tests on a fixed sequence of examples (POSERT_CI=1 in .ci/run), so a pass or
# a failure repeats; elsewhere hypothesis draws new examples every run (benchmarks/fuzz.py goes further).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("POSERT_CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="package", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep ONNX exports and other cache writes of the test run out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POSERT_HOME", str(tmp_path_factory.mktemp("posert_home")))
    yield
    mp.undo()


@pytest.fixture(scope="package")
def motion() -> np.ndarray:
    """(1147, 17, 3) float32, mm, z-up world, 50 fps: real CMU motion."""
    with np.load(DATA / "cmu_01_01.npz") as z:
        return z["cmu_01_01"]


@pytest.fixture(scope="package")
def cameras():
    return ring_rig()


@pytest.fixture(scope="package")
def real_views(motion, cameras):
    """Pixels (C, T, 17, 2) and root-relative camera-frame ground truth (C, T, 17, 3) metres."""
    world = center_on_floor(motion)
    px, gt = zip(*(render(world, c) for c in cameras))
    return np.stack(px), np.stack([root_relative_m(g) for g in gt])


@pytest.fixture(scope="package")
def real_windows(real_views, cameras):
    """(8, 27, 17, 3) float32 model inputs cut from real rendered motion."""
    px, _ = real_views
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        c = i % len(cameras)
        s = rng.integers(0, px.shape[1] - 27)
        out.append(make_input(px[c, s:s + 27], np.ones((27, 17), np.float32), cameras[c].width, cameras[c].height))
    return np.stack(out)


@pytest.fixture(scope="package")
def models():
    from posert.models.io import load_lifter, load_refiner

    return load_lifter(), load_refiner()[0]


@pytest.fixture(scope="package")
def onnx_paths():
    from posert.export.onnx import cached_onnx

    return cached_onnx()


@pytest.fixture(scope="package")
def mixed_streams():
    from tests.helpers import run_mixed_streams

    return run_mixed_streams
