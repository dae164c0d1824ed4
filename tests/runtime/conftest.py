"""Fixtures of the runtime tests: two ONNX Runtime pipelines shared by the module's tests."""

import pytest

from posert.runtime import Pipeline


@pytest.fixture(scope="module")
def ort_pipe():
    """The default pipeline: every stream goes through the correction stage (guessed intrinsics
    unless it is added with a camera)."""
    with Pipeline(backend="onnxruntime", max_streams=8, threads=2) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def given_pipe():
    """The correction stage only for streams added with a camera: without one, the output is
    the refiner's own (what the torch models compute)."""
    with Pipeline(backend="onnxruntime", max_streams=8, threads=2, correction="given") as pipe:
        yield pipe

