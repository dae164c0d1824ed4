"""The upright view (posert.runtime.upright): a stream whose camera orientation is known is lifted
as the upright camera at its place (the same viewing direction, no roll) sees it, and its
world-frame poses follow the camera's R."""

import numpy as np

from posert.camera import LEVEL_R, Camera, look_at_camera, rotation, upright_rotation
from posert.data.dataset import center_on_floor, render
from posert.runtime import Pipeline


def _camera(pitch_deg, roll_deg):
    K = np.array([[900.0, 0, 620.0], [0, 900.0, 370.0], [0, 0, 1]])
    pos = np.array([-2500.0 * np.cos(0.7), -2500.0 * np.sin(0.7), 2300.0])
    R = rotation(0.7, np.radians(pitch_deg), np.radians(roll_deg))
    return Camera("rolled", R, -R @ pos, K, np.zeros(5), 1280, 720), pos


def test_upright_rotation_keeps_the_viewing_direction_and_drops_the_roll():
    cam, _ = _camera(-32.0, 17.0)
    U = upright_rotation(cam.R)
    np.testing.assert_allclose(U @ U.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(U[2], cam.R[2], atol=1e-12)  # the same optical axis
    assert abs(U[0, 2]) < 1e-12  # image x horizontal: no roll
    np.testing.assert_allclose(U, rotation(0.7, np.radians(-32.0), 0.0), atol=1e-12)
    down = look_at_camera(np.array([0, 0, 3000.0]), np.array([1.0, 0, 0]), cam)  # nearly straight down
    assert np.isfinite(upright_rotation(down.R)).all()


def test_a_known_camera_rotation_round_trips(motion):
    """The same motion through a camera pitched 32° down and rolled 17° (oriented) and through the
    upright camera at its place (pitched 32°, no roll): rectified, the rolled stream's 2D is the
    upright camera's, so its pose turned into that camera's frame is the upright stream's, and
    both world-frame poses agree; without the orientation (oriented=False) the rolled stream is
    lifted as it looks. The world-frame pose stands upright."""
    world = center_on_floor(motion[:60])
    cam, pos = _camera(-32.0, 17.0)
    U = upright_rotation(cam.R)
    upright = Camera("upright", U, -U @ pos, cam.K, cam.dist, cam.width, cam.height)
    unknown = Camera(cam.name, cam.R, cam.t, cam.K, cam.dist, cam.width, cam.height, oriented=False)
    cams = {"rolled": cam, "upright": upright, "unknown": unknown}
    views = {k: render(world, c)[0] for k, c in cams.items()}
    with Pipeline(backend="native", max_streams=3, threads=1, correction="off") as pipe:
        for k, c in cams.items():
            pipe.add_stream(k, c.width, c.height, c)
        out = {k: [] for k in views}
        for t in range(60):
            pipe.push_many(list(views), np.stack([views[k][t] for k in views]), None, [t / 50] * 3)
            r = pipe.tick()
            for k in views:
                i = r.stream_ids.index(k)
                out[k].append((r.refined[i].copy(), r.world[i].copy()))
    rolled, up_, unk = (np.array([o[0] for o in out[k]]) for k in ("rolled", "upright", "unknown"))
    w_rolled, w_upright, w_unknown = (np.array([o[1] for o in out[k]]) for k in ("rolled", "upright", "unknown"))
    rect = U @ cam.R.T  # rolled camera frame → upright camera frame
    np.testing.assert_allclose(rolled @ rect.T, up_, atol=0.05)  # mm: the rectified 2D in float32
    np.testing.assert_allclose(w_rolled, w_upright, atol=0.05)
    np.testing.assert_allclose(w_rolled, rolled @ cam.R, atol=1e-3)  # world = Rᵀ · camera frame
    np.testing.assert_allclose(w_unknown, unk @ LEVEL_R, atol=1e-3)  # unknown: as a level camera
    assert np.abs(unk - rolled).max() > 50  # mm: the upright view changed what the models saw
    gt = world - world[:, :1]  # world-frame truth, root-relative
    head_up = lambda p: p[:, 10, 2] - p[:, 0, 2]  # noqa: E731  head above pelvis, world z (mm)
    assert np.all(head_up(w_rolled) > 300) and np.abs(head_up(w_rolled) - head_up(gt)).mean() < 150
