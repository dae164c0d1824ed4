"""Pinhole cameras with Brown–Conrady distortion, world↔camera transforms and 2D normalisation.

Frames: the world frame is z-up, millimetres. The camera frame is OpenCV's (x right, y down,
z forward), millimetres; ``x_cam = R @ X_world + t``. Pixel coordinates have their origin at the
top-left corner of the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Image size (width, height) in pixels of the four Human3.6M cameras, by serial number.
H36M_RESOLUTION: dict[str, tuple[int, int]] = {
    "54138969": (1000, 1002),
    "55011271": (1000, 1000),
    "58860488": (1000, 1000),
    "60457274": (1000, 1002),
}


@dataclass(frozen=True)
class Camera:
    """A calibrated camera.

    Attributes:
        name: identifier (H36M serial number or a generated name).
        R: (3, 3) float64 rotation world → camera.
        t: (3,) float64 translation, mm: ``x_cam = R @ X_world + t``.
        K: (3, 3) float64 intrinsic matrix, pixels.
        dist: (5,) float64 distortion (k1, k2, p1, p2, k3), OpenCV order.
        width, height: image size in pixels.
        oriented: ``R`` is the camera's real orientation in a z-up world (a calibration's
            extrinsics, an IMU, a robot's kinematics): the pipeline then lifts its upright view
            (:func:`upright_rotation`) and reports world-frame poses. False for :meth:`guess`
            and for intrinsics-only calibrations.
    """

    name: str
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    oriented: bool = True

    @classmethod
    def guess(cls, width: int, height: int) -> Camera:
        """Intrinsics for an uncalibrated ``width`` × ``height`` camera: focal length max(width,
        height) px (a 53° field of view across the longer side), principal point at the image
        centre, no distortion; identity pose. Enough for the correction stage, which trades a
        wrong focal length for the pose's distance: on the validation motion through the real
        H36M cameras its lateral step gave 98.9 mm against 98.6 with their calibration
        (experiments/README.md). ValueError for a non-positive size."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}×{height}")
        f = float(max(width, height))
        K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
        return cls("guess", np.eye(3), np.zeros(3), K, np.zeros(5), int(width), int(height), oriented=False)

    def world_to_camera(self, X: np.ndarray) -> np.ndarray:
        """Map (..., 3) world points (mm, z-up) to the camera frame (mm, OpenCV axes)."""
        X = np.asarray(X, dtype=np.float64)
        return X @ self.R.T + self.t

    def project(self, X_cam: np.ndarray) -> np.ndarray:
        """Project (..., 3) camera-frame points (mm) to (..., 2) pixels, with lens distortion.

        Points behind or on the image plane (z ≤ 1 mm) are clamped to z = 1 mm so the result is
        always finite; callers that care mark such joints as missing.
        """
        X_cam = np.asarray(X_cam, dtype=np.float64)
        z = np.maximum(X_cam[..., 2:3], 1.0)
        xn = X_cam[..., :2] / z
        x, y = xn[..., 0], xn[..., 1]
        k1, k2, p1, p2, k3 = self.dist
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def rays(self, px: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Invert :meth:`project` up to depth: (..., 2) pixels → (..., 2) float64 normalised image
        coordinates (x/z, y/z) of the camera-frame rays through them (distortion removed).

        See :func:`pixels_to_rays` for the method and its accuracy.
        """
        return pixels_to_rays(px, self.K, self.dist, iterations)


def pixels_to_rays(px: np.ndarray, K: np.ndarray, dist: np.ndarray, iterations: int = 8) -> np.ndarray:
    """(..., 2) pixels → (..., 2) float64 undistorted normalised coordinates (x/z, y/z), the
    camera-frame ray of each pixel (OpenCV axes), for cameras modelled as :meth:`Camera.project`.

    ``K``: (..., 3, 3) intrinsics and ``dist``: (..., 5) Brown–Conrady (k1, k2, p1, p2, k3), both
    broadcast against the points' leading axes (one camera, or one per row). The distortion is
    removed by the fixed-point iteration OpenCV's ``undistortPoints`` uses (x ← (x_d − tangential(x))
    / radial(x)); for the Human3.6M lenses inside the image, 8 iterations reproject to within
    1e-6 px (tested). NaN pixels give NaN rays.
    """
    px = np.asarray(px, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    dist = np.asarray(dist, dtype=np.float64)
    extra = px.ndim - 1 - (K.ndim - 2)  # point axes beyond the cameras' own leading axes

    def per_point(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape + (1,) * extra)

    fx, fy, skew, cx, cy = (per_point(K[..., i, j]) for i, j in ((0, 0), (1, 1), (0, 1), (0, 2), (1, 2)))
    k1, k2, p1, p2, k3 = (per_point(dist[..., i]) for i in range(5))
    yd = (px[..., 1] - cy) / fy
    xd = (px[..., 0] - cx - skew * yd) / fx
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        x, y = ((xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / radial,
                (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / radial)
    return np.stack([x, y], axis=-1)


#: World → camera rotation of a level camera looking along world +y (x right, y down, z forward):
#: how a stream's poses are turned into the world frame when its camera's orientation is unknown.
LEVEL_R = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World → camera rotation (3, 3) of a camera looking along heading ``yaw`` (rad, from +x
    toward +y), tilted up by ``pitch`` and rolled clockwise in its image by ``roll`` (rad); world
    z up, camera OpenCV axes (x right, y down, z forward)."""
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    cr, sr = np.cos(roll), np.sin(roll)
    return np.stack([cr * right + sr * down, -sr * right + cr * down, fwd])


