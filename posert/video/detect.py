"""2D front-ends. A detector is any callable ``frame (H, W, 3) uint8 RGB → Detection | None``
(None: no person in the frame)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posert.errors import MissingDependency
from posert.skeleton import BLAZEPOSE33_NAMES, blazepose_to_h36m


@dataclass
class Detection:
    """One person in one frame.

    Attributes:
        kp2d: (17, 2) float32 pixels (x right, y down, origin at the top-left pixel corner),
            H36M-17 order.
        conf: (17,) float32 confidence in [0, 1]; 0 marks a joint the front-end did not see.
        raw: the front-end's own keypoints, e.g. BlazePose (33, 3) = pixels x, y and visibility.
    """

    kp2d: np.ndarray
    conf: np.ndarray
    raw: np.ndarray | None = None


class MediaPipePose:
    """MediaPipe BlazePose (``mediapipe==0.10.21``, ``mp.solutions.pose``) as a 2D front-end.

    Runs fully offline with ``model_complexity=1`` (the full model ships in the wheel; the lite
    and heavy models would be downloaded at first use). Video mode tracks one person between
    frames. BlazePose-33 landmarks map to H36M-17 with :func:`posert.skeleton.blazepose_to_h36m`;
    a joint's confidence is the BlazePose visibility of its landmarks, and joints below
    ``min_visibility`` get confidence 0 (missing), as the models were trained with dropout.

    Raises ImportError (with the install command) when mediapipe is not installed.
    """

    def __init__(self, model_complexity: int = 1, min_visibility: float = 0.3, static_image_mode: bool = False):
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingDependency("the MediaPipe front-end needs the video extra: "
                              "pip install 'posert[video]' (mediapipe==0.10.21, Python ≤ 3.12)") from e
        self._pose = mp.solutions.pose.Pose(static_image_mode=static_image_mode, model_complexity=model_complexity,
                                            enable_segmentation=False, min_detection_confidence=0.5,
                                            min_tracking_confidence=0.5)
        self.min_visibility = float(min_visibility)
        self.name = f"mediapipe-blazepose-{model_complexity}"

    def __call__(self, frame: np.ndarray) -> Detection | None:
        """frame: (H, W, 3) uint8 RGB. Returns the detection or None when no person is found."""
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
        res = self._pose.process(frame)
        if res.pose_landmarks is None:
            return None
        h, w = frame.shape[:2]
        raw = np.array([(p.x * w, p.y * h, p.visibility) for p in res.pose_landmarks.landmark], np.float32)
        return detection_from_blazepose(raw, self.min_visibility)

    def close(self) -> None:
        self._pose.close()


def detection_from_blazepose(raw: np.ndarray, min_visibility: float = 0.3) -> Detection:
    """(33, 3) BlazePose pixels + visibility → :class:`Detection` in H36M-17 order."""
    raw = np.asarray(raw, np.float32)
    if raw.shape != (len(BLAZEPOSE33_NAMES), 3):
        raise ValueError(f"expected ({len(BLAZEPOSE33_NAMES)}, 3) landmarks, got {raw.shape}")
    kp, conf = blazepose_to_h36m(raw[:, :2], raw[:, 2])
    conf = np.where(conf >= min_visibility, conf, 0.0).astype(np.float32)
    return Detection(kp, conf, raw)


class RecordedDetector:
    """Replays BlazePose landmarks recorded earlier (e.g. by ``posert run --record``), frame by
    frame, so a video runs through the same path without MediaPipe.

    The file is an ``.npz`` with ``landmarks`` (F, 33, 3) float32 (pixels x, y, visibility;
    NaN rows where no person was found) and ``detector`` (the front-end's name).
    Raises ValueError for a malformed file and IndexError past the last recorded frame.
    """

    def __init__(self, path: str | Path, min_visibility: float = 0.3):
        import zipfile

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no landmark recording at {path}")
        try:
            z = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a landmark recording ({' '.join(str(e).split())})") from None
        if not isinstance(z, np.lib.npyio.NpzFile) or "landmarks" not in z.files:
            raise ValueError(f"{path} is not a landmark recording (no `landmarks` array; see `posert run --record`)")
        with z:
            if z["landmarks"].dtype.kind != "f":
                raise ValueError(f"{path}: landmarks must be float, got {z['landmarks'].dtype}")
            self.landmarks = np.asarray(z["landmarks"], np.float32)
            self.name = f"recorded:{z['detector']}" if "detector" in z.files else "recorded"
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (len(BLAZEPOSE33_NAMES), 3):
            raise ValueError(f"{path}: landmarks must be (F, 33, 3), got {self.landmarks.shape}")
        self.min_visibility = min_visibility
        self._i = 0

    def __call__(self, frame: np.ndarray) -> Detection | None:
        if self._i >= len(self.landmarks):
            raise IndexError(f"only {len(self.landmarks)} frames were recorded")
        raw = self.landmarks[self._i]
        self._i += 1
        if not np.all(np.isfinite(raw)):
            return None
        return detection_from_blazepose(raw, self.min_visibility)


def save_recording(path: str | Path, raws: list[np.ndarray | None], detector: str) -> None:
    """Write the front-end's raw landmarks per frame (None = no person) for :class:`RecordedDetector`."""
    arr = np.full((len(raws), len(BLAZEPOSE33_NAMES), 3), np.nan, np.float32)
    for i, r in enumerate(raws):
        if r is not None:
            arr[i] = r
    np.savez_compressed(path, landmarks=arr, detector=np.array(detector))

