"""Real recorded motion shipped inside public packages (see shared/DATA.md), converted to H36M-17.

Every loader returns ``{action_name: (T, 17, 3) float32}`` in a z-up world frame, millimetres,
50 fps. Downloads go to a cache folder and are never repeated.

The pelvis is taken as the midpoint of the two hip joints for every source (H36M's pelvis lies
between the hip joints); other joints follow the mapping in DATA.md. Joint definitions still differ
by 2–5 cm between sources (head, neck, thorax): real label noise, as between H36M and other sets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posert.data.bvh import parse_bvh
from posert.skeleton import JOINT_NAMES

MODEL_FPS = 50.0
#: cgspeed's CMU BVH conversion uses units of (1/0.45) inch.
CMU_UNIT_MM = 25.4 / 0.45


def cache_dir() -> Path:
    """Root folder for downloads and built data: ``$POSERT_HOME`` or ``~/.cache/posert``."""
    root = Path(os.environ.get("POSERT_HOME", Path.home() / ".cache" / "posert"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")


def _pip_download(spec: str, dest: Path, sdist: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), spec]
        if sdist:
            cmd[5:5] = ["--no-binary", ":all:"]
        _run(cmd, dest)
        found = [p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if not found:
        raise RuntimeError(f"pip download {spec} produced no file in {dest}")
    return found[0]


def _apt_download(package: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    debs = list(dest.glob(f"{package}_*.deb"))
    if not debs:
        try:
            _run(["apt-get", "download", package], dest)
        except RuntimeError:
            _run(["apt-get", "update", "-qq"], dest)
            _run(["apt-get", "download", package], dest)
        debs = list(dest.glob(f"{package}_*.deb"))
    return debs[0]


def _extract(archive: Path, members: Callable[[str], bool], dest: Path) -> Path:
    """Extract the members of a wheel/sdist/deb selected by ``members`` into ``dest`` (once)."""
    stamp = dest / ".extracted"
    if stamp.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest, [n for n in z.namelist() if members(n)])
    elif archive.suffix == ".deb":
        _run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, [m for m in t.getmembers() if members(m.name)], filter="data")
    stamp.touch()
    return dest


def resample(seq: np.ndarray, fps_in: float, fps_out: float = MODEL_FPS) -> np.ndarray:
    """Linearly resample a (T, J, 3) sequence from ``fps_in`` to ``fps_out`` frames per second."""
    T = seq.shape[0]
    t_in = np.arange(T) / fps_in
    t_out = np.arange(0.0, t_in[-1] + 1e-9, 1.0 / fps_out)
    idx = np.clip(np.searchsorted(t_in, t_out, side="right") - 1, 0, T - 2)
    w = ((t_out - t_in[idx]) * fps_in)[:, None, None]
    return (seq[idx] * (1 - w) + seq[idx + 1] * w).astype(np.float32)


def map_to_h36m(positions: np.ndarray, names: list[str], mapping: dict[str, list[str]]) -> np.ndarray:
    """Build H36M-17 joints as means of source joints.

    Args:
        positions: (T, S, 3) source joint positions.
        names: the S source joint names.
        mapping: H36M joint name → source joint names to average.
    Returns:
        (T, 17, 3) float64.
    Raises:
        KeyError: if a mapping names a joint the source lacks.
    """
    out = np.zeros((positions.shape[0], len(JOINT_NAMES), 3))
    for j, jn in enumerate(JOINT_NAMES):
        missing = [s for s in mapping[jn] if s not in names]
        if missing:
            raise KeyError(f"source skeleton lacks {missing} (needed for H36M joint {jn!r})")
        idx = [names.index(s) for s in mapping[jn]]
        out[:, j] = positions[:, idx].mean(axis=1)
    return out


def _limbs(hip: str, knee: str, ankle: str, shoulder: str, elbow: str, wrist: str) -> dict[str, list[str]]:
    m = {}
    for side, pre in (("l", "Left"), ("r", "Right")):
        m.update({f"{side}_hip": [pre + hip], f"{side}_knee": [pre + knee], f"{side}_ankle": [pre + ankle],
                  f"{side}_shoulder": [pre + shoulder], f"{side}_elbow": [pre + elbow],
                  f"{side}_wrist": [pre + wrist]})
    m["pelvis"] = ["Left" + hip, "Right" + hip]
    return m


CMU_MAP = {**_limbs("UpLeg", "Leg", "Foot", "Arm", "ForeArm", "Hand"),
           "spine": ["Spine"], "thorax": ["Spine1", "Neck1"], "neck": ["Head"], "head": ["Head_end"]}
MOCAPBANK_MAP = {**_limbs("Hip", "Knee", "Ankle", "Shoulder", "Elbow", "Wrist"),
                 "spine": ["Chest"], "thorax": ["Neck"], "neck": ["Head"], "head": ["Head_end"]}
CLIMB_MAP = {**_limbs("UpLeg", "Leg", "Foot", "Arm", "ForeArm", "Hand"),
             "spine": ["Spine", "Spine1"], "thorax": ["Neck", "LeftShoulder", "RightShoulder"],
             "neck": ["Neck", "Head"], "head": ["Head"]}
#: SMPL-H joints as holosoma names them (``SMPLH_DEMO_JOINTS``: Torso/Spine/Chest are SMPL's
#: Spine1/2/3, L_Thorax is the left collar). SMPL's Head joint sits at the centre of the skull,
#: about nose height, so it is H36M's neck/nose; the top of the head is extrapolated in
#: :func:`load_omomo`.
OMOMO_MAP = {**{f"{side}_{j}": [f"{side.upper()}_{s}"] for side in ("l", "r")
                for j, s in (("hip", "Hip"), ("knee", "Knee"), ("ankle", "Ankle"), ("shoulder", "Shoulder"),
                             ("elbow", "Elbow"), ("wrist", "Wrist"))},
             "pelvis": ["L_Hip", "R_Hip"], "spine": ["Torso", "Spine"], "thorax": ["Neck", "L_Thorax", "R_Thorax"],
             "neck": ["Head"], "head": ["Head"]}
#: Head top = Head + OMOMO_HEAD_TOP · (Head − Neck): ~9 cm above SMPL's head joint.
OMOMO_HEAD_TOP = 0.6
#: InterMimic's OMOMO tensors: 30 fps; columns 162:318 are 52 SMPL-H joint positions (m, z-up).
OMOMO_FPS = 30.0
OMOMO_JOINT_COLUMNS = slice(162, 162 + 52 * 3)


def y_up_to_z_up(p: np.ndarray) -> np.ndarray:
    """Rotate (..., 3) points +90° about x: (x, y, z) → (x, −z, y)."""
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def bvh_to_h36m(path: Path, mapping: dict[str, list[str]], unit_mm: float) -> np.ndarray:
    """Read a y-up BVH file and return (T, 17, 3) float32, z-up, mm, 50 fps."""
    bvh = parse_bvh(path)
    pos = map_to_h36m(bvh.forward_kinematics(), bvh.names, mapping) * unit_mm
    return resample(y_up_to_z_up(pos), 1.0 / bvh.frame_time)


@dataclass(frozen=True)
class Source:
    """One source of real motion: a subject name, how to fetch it, and its licence."""

    subject: str
    description: str
    licence: str
    origin: str
    load: Callable[[Path], dict[str, np.ndarray]]


def load_cmu(cache: Path) -> dict[str, np.ndarray]:
    deb = _apt_download("assimp-testmodels", cache / "downloads")
    root = _extract(deb, lambda n: True, cache / "extracted" / "assimp-testmodels")
    bvh_dir = root / "usr/share/assimp/models/BVH"
    return {take: bvh_to_h36m(bvh_dir / f"{take}.bvh", CMU_MAP, CMU_UNIT_MM) for take in ("01_01", "01_03")}


def _joint_list(root: Path, name: str) -> list[str]:
    """The joint order of a holosoma data format: the package's own list ``name`` in
    ``config_types/data_type.py``, read rather than copied."""
    src = (root / "holosoma_retargeting/config_types/data_type.py").read_text()
    block = re.search(name + r"\s*=\s*\[(.*?)\]", src, re.S)
    if block is None:
        raise RuntimeError(f"holosoma-retargeting: {name} not found in data_type.py")
    return re.findall(r'"(\w+)"', block.group(1))


def load_climb(cache: Path) -> dict[str, np.ndarray]:
    whl = _pip_download("holosoma-retargeting==0.1.0", cache / "downloads", sdist=False)
    root = _extract(whl, lambda n: ("demo_data/climb/" in n and n.endswith(".npy"))
                    or n.endswith("config_types/data_type.py"), cache / "extracted" / "holosoma")
    names = _joint_list(root, "MOCAP_DEMO_JOINTS")
    out = {}
    for f in sorted(root.glob("holosoma_retargeting/demo_data/climb/*/*_joint_positions_*.npy")):
        pos = np.load(f).astype(np.float64) * 1000.0  # metres → mm, already z-up
        take = f.parent.name.replace("mocap_climb_", "")
        out[take] = resample(map_to_h36m(pos, names, CLIMB_MAP), 120.0)
    return out


def load_omomo(cache: Path) -> dict[str, np.ndarray]:
    """OMOMO (Li et al. 2023) human-object interaction mocap as processed by InterMimic: two
    people (subjects 3 and 10, 1.94 m and 1.65 m tall) lifting and carrying a large box, 418
    frames at 30 fps, from the holosoma-retargeting wheel's ``demo_data/OMOMO_new``.

    Each ``.pt`` holds one (T, 591) float tensor; the package's ``load_intermimic_data`` reads the
    52 SMPL-H joints from columns 162:318, in the order of its ``SMPLH_DEMO_JOINTS``.
    """
    import torch

    whl = _pip_download("holosoma-retargeting==0.1.0", cache / "downloads", sdist=False)
    root = _extract(whl, lambda n: ("demo_data/OMOMO_new/" in n and n.endswith(".pt"))
                    or n.endswith("config_types/data_type.py"), cache / "extracted" / "holosoma_omomo")
    names = _joint_list(root, "SMPLH_DEMO_JOINTS")
    head, neck = names.index("Head"), names.index("Neck")
    out = {}
    for f in sorted(root.glob("holosoma_retargeting/demo_data/OMOMO_new/*.pt")):
        table = torch.load(f, map_location="cpu", weights_only=True).detach().numpy()
        pos = table[:, OMOMO_JOINT_COLUMNS].reshape(len(table), -1, 3).astype(np.float64) * 1000.0
        if pos.shape[1] != len(names):
            raise RuntimeError(f"{f.name}: {pos.shape[1]} joints, SMPLH_DEMO_JOINTS has {len(names)}")
        h36 = map_to_h36m(pos, names, OMOMO_MAP)
        h36[:, JOINT_NAMES.index("head")] = pos[:, head] + OMOMO_HEAD_TOP * (pos[:, head] - pos[:, neck])
        out[f.stem] = resample(h36, OMOMO_FPS)
    if not out:
        raise RuntimeError(f"{whl.name}: no demo_data/OMOMO_new/*.pt")
    return out


def load_mocapbank(cache: Path) -> dict[str, np.ndarray]:
    sdist = _pip_download("bvhtoolbox==0.1.3", cache / "downloads", sdist=True)
    root = _extract(sdist, lambda n: n.endswith(".bvh"), cache / "extracted" / "bvhtoolbox")
    (path,) = root.glob("*/tests/example_files/test_mocapbank.bvh")
    return {"mocapbank_01": bvh_to_h36m(path, MOCAPBANK_MAP, 10.0)}  # file units: cm


def load_deepmimic(cache: Path) -> dict[str, np.ndarray]:
    """DeepMimic's 15 humanoid clips (walk, run, kicks, cartwheel, get-ups, …; 1,620 frames at
    16–60 fps) from the ``pybullet==3.2.7`` wheel, by forward kinematics through its humanoid URDF
    (:mod:`posert.data.deepmimic`)."""
    from posert.data.deepmimic import clip_to_h36m, load_clip, parse_urdf_joints

    archive = _pip_download("pybullet==3.2.7", cache / "downloads", sdist=False)
    root = _extract(archive, lambda n: n.endswith("humanoid/humanoid.urdf") or "motions/humanoid3d_" in n,
                    cache / "extracted" / "pybullet")
    urdf = sorted(root.rglob("humanoid/humanoid.urdf"))
    clips = sorted(root.rglob("motions/humanoid3d_*.txt"))
    if not urdf or not clips:
        raise RuntimeError(f"{archive.name}: no humanoid.urdf or humanoid3d clips")
    joints = parse_urdf_joints(urdf[0].read_text(errors="ignore"))
    out = {}
    for path in clips:
        frames, fps = load_clip(path)
        pos = y_up_to_z_up(clip_to_h36m(frames, joints)) * 1000.0  # metres → mm
        out[path.stem.replace("humanoid3d_", "")] = resample(pos, fps)
    return out


def h36m_camera_file(cache: Path | None = None) -> Path:
    """Path to the real Human3.6M ``camera-parameters.json`` (fetched from the gvhmr sdist)."""
    cache = cache or cache_dir()
    sdist = _pip_download("gvhmr==1.6.1", cache / "downloads", sdist=True)
    root = _extract(sdist, lambda n: n.endswith("h36m/camera-parameters.json"), cache / "extracted" / "gvhmr")
    (path,) = root.glob("*/gvhmr/dataset/h36m/camera-parameters.json")
    return path


SOURCES: tuple[Source, ...] = (
    Source("CMU01", "CMU mocap subject 01, takes 01 and 03 (cgspeed BVH)",
           "CMU Graphics Lab Motion Capture Database: free for research and commercial use",
           "Debian package assimp-testmodels: usr/share/assimp/models/BVH/01_0{1,3}.bvh", load_cmu),
    Source("climb", "climbing mocap, 5 takes, 2 body sizes",
           "Apache-2.0", "PyPI wheel holosoma-retargeting==0.1.0: demo_data/climb", load_climb),
    Source("mocapbank", "mocapbank BVH example",
           "bvhtoolbox package licence (MIT)", "PyPI sdist bvhtoolbox==0.1.3: tests/example_files",
           load_mocapbank),
    Source("deepmimic", "DeepMimic humanoid clips (walk, run, kicks, cartwheel, get-ups, …), FK through the URDF",
           "zlib (pybullet)", "PyPI wheel pybullet==3.2.7: pybullet_data/data/motions/humanoid3d_*.txt, humanoid.urdf",
           load_deepmimic),
    Source("omomo", "OMOMO box lifting and carrying (InterMimic processing), 2 people, SMPL-H joints",
           "Apache-2.0 (holosoma-retargeting)", "PyPI wheel holosoma-retargeting==0.1.0: demo_data/OMOMO_new/*.pt",
           load_omomo),
)