def _no_roll(fwd: np.ndarray) -> np.ndarray | None:
    """World → camera rotation (3, 3) of the camera looking along the unit vector ``fwd`` (world)
    with its image x axis horizontal (world z up); None when ``fwd`` is (nearly) vertical."""
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    n = np.linalg.norm(right)
    if n < 1e-6:
        return None
    right /= n
    return np.stack([right, np.cross(fwd, right), fwd])


def upright_rotation(R: np.ndarray) -> np.ndarray:
    """The upright camera at a camera's place: world → camera rotation (3, 3) of the camera with
    ``R``'s viewing direction (heading and pitch) but no roll, its image x axis horizontal (world
    z up). ``R_upright @ R.T`` is a rotation about the optical axis: it turns the image so the
    horizon is level, and the person upright, without moving the person off the image centre. For
    a camera that looks straight down or up (no horizon) it is ``R``."""
    R = np.asarray(R, np.float64)
    upright = _no_roll(R[2])
    return R.copy() if upright is None else upright


def level_rotation(R: np.ndarray) -> np.ndarray:
    """The level camera at a camera's place: world → camera rotation (3, 3) of the camera with
    ``R``'s heading (the horizontal direction it looks along) but no pitch and no roll, its image
    x axis horizontal and its y axis straight down (world z up). For a camera that looks (nearly)
    straight down or up, the heading is its image's up direction. ``R_level @ R.T`` turns the
    camera's rays into the level camera's (training draws such views: ``class_camera``)."""
    R = np.asarray(R, np.float64)
    fwd, down = R[2], R[1]
    heading = fwd[:2] if np.hypot(*fwd[:2]) > 1e-3 else -down[:2] * np.sign(fwd[2] or 1.0)
    return rotation(np.arctan2(heading[1], heading[0]), 0.0, 0.0)


