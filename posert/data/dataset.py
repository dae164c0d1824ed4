"""Datasets of real motion in the VideoPose3D layout, 2D rendering, detector-like noise, windows.

On-disk layout (as VideoPose3D's ``data_3d_h36m.npz``): an ``.npz`` whose ``positions_3d`` is a
pickled ``{subject: {action: (T, J, 3) float32}}``. posert's own file adds ``units = "mm"`` and
``fps``; a real ``data_3d_h36m.npz`` (32 joints, metres, 50 fps) is read with the same loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posert.camera import Camera, normalize_screen, random_camera
from posert.skeleton import FLIP_PERM, H36M32_TO_17, LEFT, NUM_JOINTS, PARENTS, RIGHT, ROOT

#: Sequences held out for validation (never trained on), (subject, action).
VALIDATION: tuple[tuple[str, str], ...] = (("CMU01", "01_03"), ("climb", "seq_4"))


def load_positions(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``positions_3d`` from a VideoPose3D-layout ``.npz``.

    Returns:
        ``{subject: {action: (T, 17, 3) float32}}`` in mm, world frame, H36M-17 order.
    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the arrays have neither 17 nor 32 joints.
    """
    with np.load(path, allow_pickle=True) as z:
        pos = z["positions_3d"].item()
        units = str(z["units"]) if "units" in z.files else "m"  # real H36M files are in metres
    scale = 1000.0 if units == "m" else 1.0
    out: dict[str, dict[str, np.ndarray]] = {}
    for subject, actions in pos.items():
        out[subject] = {}
        for action, seq in actions.items():
            seq = np.asarray(seq, dtype=np.float32)
            if seq.shape[1] == 32:
                seq = seq[:, H36M32_TO_17]
            elif seq.shape[1] != NUM_JOINTS:
                raise ValueError(f"{subject}/{action}: {seq.shape[1]} joints, expected 17 or 32")
            out[subject][action] = seq * np.float32(scale)
    return out


def save_positions(path: str | Path, positions: dict[str, dict[str, np.ndarray]], fps: float = 50.0) -> None:
    """Write ``{subject: {action: (T, 17, 3)}}`` (mm) in the VideoPose3D layout."""
    np.savez_compressed(path, positions_3d=np.array(positions, dtype=object), units="mm", fps=fps)


def split(positions: dict[str, dict[str, np.ndarray]],
          validation: tuple[tuple[str, str], ...] = VALIDATION) -> tuple[dict, dict]:
    """Split into (train, val) dicts ``{"subject/action": (T, 17, 3)}`` by sequence."""
    train, val = {}, {}
    for subject, actions in positions.items():
        for action, seq in actions.items():
            (val if (subject, action) in validation else train)[f"{subject}/{action}"] = seq
    return train, val


def center_on_floor(seq: np.ndarray) -> np.ndarray:
    """Translate a (T, 17, 3) world sequence (mm) so the mean pelvis xy is the origin and the
    lowest ankle touches z = 0: where the H36M cameras look."""
    seq = seq.copy()
    seq[..., :2] -= seq[:, ROOT, :2].mean(axis=0)
    seq[..., 2] -= seq[:, [3, 6], 2].min()
    return seq


