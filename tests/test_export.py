"""ONNX export of the committed checkpoints, checked against torch on real windows."""

import numpy as np
import onnx

from posert.export.onnx import OPSET, max_abs_error_vs_torch


def test_onnx_matches_torch_on_real_windows(onnx_paths, models, real_windows):
    lifter_onnx, den_onnx = onnx_paths
    lifter, den = models
    for B in (1, 8):  # dynamic batch
        win = real_windows[:B]
        assert max_abs_error_vs_torch(lifter_onnx, lifter, {"inp": win}) < 1e-4  # metres
        import torch

        with torch.no_grad():
            x_T = lifter(torch.from_numpy(win)).numpy()
        for t in (50.0, 25.0):
            err = max_abs_error_vs_torch(den_onnx, den, {"inp": win, "x_t": x_T, "t": np.full(B, t, np.float32)})
            assert err < 1e-4


def test_exported_graph_contract(onnx_paths):
    for path in onnx_paths:
        m = onnx.load(str(path))
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == OPSET
        dims = m.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch
        assert [d.dim_value for d in dims[1:]] == [27, 17, 3]  # fixed window N
