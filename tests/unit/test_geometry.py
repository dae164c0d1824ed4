"""Cameras and metrics against closed-form references."""

import numpy as np
from scipy.spatial.transform import Rotation

from posert.camera import look_at_camera, normalize_screen, pixels_to_rays, ring_rig
from posert.metrics import accel_error, mpjpe, p_mpjpe
from tests.helpers import h36m_view


def test_projection_without_distortion_is_pinhole():
    cam = ring_rig()[0]
    X = np.random.default_rng(0).normal(0, 500, (20, 3)) + [0, 0, 900]
    Xc = cam.world_to_camera(X)
    uv = cam.project(Xc)
    ref = (Xc @ cam.K.T)[:, :2] / Xc[:, 2:]
    np.testing.assert_allclose(uv, ref, rtol=1e-10)


def test_look_at_puts_target_on_principal_point_and_up_is_up():
    base = ring_rig()[0]
    cam = look_at_camera(np.array([3000.0, -2000.0, 1500.0]), np.array([0.0, 0.0, 900.0]), base)
    np.testing.assert_allclose(cam.project(cam.world_to_camera([0.0, 0.0, 900.0])), [500, 500], atol=1e-9)
    top, bottom = cam.project(cam.world_to_camera(np.array([[0, 0, 1800.0], [0, 0, 0.0]])))
    assert top[1] < bottom[1]  # image y grows downward
    np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-12)


def test_normalize_screen_videopose3d_convention():
    px = np.array([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]])
    out = normalize_screen(px, 1000, 1002)
    np.testing.assert_allclose(out, [[-1, -1.002], [1, 1.002], [0, 0]], atol=1e-6)


def test_metrics_invariances_on_real_pose(motion):
    gt = (motion[:50] - motion[:50, :1]).astype(np.float64)
    R = Rotation.random(50, random_state=0).as_matrix()
    moved = 0.8 * np.einsum("tab,tjb->tja", R, gt) + 100.0
    assert p_mpjpe(moved, gt) < 1e-6
    assert mpjpe(moved, gt) > 100
    assert accel_error(gt + 37.0, gt) < 1e-9  # a constant offset has no acceleration
    noisy = gt + np.random.default_rng(0).normal(0, 10, gt.shape)
    assert accel_error(noisy, gt) > 10  # jitter shows up (≈ √6 σ · 0.92 for Gaussian noise)


def test_rays_invert_projection_with_real_lens_distortion(motion):
    """Pixels of real motion through a lens with H36M's distortion map back to the exact rays
    x/z, y/z of the camera-frame joints, per camera or with one camera per row."""
    px, cam3d, cam = h36m_view(motion)
    rays = cam.rays(px)
    np.testing.assert_allclose(rays, cam3d[..., :2] / cam3d[..., 2:], atol=1e-9)
    undistorted = px.copy()
    undistorted[..., 0] = cam.K[0, 0] * rays[..., 0] + cam.K[0, 2]
    assert np.abs(undistorted - px).max() > 1.0  # the lens moves these joints by pixels
    per_row = pixels_to_rays(px[:4], np.stack([cam.K] * 4), np.stack([cam.dist] * 4))
    np.testing.assert_array_equal(per_row, rays[:4])