def render(seq_world: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Render a (T, 17, 3) world sequence (mm) through ``cam``.

    Returns:
        (px, cam3d): (T, 17, 2) float32 pixels and (T, 17, 3) float32 camera-frame positions (mm).
    """
    cam3d = cam.world_to_camera(seq_world)
    return cam.project(cam3d).astype(np.float32), cam3d.astype(np.float32)


#: A joint nearer the image plane than this (mm, camera z), or behind the camera, is not seen.
NEAR_MM = 100.0


def in_view(px: np.ndarray, cam3d: np.ndarray, cam: Camera) -> np.ndarray:
    """Which joints a detector looking through ``cam`` could see: (..., 17) bool for px (..., 17, 2)
    pixels and cam3d (..., 17, 3) mm, camera frame: at least :data:`NEAR_MM` in front of the
    camera and inside the image (0 ≤ u < width, 0 ≤ v < height)."""
    u, v = px[..., 0], px[..., 1]
    return (cam3d[..., 2] >= NEAR_MM) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)


def root_relative_m(cam3d_mm: np.ndarray) -> np.ndarray:
    """(…, 17, 3) camera-frame mm → root-relative metres (the model space)."""
    return ((cam3d_mm - cam3d_mm[..., ROOT:ROOT + 1, :]) / 1000.0).astype(np.float32)


#: A detector's jitter per H36M-17 joint: RMS per coordinate, px per 1,000 px of the person's
#: height. BlazePose (MediaPipe 0.10.21) on the Sports2D demo video (a 346-px person,
#: experiments/detector_track.py): the residual of a 9-frame quadratic Savitzky–Golay fit, divided by
#: √(1 − 3/9) for the share of white noise such a fit absorbs. Torso 6.0, head 8.2, hips and
#: shoulders 8.8, knees and elbows 22.4, ankles and wrists 40.3 before that factor.
DETECTOR_JITTER_PER_KPX: tuple[float, ...] = tuple(
    round(float(v / np.sqrt(1.0 - 3.0 / 9.0)), 1) for v in (
        6.0, 8.8, 22.4, 40.3, 8.8, 22.4, 40.3, 6.0, 6.0, 8.2, 8.2, 8.8, 22.4, 40.3, 8.8, 22.4, 40.3))

#: Distal joints that a limb swap exchanges with their mirror: (knee, ankle), (ankle), (elbow,
#: wrist), (wrist).
_SWAPPED_LIMBS = ((2, 3), (3,), (15, 16), (16,))


@dataclass
class NoiseModel:
    """Detector-like corruption of 2D keypoints (pixels), following a real detector's track: the
    ``detector`` protocol of ``posert eval``, the roaming benchmark and the INT8 gate (training
    uses :class:`TrainingNoise`).

    Per window a scale ``s`` is drawn log-uniformly from ``scale``; joint j's jitter is white
    Gaussian noise of σ_j = s · ``jitter_per_kpx``[j] · h / 1000 px per coordinate, h the person's
    height in the window (median over frames of the joints' vertical extent), so the torso is
    quiet and the wrists and ankles are ~7 × noisier, as BlazePose's are
    (experiments/README.md, "Is a BlazePose track like the detector-noise protocol?"; ``scale``
    spans most of the two measured tracks, whose joint groups read 0.5–2 × the profile, the fast
    clip's limbs with motion the fit cannot follow). Per frame:

    - an outlier per joint with probability ``p_outlier`` (offset ~ N(0, ``outlier_frac`` · h));
      more than 0.1 % of joints would lift the torso's jitter above the measured one;
    - a whole-body left/right flip (front taken for back) starts with probability
      ``flip_rate`` · clip(s − 1, 0, 1), and a limb swap (a knee and ankle, an ankle, an elbow and
      wrist, or a wrist exchanged with its mirror) with probability ``swap_rate`` · s; each lasts
      U(1, ``max_swap_frames``) frames. Measured (2026-12-07): no whole-body flip in 220 frames of
      a 346-px person, 5 flip transitions in 59 frames of a 177-px one. The limb swaps those
      tracks seemed to show (12 and 8 transitions) are no more than the swap test finds in jitter
      alone (3.7 % of frames): a real limb swap is rarer than that, hence the low ``swap_rate``;
    - dropout with probability ``p_drop`` (coordinates 0, confidence 0).

    Visible joints get a confidence 1 − 0.02 (|noise| / σ_j)², clipped to [0.05, 1]: median 0.97,
    5th percentile 0.88 (BlazePose's on the committed clip: 0.99 and 0.90). A swapped joint keeps
    its confidence, as a detector's does.
    """

    jitter_per_kpx: tuple[float, ...] = DETECTOR_JITTER_PER_KPX
    scale: tuple[float, float] = (0.7, 1.5)
    p_outlier: float = 0.001
    outlier_frac: float = 0.15
    flip_rate: float = 0.04
    swap_rate: float = 0.005
    max_swap_frames: int = 5
    p_drop: float = 0.02

    def __call__(self, px: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt (T, 17, 2) pixels (H36M-17); returns (px, conf): (T, 17, 2) float32 px and
        (T, 17) float32 confidences in [0, 1]."""
        T, J, _ = px.shape
        s = float(np.exp(rng.uniform(*np.log(self.scale))))
        extent = np.ptp(px[..., 1], axis=1)  # (T,) px; a joint behind the camera may make it inf or NaN
        extent = extent[np.isfinite(extent)]
        height = float(np.median(extent)) if len(extent) else 0.0
        sigma = s * np.asarray(self.jitter_per_kpx) * max(height, 1.0) / 1000.0  # (J,) px
        noise = rng.normal(0.0, 1.0, px.shape) * sigma[:, None]
        conf = np.clip(1.0 - 0.02 * (np.linalg.norm(noise, axis=-1) / np.maximum(sigma, 1e-9)) ** 2, 0.05, 1.0)
        out = rng.random((T, J)) < self.p_outlier
        noise[out] += rng.normal(0.0, self.outlier_frac * height, (int(out.sum()), 2))
        conf[out] = 0.05
        px = px + noise
        perm = np.tile(np.arange(J), (T, 1))  # (T, J): the joint whose position each joint reports
        for t in np.flatnonzero(rng.random(T) < self.flip_rate * min(max(s - 1.0, 0.0), 1.0)):
            span = slice(t, t + self._run_length(rng))
            perm[span] = perm[span][:, FLIP_PERM]  # the whole body: front taken for back
        for t in np.flatnonzero(rng.random(T) < self.swap_rate * s):
            span = slice(t, t + self._run_length(rng))
            moved = list(_SWAPPED_LIMBS[rng.integers(len(_SWAPPED_LIMBS))])
            mirror = FLIP_PERM[moved]
            perm[span, moved], perm[span, mirror] = perm[span, mirror], perm[span, moved]
        px = np.take_along_axis(px, perm[..., None], axis=1)
        drop = rng.random((T, J)) < self.p_drop
        px[drop] = 0.0
        conf[drop] = 0.0
        return px.astype(np.float32), conf.astype(np.float32)

    def _run_length(self, rng: np.random.Generator) -> int:
        """Frames a flip or a limb swap lasts: U(1, ``max_swap_frames``)."""
        return int(rng.integers(1, self.max_swap_frames + 1))


@dataclass
class TrainingNoise:
    """The 2D corruption of training windows (pixels): one jitter σ ~ U(``sigma_px``) a window on
    every joint alike; per joint and frame outliers with probability ``p_outlier`` (offset ~
    N(0, ``outlier_px``)), a whole-body left/right swap with probability ``p_swap`` per frame, and
    dropout with probability ``p_drop`` (coordinates 0, confidence 0). Visible joints get a
    confidence that falls with their jitter.

    Not :class:`NoiseModel`, although that is the closer copy of a detector: lifters trained on
    it were 6–13 % worse with ground-truth 2D and 5–9 % worse under :class:`NoiseModel` itself
    than the committed lifter, trained on this (three trainings, experiments/README.md, "Train on
    the detector's track?").
    """

    sigma_px: tuple[float, float] = (2.0, 8.0)
    p_outlier: float = 0.005
    outlier_px: float = 40.0
    p_swap: float = 0.002
    p_drop: float = 0.02

    def __call__(self, px: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt (T, J, 2) pixels; returns (px, conf) with conf (T, J) float32 in [0, 1]."""
        T, J, _ = px.shape
        sigma = rng.uniform(*self.sigma_px)
        noise = rng.normal(0.0, sigma, px.shape)
        out = rng.random((T, J)) < self.p_outlier
        noise[out] += rng.normal(0.0, self.outlier_px, (int(out.sum()), 2))
        px = px + noise
        swap = rng.random(T) < self.p_swap
        px[swap] = px[swap][:, FLIP_PERM]
        conf = np.clip(1.0 - np.linalg.norm(noise, axis=-1) / (6 * self.sigma_px[1]), 0.05, 1.0)
        drop = rng.random((T, J)) < self.p_drop
        px[drop] = 0.0
        conf[drop] = 0.0
        return px.astype(np.float32), conf.astype(np.float32)


@dataclass
class OcclusionModel:
    """Missing-joint protocol: runs of frames in which a random joint or a whole limb is lost.

    Per frame an occlusion starts with probability ``p_start``; it lasts U(min_len, max_len)
    frames and hides one random joint (probability ``p_single``) or a whole limb (shoulder–elbow–
    wrist or hip–knee–ankle). Hidden joints get confidence 0 and NaN coordinates (the runtime's
    documented convention), so any leak of a missing coordinate into the output shows as NaN.
    """

    p_start: float = 0.03
    min_len: int = 5
    max_len: int = 25
    p_single: float = 0.5

    LIMBS = ((11, 12, 13), (14, 15, 16), (4, 5, 6), (1, 2, 3))

    def __call__(self, px: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(T, J, 2) pixels → (px with NaN at hidden joints, conf (T, J) float32)."""
        T, J, _ = px.shape
        conf = np.ones((T, J), np.float32)
        for t in np.flatnonzero(rng.random(T) < self.p_start):
            length = int(rng.integers(self.min_len, self.max_len + 1))
            joints = [int(rng.integers(1, J))] if rng.random() < self.p_single else list(
                self.LIMBS[rng.integers(len(self.LIMBS))])
            conf[t:t + length, joints] = 0.0
        px = px.astype(np.float32).copy()
        px[conf == 0] = np.nan
        return px, conf


def make_input(px: np.ndarray, conf: np.ndarray, width: int, height: int) -> np.ndarray:
    """Model input from pixels: (..., J, 3) float32 = normalised (x, y) and confidence.

    Joints with confidence 0 get coordinates 0 (the convention the models are trained with).
    """
    y = normalize_screen(px, width, height)
    y = np.where(conf[..., None] > 0, y, 0.0)
    return np.concatenate([y, conf[..., None]], axis=-1).astype(np.float32)


def scale_bones(seq: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scale every bone of a (T, 17, 3) sequence by ``scale`` (17,) (per child joint), keeping
    the pelvis trajectory; bone directions are unchanged."""
    out = seq.copy()
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        out[:, j] = out[:, p] + (seq[:, j] - seq[:, p]) * scale[j]
    return out


#: Limb chains rotated by :func:`rotate_limbs`: (joint the chain turns about, the joints that move,
#: largest angle in degrees). Arms at the shoulder, forearms at the elbow, legs at the hip, shins at
#: the knee, the head at the thorax.
LIMB_CHAINS: tuple[tuple[int, tuple[int, ...], float], ...] = (
    (11, (12, 13), 90.0), (14, (15, 16), 90.0), (12, (13,), 60.0), (15, (16,), 60.0),
    (4, (5, 6), 45.0), (1, (2, 3), 45.0), (5, (6,), 45.0), (2, (3,), 45.0), (8, (9, 10), 30.0),
)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula: (3, 3) rotation by ``angle`` radians about the unit vector ``axis``."""
    x, y, z = axis
    K = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def rotate_limbs(seq: np.ndarray, rng: np.random.Generator, p_chain: float = 0.5) -> np.ndarray:
    """Synthetic poses for training (PoseAug-style, Gong et al. 2021, without the learnt part):
    each chain of :data:`LIMB_CHAINS`, with probability ``p_chain``, turns about its pivot joint by
    one rotation (uniform axis, angle uniform up to the chain's limit) held for the whole window,
    so the motion stays smooth and every bone keeps its length.

    Args:
        seq: (T, 17, 3) joint positions (any unit), world frame.
        rng: the sampler's generator.
    Returns:
        (T, 17, 3) float64, a new array; the pelvis, spine and shoulders do not move.
    """
    out = np.array(seq, dtype=np.float64)
    for pivot, moved, limit in LIMB_CHAINS:
        if rng.random() >= p_chain:
            continue
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        R = _rotation(axis, np.deg2rad(rng.uniform(0.0, limit)))
        m = list(moved)
        out[:, m] = out[:, [pivot]] + (out[:, m] - out[:, [pivot]]) @ R.T
    return out


def class_camera(rng: np.random.Generator, target: np.ndarray) -> Camera:
    """A camera of a random class of :mod:`posert.rigs` (level, pitched, rolled, portrait, phone)
    around ``target`` (mm, world), and half the time the level camera at its place instead
    (:func:`~posert.camera.level_rotation`: the person anywhere in the frame, an augmentation;
    the default checkpoints were trained with it, ``posert train --class-cameras 0.4``)."""
    from posert.camera import level_rotation
    from posert.rigs import CLASSES, sample_camera

    cam = sample_camera(rng, target, list(CLASSES)[rng.integers(len(CLASSES))])
    if rng.random() < 0.5:
        pos = -cam.R.T @ cam.t
        R = level_rotation(cam.R)
        cam = Camera("level view", R, -R @ pos, cam.K, cam.dist, cam.width, cam.height)
    return cam


class WindowSampler:
    """Random training windows with the augmentations of DATA.md.

    Each sample: a window of ``window`` frames from a random sequence (chosen ∝ length); random
    yaw, optional mirroring, bone-length scaling ±10 %; a camera that is either one of the real
    H36M cameras (``h36m_cameras``; motion placed near the capture-volume origin), with probability
    ``p_class_camera`` one of the camera classes real users mount (:func:`class_camera`), or a
    random one with real intrinsics; 2D noise (:class:`TrainingNoise`) with probability
    ``p_noise``; the joints that camera cannot see (:func:`in_view` of the 2D after that noise:
    outside the image or behind the camera) missing, as a detector reports them (``posert eval``'s
    :func:`~posert.evaluate.detector_view` judges the 2D before its noise); runs of missing
    joints and limbs (:class:`OcclusionModel`) with probability ``p_occlusion``;
    limb chains turned to poses the takes do not hold (:func:`rotate_limbs`) with probability
    ``p_pose_aug``.

    ``sample(B)`` returns ``(inp, target)``: inp (B, N, 17, 3) float32 = normalised 2D + conf;
    target (B, N, 17, 3) float32 root-relative camera-frame positions in metres.
    """

    def __init__(self, sequences: dict[str, np.ndarray], window: int, h36m_cameras: list[Camera],
                 seed: int = 0, p_noise: float = 0.7, p_real_camera: float = 0.5,
                 noise: TrainingNoise | NoiseModel | None = None, p_occlusion: float = 0.0, p_pose_aug: float = 0.0,
                 p_class_camera: float = 0.0):
        self.seqs = [s for s in sequences.values() if len(s) >= 2]
        if not self.seqs:
            raise ValueError("WindowSampler: no sequences")
        self.window = window
        self.cams = h36m_cameras
        self.rng = np.random.default_rng(seed)
        self.p_noise = p_noise
        self.p_real_camera = p_real_camera
        self.noise = noise or TrainingNoise()
        self.p_occlusion = p_occlusion
        self.p_pose_aug = p_pose_aug
        if not 0.0 <= p_class_camera <= 1.0 - p_real_camera:
            raise ValueError(f"p_class_camera must be in [0, 1 - p_real_camera], got {p_class_camera}")
        self.p_class_camera = p_class_camera
        self.occlusion = OcclusionModel(p_start=0.08)
        lengths = np.array([len(s) for s in self.seqs], dtype=np.float64)
        self.prob = lengths / lengths.sum()

    def _window(self) -> np.ndarray:
        rng = self.rng
        seq = self.seqs[rng.choice(len(self.seqs), p=self.prob)]
        start = rng.integers(-self.window // 2, len(seq) - 1)
        idx = np.clip(np.arange(start, start + self.window), 0, len(seq) - 1)  # edge-pad the start
        w = seq[idx].astype(np.float64)
        if self.p_pose_aug and rng.random() < self.p_pose_aug:
            w = rotate_limbs(w, rng)
        c, s = np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)
        root0 = w[0, ROOT].copy()
        w -= [root0[0], root0[1], 0.0]
        w = w @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
        if rng.random() < 0.5:
            w = w[:, FLIP_PERM] * [-1.0, 1.0, 1.0]
        sc = rng.uniform(0.9, 1.1, NUM_JOINTS)
        sc[list(RIGHT)] = sc[list(LEFT)]  # one person: left and right limbs scale together
        return scale_bones(w, sc)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        inp = np.empty((batch, self.window, NUM_JOINTS, 3), np.float32)
        tgt = np.empty((batch, self.window, NUM_JOINTS, 3), np.float32)
        for b in range(batch):
            w = self._window()
            u = rng.random()
            if u < self.p_real_camera:
                w[..., :2] += rng.uniform(-1000, 1000, 2)
                cam = self.cams[rng.integers(len(self.cams))]
            elif u < self.p_real_camera + self.p_class_camera:
                cam = class_camera(rng, w[:, ROOT].mean(axis=0))
            else:
                cam = random_camera(rng, w[:, ROOT].mean(axis=0), self.cams)
            px, cam3d = render(w, cam)
            if rng.random() < self.p_noise:
                px, conf = self.noise(px, rng)
            else:
                conf = np.ones(px.shape[:2], np.float32)
            conf = np.where(in_view(px, cam3d, cam), conf, 0.0).astype(np.float32)  # out of view: missing
            if rng.random() < self.p_occlusion:
                px, occ = self.occlusion(px, rng)
                conf = np.minimum(conf, occ)
            inp[b] = make_input(px, conf, cam.width, cam.height)
            tgt[b] = root_relative_m(cam3d)
        return inp, tgt
