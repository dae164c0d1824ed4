"""Cameras as real users mount them: classes of camera placement and lens for evaluation and for
training.

A robot's head camera, a phone on a tripod, a ceiling or wall camera look down, roll, and are
portrait as often as landscape. Each class below draws a camera around a target point (the
person's mean pelvis, world frame, z up, mm) from ranges of its own:

========  ===============  =========  =========  ============  ===========  ==================
class     pitch (°, + up)  roll (°)   height (m)  distance (m)  hfov (°)     image
========  ===============  =========  =========  ============  ===========  ==================
level     −5 … +5          0          0.8 … 1.8  3 … 6         50 … 70      landscape
pitched   −45 … −15,       0          0.3 … 3    2 … 8         50 … 75      landscape
          +5 … +15 (1/5)
rolled    −20 … +5         ±10 … ±30  0.5 … 2.5  2.5 … 6       50 … 75      landscape
portrait  −20 … +5         0          0.5 … 2    2.5 … 6       45 … 65      portrait
phone     −25 … +10        ±5         0.8 … 1.6  2 … 4         60 … 80      either
========  ===============  =========  =========  ============  ===========  ==================

The horizontal field of view (hfov) is across the image's width; the principal point is off the
centre by up to 4 % of the image size; the camera aims at a point up to 0.4 m beside the target,
so the person is not always in the middle. Pitch fixes the height for a given distance (the camera
looks at the target), and draws that give a height outside the class's range (above the floor of
a target at pelvis height, :data:`PELVIS_HEIGHT_MM`) are redrawn. Every camera is distortion-free
(lens distortion stays the H36M protocol's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posert.camera import Camera, rotation

#: A standing adult's pelvis above the floor, mm: a target this high stands on the floor at z = 0.
PELVIS_HEIGHT_MM = 900.0
#: Image sizes, landscape (width, height); portrait transposes them.
IMAGE_SIZES = ((1920, 1080), (1280, 720), (640, 480))


@dataclass(frozen=True)
class CameraClass:
    """The ranges one class of cameras is drawn from (module docstring): degrees, metres."""

    pitch: tuple[float, float]
    roll: tuple[float, float]
    height: tuple[float, float]
    distance: tuple[float, float]
    hfov: tuple[float, float]
    portrait: float  # probability of a portrait image
    up_pitch: tuple[float, float] | None = None  # a second pitch range, drawn with probability 1/5
    roll_min: float = 0.0  # |roll| at least this


CLASSES: dict[str, CameraClass] = {
    "level": CameraClass((-5, 5), (0, 0), (0.8, 1.8), (3, 6), (50, 70), 0.0),
    "pitched": CameraClass((-45, -15), (0, 0), (0.3, 3.0), (2, 8), (50, 75), 0.0, up_pitch=(5, 15)),
    "rolled": CameraClass((-20, 5), (-30, 30), (0.5, 2.5), (2.5, 6), (50, 75), 0.0, roll_min=10),
    "portrait": CameraClass((-20, 5), (0, 0), (0.5, 2.0), (2.5, 6), (45, 65), 1.0),
    "phone": CameraClass((-25, 10), (-5, 5), (0.8, 1.6), (2, 4), (60, 80), 0.5),
}
#: ``posert eval --cameras``: the real H36M cameras, the offline ring, a class, or every class.
CAMERA_SETS = ("h36m", "ring", *CLASSES, "all")


def sample_camera(rng: np.random.Generator, target: np.ndarray, kind: str, name: str | None = None) -> Camera:
    """One camera of class ``kind`` (:data:`CLASSES`) around ``target`` (3,) mm, world frame.
    Raises ValueError for an unknown class."""
    if kind not in CLASSES:
        raise ValueError(f"camera class must be one of {tuple(CLASSES)}, got {kind!r}")
    c = CLASSES[kind]
    target = np.asarray(target, np.float64)
    floor = target[2] - PELVIS_HEIGHT_MM  # heights are above the floor the person stands on
    for _ in range(1000):
        pitch = rng.uniform(*(c.up_pitch if c.up_pitch and rng.random() < 0.2 else c.pitch))
        d = rng.uniform(*c.distance) * 1000.0
        h = target[2] + d * np.tan(np.radians(-pitch))  # looking at the target from d away
        if c.height[0] * 1000.0 <= h - floor <= c.height[1] * 1000.0:
            break
    else:  # pragma: no cover - every class's ranges intersect
        raise RuntimeError(f"no camera of class {kind} found")
    yaw = rng.uniform(0, 2 * np.pi)
    aim = target + np.append(rng.uniform(-400, 400, 2), rng.uniform(-200, 200))  # off the target
    pos = target - d * np.array([np.cos(yaw), np.sin(yaw), 0.0])
    pos[2] = h
    v = aim - pos
    yaw_a, pitch_a = np.arctan2(v[1], v[0]), np.arctan2(v[2], np.hypot(v[0], v[1]))
    roll = rng.uniform(*c.roll)
    if c.roll_min and abs(roll) < c.roll_min:
        roll = np.sign(roll or 1.0) * rng.uniform(c.roll_min, max(abs(c.roll[0]), abs(c.roll[1])))
    R = rotation(yaw_a, pitch_a, np.radians(roll))
    w, hgt = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    if rng.random() < c.portrait:
        w, hgt = hgt, w
    f = (w / 2.0) / np.tan(np.radians(rng.uniform(*c.hfov)) / 2.0)
    cx, cy = w / 2.0 + rng.uniform(-0.04, 0.04) * w, hgt / 2.0 + rng.uniform(-0.04, 0.04) * hgt
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return Camera(name or kind, R, -R @ pos, K, np.zeros(5), int(w), int(hgt))


def class_rig(kind: str, n: int = 4, seed: int = 0, target=(0.0, 0.0, 900.0)) -> list[Camera]:
    """``n`` cameras of class ``kind`` around ``target`` (mm; default: where
    :func:`~posert.data.dataset.center_on_floor` puts a take's pelvis), the same for a given seed:
    the evaluation rig of that class (``posert eval --cameras KIND``)."""
    if kind not in CLASSES:
        raise ValueError(f"camera class must be one of {tuple(CLASSES)}, got {kind!r}")
    rng = np.random.default_rng([seed, list(CLASSES).index(kind)])
    return [sample_camera(rng, np.asarray(target, np.float64), kind, f"{kind}{i}") for i in range(n)]
