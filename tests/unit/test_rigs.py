"""Camera classes (posert.rigs) and the orientation metric they are scored with."""

import numpy as np
import pytest

from posert.camera import rotation
from posert.metrics import alignment_rotation
from posert.rigs import CLASSES, class_rig, sample_camera


def _angles(cam):
    """(pitch, roll) in degrees of a camera, world z up."""
    fwd, right = cam.R[2], cam.R[0]
    pitch = np.degrees(np.arcsin(fwd[2]))
    level_right = np.cross(fwd, [0.0, 0.0, 1.0])
    level_right /= np.linalg.norm(level_right)
    roll = np.degrees(np.arctan2(np.dot(np.cross(level_right, right), fwd), np.dot(level_right, right)))
    return pitch, roll


def test_rotation_is_a_right_handed_camera_with_its_pitch_and_roll():
    for yaw, pitch, roll in [(0.0, 0.0, 0.0), (1.0, -0.6, 0.3), (-2.5, 0.2, -0.5)]:
        R = rotation(yaw, pitch, roll)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1.0)
        cam = type("C", (), {"R": R})
        p, r = _angles(cam)
        assert np.isclose(p, np.degrees(pitch)) and np.isclose(r, np.degrees(roll))


@pytest.mark.parametrize("kind", list(CLASSES))
def test_each_class_draws_cameras_within_its_ranges_that_see_the_person(kind):
    c = CLASSES[kind]
    rng = np.random.default_rng(1)
    target = np.array([0.0, 0.0, 900.0])
    pitches = []
    for _ in range(200):
        cam = sample_camera(rng, target, kind)
        pos = -cam.R.T @ cam.t
        pitch, roll = _angles(cam)
        pitches.append(pitch)
        assert c.height[0] * 1000 - 1e-6 <= pos[2] <= c.height[1] * 1000 + 1e-6
        assert c.distance[0] * 1000 - 1e-6 <= np.hypot(*(pos - target)[:2]) <= c.distance[1] * 1000 + 1e-6
        lo, hi = c.roll
        assert lo - 1e-6 <= roll <= hi + 1e-6 and abs(roll) >= c.roll_min - 1e-6
        hfov = np.degrees(2 * np.arctan(cam.width / 2 / cam.K[0, 0]))
        assert c.hfov[0] - 1e-6 <= hfov <= c.hfov[1] + 1e-6
        if c.portrait in (0.0, 1.0):
            assert (cam.height > cam.width) == (c.portrait == 1.0)
        u, v = cam.project(cam.world_to_camera(target))  # the target is in the image
        assert 0 <= u < cam.width and 0 <= v < cam.height and cam.world_to_camera(target)[2] > 1000
    lo = min(c.pitch[0], *(c.up_pitch or (0,)))
    hi = max(c.pitch[1], *(c.up_pitch or (-90,)))
    assert lo - 10 <= min(pitches) and max(pitches) <= hi + 10  # the aim point moves it a few degrees
    if kind == "pitched":
        assert np.mean(np.array(pitches) < -15) > 0.6 and max(pitches) > 5


def test_a_class_rig_is_the_same_for_a_seed_and_unknown_classes_are_refused():
    a, b = class_rig("phone", 8), class_rig("phone", 8)
    assert all(np.array_equal(x.R, y.R) and np.array_equal(x.K, y.K) for x, y in zip(a, b))
    assert not np.array_equal(class_rig("phone", 8, seed=1)[0].R, a[0].R)
    with pytest.raises(ValueError, match="camera class"):
        class_rig("fisheye")


def test_alignment_rotation_recovers_a_known_rotation(real_views):
    gt = real_views[1][0, :200]  # (200, 17, 3) m, root-relative, real motion
    R0 = rotation(0.4, -0.3, 0.2)
    R, angle = alignment_rotation(gt @ R0.T, gt)
    np.testing.assert_allclose(R, R0.T, atol=1e-9)
    assert np.isclose(angle, np.degrees(np.arccos((np.trace(R0) - 1) / 2)))
    assert alignment_rotation(gt, gt)[1] < 1e-5
