"""ONNX export of the committed checkpoints' step models, checked against torch on real frames."""

import numpy as np
import onnx
import pytest
import torch

from posert.data.dataset import make_input
from posert.export.onnx import OPSET, max_abs_error_vs_torch
from posert.runtime.chain import ring_lags


def _real_step_inputs(model, real_views, cameras, B: int, n: int = 40, x_t=None, t=None):
    """Inputs of ``model.step`` at frame n of B real streams, with caches filled by streaming the
    torch model over frames 0 … n − 1 (real keys/values, a wrapped ring)."""
    G, J, h, M, d = model.cache_shape
    px = real_views[0]
    inp = np.stack([make_input(px[b % len(px), 50 * b:50 * b + n + 1], np.ones((n + 1, 17), np.float32),
                               cameras[b % len(px)].width, cameras[b % len(px)].height) for b in range(B)])
    inp_t = torch.from_numpy(inp)
    cache = np.zeros((G, B, J, h, M, d), np.float32)
    with torch.no_grad():
        for i in range(n):
            extra = [] if x_t is None else [torch.from_numpy(x_t[:, i]), torch.full((B,), t)]
            _, kv = model.step(inp_t[:, i], *extra, torch.from_numpy(ring_lags(np.full(B, i), M)),
                               *[torch.from_numpy(cache[g]) for g in range(G)])
            cache[:, :, :, :, i % M] = kv.numpy()
    feeds = {"inp": inp[:, n]}
    if x_t is not None:
        feeds.update(x_t=x_t[:, n], t=np.full(B, t, np.float32))
    feeds["lag"] = ring_lags(np.full(B, n), M)
    feeds.update({f"cache_{g}": cache[g] for g in range(G)})
    return feeds, inp


def test_onnx_matches_torch_on_real_frames(onnx_paths, models, real_views, cameras):
    lifter_onnx, den_onnx = onnx_paths
    lifter, den = models
    for B in (1, 8):  # dynamic batch
        feeds, inp = _real_step_inputs(lifter, real_views, cameras, B)
        assert max_abs_error_vs_torch(lifter_onnx, lifter, feeds) < 1e-4  # metres
        with torch.no_grad():
            x_T = lifter(torch.from_numpy(inp)).numpy()
        for t in (50.0, 25.0):
            feeds, _ = _real_step_inputs(den, real_views, cameras, B, x_t=x_T, t=t)
            assert max_abs_error_vs_torch(den_onnx, den, feeds) < 1e-4


def test_exported_graph_contract(onnx_paths, models):
    for path, model in zip(onnx_paths, models):
        m = onnx.load(str(path))
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == OPSET
        inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
        assert all(isinstance(dims[0], str) for dims in inputs.values())  # dynamic batch everywhere
        assert inputs["inp"][1:] == [17, 3]
        G, J, h, M, d = model.cache_shape
        assert inputs["lag"][1:] == [M]
        assert [n for n in inputs if n.startswith("cache_")] == [f"cache_{g}" for g in range(G)]
        assert all(inputs[f"cache_{g}"][1:] == [J, h, M, d] for g in range(G))  # static but for batch


@pytest.mark.slow
def test_split_step_matches_torch_and_the_single_graph(onnx_paths, models, real_views, cameras):
    """The split step (L + 1 graphs with the C++ attention cores between them, the ORT backend's
    default at fp32) computes the same step as torch and as the single graph, on real frames
    with real cached keys/values and a wrapped ring."""
    from posert.export.onnx import cached_split_onnx
    from posert.runtime.backends.onnxruntime import BoundStep, SplitStep, create_session

    lifter, den = models
    for split_dir, graph, model in zip(cached_split_onnx(), onnx_paths, models):
        split, single = SplitStep(split_dir), BoundStep(create_session(graph))
        assert split.cache_shape == model.cache_shape
        for B in (1, 8):
            if model is lifter:
                feeds, _ = _real_step_inputs(lifter, real_views, cameras, B)
            else:
                _, inp = _real_step_inputs(lifter, real_views, cameras, B)
                with torch.no_grad():
                    x_T = lifter(torch.from_numpy(inp)).numpy()
                feeds, _ = _real_step_inputs(den, real_views, cameras, B, x_t=x_T, t=50.0)
            got = [o.copy() for o in split.run(feeds)]
            with torch.no_grad():
                ref = model.step(*[torch.from_numpy(v) for v in feeds.values()])
            for g, r, s in zip(got, ref, single.run(feeds)):
                assert np.abs(g - r.numpy()).max() < 1e-4  # metres
                assert np.abs(g - s).max() < 1e-5
            assert np.abs(got[0]).max() > 1e-2  # a real pose / correction, not zeros


def test_split_step_folder_errors_are_clear(tmp_path):
    """A split-model folder with a missing piece or metadata that does not match its pieces
    fails at load with a clear error, never at the first tick."""
    import shutil

    import pytest

    from posert.export.onnx import cached_split_onnx
    from posert.runtime.backends.onnxruntime import SplitStep

    src = cached_split_onnx()[0]
    with pytest.raises(FileNotFoundError, match="attention.npz"):
        SplitStep(tmp_path)
    bad = tmp_path / "missing_piece"
    shutil.copytree(src, bad)
    (bad / "segment_3.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="segment_3.onnx"):
        SplitStep(bad)
    odd = tmp_path / "wrong_meta"
    shutil.copytree(src, odd)
    with np.load(odd / "attention.npz") as z:
        meta = dict(z)
    meta["pieces"] = np.int64(int(meta["pieces"]) - 2)
    np.savez(odd / "attention.npz", **meta)
    with pytest.raises(ValueError, match="pieces"):
        SplitStep(odd)
    step = SplitStep(src)
    G, J, h, M, d = step.cache_shape
    feeds = {"inp": np.zeros((2, J, 3), np.float32), "lag": np.full((2, M), M + 1, np.int64),
             **{f"cache_{g}": np.zeros((2, J, h, M + 1, d), np.float32) for g in range(G)}}
    with pytest.raises(ValueError, match="do not match"):
        step.run(feeds)
