"""posert.camera.load_calibration: OpenCV FileStorage YAML, YAML and JSON camera calibrations."""

import json

import numpy as np
import pytest

from posert.camera import LEVEL_R, load_calibration
from tests.conftest import DATA

K = [[900.0, 0.0, 640.0], [0.0, 905.0, 360.0], [0.0, 0.0, 1.0]]


def test_the_committed_opencv_yaml_reads_as_an_oriented_level_camera():
    cam = load_calibration(DATA / "sports2d_clip_calib.yaml")
    np.testing.assert_allclose(cam.R, LEVEL_R, atol=1e-12)  # rvec (π/2, 0, 0): level, looking along +y
    np.testing.assert_allclose(-cam.R.T @ cam.t, [0.0, 0.0, 1200.0], atol=1e-9)  # 1.2 m above the floor
    assert cam.oriented and (cam.width, cam.height) == (320, 240) and cam.K[0, 0] == 400.0


def test_json_with_common_key_names_rotation_vector_and_metres(tmp_path):
    p = tmp_path / "cam.json"
    p.write_text(json.dumps({"cam0": {"camera_matrix": K, "dist_coeffs": [0.1, -0.05, 0.001, 0.0],
                                      "rotation_vector": [0.3, -0.2, 0.1], "tvec": [0.1, 1.5, 3.0], "units": "m",
                                      "image_width": 1280, "image_height": 720}}))
    cam = load_calibration(p)
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(cam.R, Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix())
    np.testing.assert_allclose(cam.t, [100.0, 1500.0, 3000.0])
    np.testing.assert_allclose(cam.dist, [0.1, -0.05, 0.001, 0.0, 0.0])
    assert cam.oriented


def test_intrinsics_only_is_not_oriented_and_the_size_can_come_from_the_caller(tmp_path):
    p = tmp_path / "intr.yaml"
    p.write_text(f"K: {K}\ndist: [0, 0, 0, 0, 0]\n")
    cam = load_calibration(p, width=1280, height=720)
    assert not cam.oriented and cam.width == 1280
    with pytest.raises(ValueError, match="image size"):
        load_calibration(p)


@pytest.mark.parametrize("text,words", [
    ("dist: [0, 0, 0, 0]\nwidth: 10\nheight: 10\n", "no intrinsic matrix"),
    (f"K: {K}\nR: [[1, 0, 0], [0, 2, 0], [0, 0, 1]]\nwidth: 10\nheight: 10\n", "not a rotation"),
    (f"K: {K}\ndist: [0, 0, 0, 0, 0, 0.5, 0, 0]\nwidth: 10\nheight: 10\n", "rational"),
    (f"K: {K}\ndist: [nan, 0, 0, 0]\nwidth: 10\nheight: 10\n", "finite"),
    ("K: [1, 2, 3]\nwidth: 10\nheight: 10\n", "K must be"),
    ("- just\n- a list\n", "mapping"),
    ("K: [[1, 2\n", "not a readable calibration"),
])
def test_a_bad_calibration_is_one_clear_error(tmp_path, text, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_calibration(p)
    with pytest.raises(FileNotFoundError):
        load_calibration(tmp_path / "missing.yaml")
