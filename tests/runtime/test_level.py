"""The level view (posert.runtime.level): a stream whose camera orientation is known is lifted as
the level camera at its place sees it, and its world-frame poses follow the camera's R."""

import numpy as np

from posert.camera import LEVEL_R, Camera, level_rotation, look_at_camera
from posert.config import BackendConfig
from posert.data.dataset import center_on_floor, render
from posert.rigs import rotation
from posert.runtime import Pipeline
from posert.runtime.backends import create_backend


def _pitched(pitch_deg, roll_deg):
    K = np.array([[900.0, 0, 620.0], [0, 900.0, 370.0], [0, 0, 1]])
    yaw, pos = 0.7, np.array([-2500.0 * np.cos(0.7), -2500.0 * np.sin(0.7), 2300.0])
    R = rotation(yaw, np.radians(pitch_deg), np.radians(roll_deg))
    return Camera("pitched", R, -R @ pos, K, np.zeros(5), 1280, 720), pos


def test_level_rotation_keeps_the_heading_and_drops_pitch_and_roll():
    cam, _ = _pitched(-32.0, 17.0)
    L = level_rotation(cam.R)
    np.testing.assert_allclose(L @ L.T, np.eye(3), atol=1e-12)
    assert abs(L[2, 2]) < 1e-12 and abs(L[0, 2]) < 1e-12  # forward and right are horizontal
    np.testing.assert_allclose(L[1], [0, 0, -1], atol=1e-12)  # image y is straight down
    heading = cam.R[2, :2] / np.linalg.norm(cam.R[2, :2])
    np.testing.assert_allclose(L[2, :2], heading, atol=1e-12)
    down = look_at_camera(np.array([0, 0, 3000.0]), np.array([1.0, 0, 0]), cam)  # nearly straight down
    assert np.isfinite(level_rotation(down.R)).all()


def test_a_known_camera_rotation_round_trips(motion):
    """The same motion through a camera pitched 32° down and rolled 17° (oriented) and through the
    level camera at its place: rectified, the pitched stream's 2D is the level camera's, so its
    pose turned into the level camera's frame is the level stream's, and both world-frame poses
    agree; without the orientation (oriented=False) the pitched stream is lifted as it looks."""
    world = center_on_floor(motion[:60])
    cam, pos = _pitched(-32.0, 17.0)
    L = level_rotation(cam.R)
    level = Camera("level", L, -L @ pos, cam.K, cam.dist, cam.width, cam.height)
    unknown = Camera(cam.name, cam.R, cam.t, cam.K, cam.dist, cam.width, cam.height, oriented=False)
    views = {k: render(world, c)[0] for k, c in (("pitched", cam), ("level", level), ("unknown", unknown))}
    backend = create_backend(BackendConfig(name="native", threads=1))
    backend.level_view = True  # as for models trained on level views (posert train --class-cameras)
    with Pipeline(backend=backend, max_streams=3, correction="off") as pipe:
        for k, c in (("pitched", cam), ("level", level), ("unknown", unknown)):
            pipe.add_stream(k, c.width, c.height, c)
        out = {k: [] for k in views}
        for t in range(60):
            pipe.push_many(list(views), np.stack([views[k][t] for k in views]), None, [t / 50] * 3)
            r = pipe.tick()
            for k in views:
                i = r.stream_ids.index(k)
                out[k].append((r.refined[i].copy(), r.world[i].copy()))
    pitched, lev, unk = (np.array([o[0] for o in out[k]]) for k in ("pitched", "level", "unknown"))
    w_pitched, w_level, w_unknown = (np.array([o[1] for o in out[k]]) for k in ("pitched", "level", "unknown"))
    rect = L @ cam.R.T  # pitched camera frame → level camera frame
    np.testing.assert_allclose(pitched @ rect.T, lev, atol=0.05)  # mm: the rectified 2D in float32
    np.testing.assert_allclose(w_pitched, w_level, atol=0.05)
    np.testing.assert_allclose(w_pitched, pitched @ cam.R, atol=1e-3)  # world = Rᵀ · camera frame
    np.testing.assert_allclose(w_unknown, unk @ LEVEL_R, atol=1e-3)  # unknown: as a level camera
    assert np.abs(unk - pitched).max() > 50  # mm: the level view changed what the models saw
    gt = world - world[:, :1]  # world-frame truth, root-relative
    up = lambda p: p[:, 10, 2] - p[:, 0, 2]  # noqa: E731  head above pelvis, world z (mm)
    assert np.all(up(w_pitched) > 300) and np.abs(up(w_pitched) - up(gt)).mean() < 150


def test_models_not_trained_on_level_views_see_the_camera_as_it_is(motion):
    """The committed lifter was not trained on level views (its meta has no ``level_view``): an
    oriented stream is lifted as it looks, its world-frame pose is its camera-frame pose turned by
    the camera's R."""
    world = center_on_floor(motion[:20])
    cam, _ = _pitched(-32.0, 17.0)
    unknown = Camera(cam.name, cam.R, cam.t, cam.K, cam.dist, cam.width, cam.height, oriented=False)
    px = render(world, cam)[0]
    with Pipeline(backend="native", max_streams=2, threads=1, correction="off") as pipe:
        pipe.add_stream("oriented", cam.width, cam.height, cam)
        pipe.add_stream("unknown", cam.width, cam.height, unknown)
        for t in range(20):
            pipe.push_many(["oriented", "unknown"], np.stack([px[t], px[t]]), None, [t / 50] * 2)
            r = pipe.tick()
    np.testing.assert_array_equal(r.refined[0], r.refined[1])
    np.testing.assert_allclose(r.world[0], r.refined[0] @ cam.R, atol=1e-3)
    np.testing.assert_allclose(r.world[1], r.refined[1] @ LEVEL_R, atol=1e-3)
