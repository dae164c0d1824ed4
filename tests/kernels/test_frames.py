"""posert._C.prepare_frames against the NumPy normalisation."""

import numpy as np
import pytest

from posert import _C


def test_prepare_frames_matches_numpy_normalisation(real_views):
    """Pipeline.push_many's C++ validation + normalisation equals the NumPy form of
    normalize_screen bit for bit on real 2D (missing joints with NaN coordinates included), and
    reports the first bad confidence before the first NaN on a visible joint; a visible joint out
    of view (beyond the margin, in image sizes) becomes missing and is counted, and a coordinate
    beyond float32's range is refused."""
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
    dropped = np.full(B, -1, np.int32)
    assert _C.prepare_frames(px, conf, size, slots, 2.0, out, dropped) == (-1, 0)
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    assert np.all(dropped == 0)
    far = px.copy()
    far[3, 4] = (-2.01 * w[3, 0], 10.0)  # just beyond two image widths to the left
    far[9, 0] = (5.0, 3.05 * h[9, 0])  # just beyond two image heights below
    far[9, 1] = (1e30, 1e30)  # a point behind a camera, projected
    far[20, 2] = (-1.99 * w[20, 0], 2.99 * h[20, 0])  # inside the margin: kept
    conf_far = conf.copy()
    conf_far[[3, 9, 9, 20], [4, 0, 1, 2]] = 0.9
    assert _C.prepare_frames(far, conf_far, size, slots, 2.0, out, dropped) == (-1, 0)
    assert dropped[3] == 1 and dropped[9] == 2 and dropped[20] == 0 and dropped.sum() == 3
    assert np.all(out[[3, 9, 9], [4, 0, 1]] == 0) and out[20, 2, 2] == np.float32(0.9)
    far[7, 7] = (1e300, 0.0)
    conf_far[7, 7] = 1.0
    assert _C.prepare_frames(far, conf_far, size, slots, 2.0, out, dropped) == (7, 3)
    bad_conf, bad_kp = conf.copy(), px.copy()
    bad_conf[70, 3] = 1.5
    bad_kp[12, 5] = np.inf
    bad_conf[12, 5] = 0.5
    assert _C.prepare_frames(bad_kp, bad_conf, size, slots, 2.0, out, dropped) == (70, 1)  # confidences first
    bad_conf[70, 3] = 1.0
    assert _C.prepare_frames(bad_kp, bad_conf, size, slots, 2.0, out, dropped) == (12, 2)
    with pytest.raises(IndexError):
        _C.prepare_frames(px, conf, size, np.full(B, 9), 2.0, out, dropped)
    with pytest.raises(ValueError, match="margin"):
        _C.prepare_frames(px, conf, size, slots, -1.0, out, dropped)