def normalize_screen(px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalise pixel coordinates as VideoPose3D does: ``x / w * 2 - [1, h / w]``.

    Args:
        px: (..., 2) pixels. Returns (..., 2) float32, x in [-1, 1], aspect ratio preserved.
    """
    px = np.asarray(px, dtype=np.float32)
    return px / np.float32(width) * 2 - np.array([1.0, height / width], dtype=np.float32)


def load_h36m_cameras(path: str | Path, subject: str = "S9") -> list[Camera]:
    """Load the four real Human3.6M cameras of one subject from ``camera-parameters.json``.

    The file (shipped in the ``gvhmr`` sdist, see ``posert.data.sources``) holds ``intrinsics``
    by serial number and ``extrinsics[subject][serial]`` with ``R`` (3×3) and ``t`` (mm).

    Raises:
        FileNotFoundError: if the file does not exist.
        KeyError: if the subject is not in the file.
    """
    data = json.loads(Path(path).read_text())
    if subject not in data["extrinsics"]:
        raise KeyError(f"subject {subject!r} not in {path}; have {sorted(data['extrinsics'])}")
    cams = []
    for serial, intr in sorted(data["intrinsics"].items()):
        ext = data["extrinsics"][subject][serial]
        w, h = H36M_RESOLUTION[serial]
        cams.append(Camera(
            name=serial,
            R=np.array(ext["R"], dtype=np.float64),
            t=np.array(ext["t"], dtype=np.float64).reshape(3),
            K=np.array(intr["calibration_matrix"], dtype=np.float64),
            dist=np.array(intr["distortion"], dtype=np.float64),
            width=w, height=h,
        ))
    return cams


def look_at_camera(position: np.ndarray, target: np.ndarray, intrinsics: Camera,
                   name: str = "virtual") -> Camera:
    """A camera at ``position`` (mm, world) looking at ``target`` (mm, world), z-up, no roll.

    Intrinsics, distortion and image size are copied from ``intrinsics``.

    Raises:
        ValueError: if the camera looks straight up or down (no defined horizon).
    """
    position = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - position
    fwd /= np.linalg.norm(fwd)
    R = _no_roll(fwd)
    if R is None:
        raise ValueError("look_at_camera: viewing direction is vertical")
    return Camera(name, R, -R @ position, intrinsics.K, intrinsics.dist,
                  intrinsics.width, intrinsics.height)


def random_camera(rng: np.random.Generator, target: np.ndarray, intrinsics: list[Camera]) -> Camera:
    """A random camera for augmentation (DATA.md): 3–6 m from ``target`` horizontally, 0.5–2 m
    above the floor, any yaw, real intrinsics of a randomly chosen camera in ``intrinsics``.

    Args:
        target: (3,) world point (mm) the camera looks at, usually the pelvis.
    """
    yaw = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(3000, 6000)
    height = rng.uniform(500, 2000)
    pos = np.array([target[0] + dist * np.cos(yaw), target[1] + dist * np.sin(yaw), height])
    return look_at_camera(pos, target, intrinsics[rng.integers(len(intrinsics))], "random")


def ring_rig(intrinsics: Camera | None = None, distance: float = 4500.0, height: float = 1500.0,
             n: int = 4) -> list[Camera]:
    """A deterministic rig of ``n`` cameras on a circle around the world origin, looking at
    (0, 0, 900) mm. Used where the real H36M calibration has not been fetched (tests).

    With ``intrinsics=None`` a distortion-free 1000×1000 camera with f = 1145 px is used.
    """
    if intrinsics is None:
        K = np.array([[1145.0, 0, 500.0], [0, 1145.0, 500.0], [0, 0, 1]])
        intrinsics = Camera("ring", np.eye(3), np.zeros(3), K, np.zeros(5), 1000, 1000)
    cams = []
    for i in range(n):
        a = 2 * np.pi * (i + 0.125) / n
        pos = np.array([distance * np.cos(a), distance * np.sin(a), height])
        cams.append(look_at_camera(pos, np.array([0.0, 0.0, 900.0]), intrinsics, f"ring{i}"))
    return cams


_CALIB_KEYS = {
    "K": ("K", "camera_matrix", "cameraMatrix", "intrinsics", "intrinsic_matrix", "M", "mtx"),
    "dist": ("dist", "distortion", "distortion_coefficients", "dist_coeffs", "distCoeffs", "D"),
    "R": ("R", "rotation", "rotation_matrix"),
    "rvec": ("rvec", "rvecs", "rotation_vector", "om"),
    "t": ("t", "T", "tvec", "tvecs", "translation"),
    "width": ("width", "image_width", "imageWidth", "w"),
    "height": ("height", "image_height", "imageHeight", "h"),
}


def _read_calibration_file(path: Path) -> dict:
    """A calibration file's top-level mapping: JSON, YAML, or OpenCV FileStorage YAML (``%YAML:1.0``
    with ``!!opencv-matrix`` nodes, read as arrays)."""
    import yaml

    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        if text.startswith("%YAML:"):
            text = text.split("\n", 1)[1] if "\n" in text else ""
            if text.startswith("---"):
                text = text[3:]

        class Loader(yaml.SafeLoader):
            pass

        def matrix(loader, node):
            m = loader.construct_mapping(node, deep=True)
            return np.asarray(m["data"], np.float64).reshape(int(m["rows"]), int(m["cols"]))

        Loader.add_constructor("tag:yaml.org,2002:opencv-matrix", matrix)
        Loader.add_constructor("!opencv-matrix", matrix)
        data = yaml.load(text, Loader=Loader)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))  # one named camera: {"cam0": {...}}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a calibration is a mapping of K, dist, R/rvec, t, width, height")
    return data


def load_calibration(path: str | Path, width: int | None = None, height: int | None = None) -> Camera:
    """Read a camera calibration: JSON or YAML (OpenCV's FileStorage YAML included) with the
    intrinsic matrix ``K`` (or ``camera_matrix``, …), the distortion ``dist`` (k1 k2 p1 p2 [k3]; or
    ``distortion_coefficients``, ``D``, …), optionally the extrinsics ``R`` (3 × 3) or ``rvec``
    (Rodrigues) and ``t``/``tvec``, and the image ``width``/``height``.

    The extrinsics map a z-up world (gravity along −z) to the camera, ``x_cam = R X + t``, t in mm
    (a top-level ``"units": "m"`` scales it): then the camera is ``oriented`` and the pipeline
    lifts its upright view and reports world-frame poses. Without them the camera is not oriented.
    ``width``/``height`` fill in a file without the image size. Raises FileNotFoundError, and
    ValueError for a file that is not such a calibration (one line naming what is wrong).
    """
    from scipy.spatial.transform import Rotation

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no calibration at {path}")
    try:
        data = _read_calibration_file(path)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable calibration ({' '.join(str(e).split())})") from None
    except Exception as e:  # yaml's own parser errors
        raise ValueError(f"{path} is not a readable calibration ({type(e).__name__})") from None

    def get(kind):
        for k in _CALIB_KEYS[kind]:
            if k in data:
                return data[k]
        return None

    def arr(kind, shape):
        v = get(kind)
        if v is None:
            return None
        try:
            a = np.asarray(v, np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {kind} is not numeric") from None
        if a.size != int(np.prod(shape)) or not np.isfinite(a).all():
            raise ValueError(f"{path}: {kind} must be {shape} finite numbers, got {a.shape}")
        return a.reshape(shape)

    K = arr("K", (3, 3))
    if K is None:
        raise ValueError(f"{path}: no intrinsic matrix (K or camera_matrix)")
    d = get("dist")
    dist = np.zeros(5)
    if d is not None:
        dv = np.asarray(d, np.float64).reshape(-1)
        if not (4 <= dv.size <= 14) or not np.isfinite(dv).all():
            raise ValueError(f"{path}: dist must hold 4 to 14 finite coefficients (OpenCV order), got {dv.size}")
        if np.any(dv[5:] != 0):
            raise ValueError(f"{path}: only k1 k2 p1 p2 k3 distortion is modelled (the rational and thin-prism "
                             "coefficients must be 0)")
        dist[:min(5, dv.size)] = dv[:5]
    R = arr("R", (3, 3))
    if R is None and get("rvec") is not None:
        R = Rotation.from_rotvec(arr("rvec", (3,))).as_matrix()
    oriented = R is not None
    if oriented and not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
        raise ValueError(f"{path}: R is not a rotation matrix")
    t = arr("t", (3,))
    metres = str(data.get("units", "mm")).lower() in ("m", "meter", "metre", "meters", "metres")
    t = np.zeros(3) if t is None else t * (1000.0 if metres else 1.0)
    w, h = get("width") or width, get("height") or height
    if not w or not h:
        raise ValueError(f"{path}: no image size (width, height)")
    return Camera(path.stem, np.eye(3) if R is None else R, t, K, dist, int(w), int(h), oriented=oriented)
