"""Data: BVH forward kinematics, conversion, resampling, VideoPose3D-layout loading, noise."""

import numpy as np
import pytest

from posert.data.bvh import parse_bvh
from posert.data.dataset import NoiseModel, TrainingNoise, load_positions, save_positions, scale_bones
from posert.data.sources import map_to_h36m, resample, y_up_to_z_up
from posert.skeleton import BONES, FLIP_PERM, H36M32_TO_17, JOINT_NAMES, bone_lengths

BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Knee
  {
    OFFSET 0 -10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -5 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.1
1 2 3 0 0 0 0 0 0
0 0 0 90 0 0 0 90 0
"""


def test_bvh_forward_kinematics_by_hand(tmp_path):
    p = tmp_path / "tiny.bvh"
    p.write_text(BVH)
    bvh = parse_bvh(p)
    assert bvh.names == ["Hips", "Knee", "Knee_end"]
    assert bvh.frame_time == pytest.approx(0.1)
    pos = bvh.forward_kinematics()
    # frame 0: translation only
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [1, -8, 3], [1, -13, 3]], atol=1e-12)
    # frame 1: hips rotated 90° about z maps (0, -10, 0) to (10, 0, 0); the knee's own X rotation
    # turns its child offset (0, -5, 0) to (0, 0, -5) before the parent's Z rotation (unchanged)
    np.testing.assert_allclose(pos[1], [[0, 0, 0], [10, 0, 0], [10, 0, -5]], atol=1e-12)


def test_bvh_rejects_truncated_motion(tmp_path):
    p = tmp_path / "bad.bvh"
    p.write_text(BVH.rsplit("\n", 2)[0])
    with pytest.raises(ValueError, match="motion values"):
        parse_bvh(p)


def test_resample_and_axes():
    seq = np.arange(121, dtype=np.float64)[:, None, None] * np.ones((1, 2, 3))  # 1 s at 120 Hz, linear
    out = resample(seq, 120.0, 50.0)
    assert out.shape == (51, 2, 3)
    np.testing.assert_allclose(out[:, 0, 0], np.arange(51) * 120 / 50, atol=1e-4)
    np.testing.assert_array_equal(y_up_to_z_up(np.array([1.0, 2.0, 3.0])), [1.0, -3.0, 2.0])


def test_map_to_h36m_averages_named_joints():
    names = [f"j{i}" for i in range(4)]
    pos = np.arange(4 * 3, dtype=np.float64).reshape(1, 4, 3)
    mapping = {n: ["j0"] for n in ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine",
                                   "thorax", "neck", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow",
                                   "r_wrist")}
    mapping["head"] = ["j1", "j3"]
    out = map_to_h36m(pos, names, mapping)
    np.testing.assert_array_equal(out[0, 10], (pos[0, 1] + pos[0, 3]) / 2)
    with pytest.raises(KeyError):
        map_to_h36m(pos, names, {**mapping, "head": ["nope"]})


def test_loader_reads_real_h36m_layout_and_our_own(tmp_path, motion):
    # the real data_3d_h36m.npz: 32 joints, metres, no 'units' key
    h36m = np.zeros((10, 32, 3), np.float32)
    h36m[:, list(H36M32_TO_17)] = motion[:10] / 1000.0
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d=np.array({"S1": {"Walking": h36m}}, dtype=object))
    got = load_positions(tmp_path / "data_3d_h36m.npz")["S1"]["Walking"]
    np.testing.assert_allclose(got, motion[:10], atol=1e-3)
    save_positions(tmp_path / "ours.npz", {"CMU01": {"01_01": motion}})
    np.testing.assert_array_equal(load_positions(tmp_path / "ours.npz")["CMU01"]["01_01"], motion)


def test_fixture_is_plausible_human_motion(motion):
    bones = bone_lengths(motion).mean(axis=0)
    names = [b for b in BONES]
    thigh = bones[names.index((1, 2))]
    assert 350 < thigh < 500  # mm
    speed = np.linalg.norm(np.diff(motion[:, 0], axis=0), axis=-1) * 50 / 1000  # m/s
    assert speed.max() < 8.0


def test_bone_scaling_scales_bones_only(motion):
    sc = np.full(17, 1.1)
    out = scale_bones(motion[:5].astype(np.float64), sc)
    np.testing.assert_allclose(bone_lengths(out), 1.1 * bone_lengths(motion[:5]), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 0], motion[:5, 0])


def test_rotate_limbs_keeps_bones_and_turns_limbs_rigidly(motion):
    from posert.data.dataset import LIMB_CHAINS, WindowSampler, rotate_limbs

    seq = motion[:40].astype(np.float64)
    out = rotate_limbs(seq, np.random.default_rng(3), p_chain=1.0)
    np.testing.assert_allclose(bone_lengths(out), bone_lengths(seq), rtol=1e-9)
    still = [0, 1, 4, 7, 8, 11, 14]  # pelvis, hips, spine, thorax, shoulders: no chain moves them
    np.testing.assert_array_equal(out[:, still], seq[:, still])
    moved = np.linalg.norm(out - seq, axis=-1).max(axis=0)
    assert np.all(moved[[3, 6, 10, 13, 16]] > 1.0)  # every chain end moved (mm)
    # one rotation per chain for the whole window (the motion keeps its smoothness): the upper
    # arm of every frame is the original one turned by a single rotation R ≠ I (Kabsch fit)
    a, b = seq[:, 12] - seq[:, 11], out[:, 12] - out[:, 11]
    U, _, Vt = np.linalg.svd(b.T @ a)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    np.testing.assert_allclose(a @ R.T, b, atol=1e-6)
    assert np.abs(R - np.eye(3)).max() > 1e-3
    assert rotate_limbs(seq, np.random.default_rng(3), p_chain=0.0).tolist() == seq.tolist()
    assert len(LIMB_CHAINS) == 9
    # p_pose_aug = 0 draws nothing extra: a sampler's windows are exactly the ones it made before
    kw = dict(sequences={"a": motion}, window=9, h36m_cameras=[], seed=5, p_real_camera=0.0)
    w0, w1 = WindowSampler(**kw)._window(), WindowSampler(**kw, p_pose_aug=0.0)._window()
    np.testing.assert_array_equal(w0, w1)
    assert not np.allclose(WindowSampler(**kw, p_pose_aug=1.0)._window(), w0)


def test_training_windows_miss_the_joints_their_camera_cannot_see(motion):
    """Training sees what the runtime gets from a detector: a joint outside the image (or behind
    the camera) is missing, confidence 0 and coordinates 0, as a detector reports it
    (:func:`~posert.data.dataset.in_view`). The camera classes' close, pitched and portrait
    cameras cut the person off in a fifth of the windows; every joint kept lies in its image."""
    from posert.data.dataset import WindowSampler

    sampler = WindowSampler({"a": motion}, 27, [], seed=0, p_noise=0.0, p_real_camera=0.0, p_class_camera=1.0)
    inp, _ = sampler.sample(256)
    conf, xy = inp[..., 2], inp[..., :2]
    assert 0.01 < (conf == 0).mean() < 0.2  # no 2D noise, no occlusion: every miss is out of view
    assert 0.1 < (conf == 0).any(axis=(1, 2)).mean() < 0.5
    assert np.all(xy[conf == 0] == 0)
    seen = xy[conf > 0]
    assert np.abs(seen[:, 0]).max() <= 1.0 and np.abs(seen[:, 1]).max() <= 1920 / 1080  # inside the image


@pytest.mark.parametrize("kind", [NoiseModel, TrainingNoise])
def test_noise_model_drops_and_jitters(real_views, kind):
    px = real_views[0][0, :500]
    noisy, conf = kind(p_drop=0.1)(px.copy(), np.random.default_rng(0))
    dropped = conf == 0
    assert 0.05 < dropped.mean() < 0.15
    assert np.all(noisy[dropped] == 0)
    err = np.linalg.norm(noisy[~dropped] - px[~dropped], axis=-1)
    assert 1.0 < np.median(err) < 15.0


def test_noise_model_follows_a_detector_track(real_views):
    """Wrists and ankles jitter ~7 × the torso, σ grows with the person's size in the image,
    and left/right swaps come in runs of frames (experiments/detector_track.py's measurements)."""
    px = real_views[0][0, :500].astype(np.float64)
    model = NoiseModel(p_outlier=0.0, p_drop=0.0, swap_rate=0.0, flip_rate=0.0, scale=(1.0, 1.0))
    height = np.median(np.ptp(px[..., 1], axis=1))
    for zoom in (1.0, 2.5):
        big = (px - px.mean(axis=(0, 1))) * zoom
        noisy, conf = model(big, np.random.default_rng(1))
        rms = np.sqrt(((noisy - big) ** 2).mean(axis=(0, 2)))  # (17,) px per coordinate
        np.testing.assert_allclose(rms / (zoom * height) * 1000, model.jitter_per_kpx, rtol=0.15)
    assert rms[[3, 6, 13, 16]].min() > 5 * rms[[0, 7, 8]].max()
    assert 0.95 < np.median(conf) < 0.99 and conf.min() >= 0.05
    # swaps: a run of frames where a joint reads its mirror's position
    swapping = NoiseModel(p_outlier=0.0, p_drop=0.0, scale=(2.0, 2.0), jitter_per_kpx=(0.0,) * 17)
    noisy, _ = swapping(px.copy(), np.random.default_rng(2))
    moved = ~np.isclose(noisy, px.astype(np.float32), atol=1e-3).all(axis=-1)  # (T, 17)
    swapped = np.isclose(noisy, px[:, FLIP_PERM].astype(np.float32), atol=1e-3).all(axis=-1)
    assert moved.any() and np.all(swapped[moved])  # every moved joint holds its mirror's place
    body = moved[:, [1, 4, 11, 14]].all(axis=1)  # whole-body flips: hips and shoulders too
    assert body.any() and (body[1:] & body[:-1]).any()  # some last more than one frame
    assert moved[~body][:, [3, 6, 13, 16]].any()  # limb swaps without a whole-body flip


def test_occlusion_model_hides_runs_of_joints_and_limbs(real_views):
    from posert.data.dataset import OcclusionModel

    px = real_views[0][0]
    occ, conf = OcclusionModel(p_start=0.05)(px, np.random.default_rng(0))
    hidden = conf == 0
    assert np.all(np.isnan(occ[hidden])) and np.all(np.isfinite(occ[~hidden]))
    assert 0.02 < hidden.any(axis=1).mean() < 0.9
    assert not hidden[:, 0].any()  # the pelvis is never hidden alone
    # runs: a hidden joint usually stays hidden in the next frame
    starts = hidden[1:] & ~hidden[:-1]
    assert starts.sum() < 0.3 * hidden.sum()


# The joint structure of DeepMimic's humanoid.urdf (pybullet_data), written out: offsets in the
# URDF's 4× units, knees and elbows revolute about z.
_HUMANOID_URDF = "".join(
    f'<joint name="{n}" type="{kind}"><parent link="{p}"/><child link="{n}"/>'
    f'<origin rpy="0 0 0" xyz="{x} {y} {z}"/>' + ('<axis xyz="0 0 1"/>' if kind == "revolute" else "") + "</joint>"
    for n, kind, p, (x, y, z) in [
        ("root", "fixed", "base", (0, 0, 0)), ("chest", "spherical", "root", (0, 0.944604, 0)),
        ("neck", "spherical", "chest", (0, 0.895576, 0)), ("right_hip", "spherical", "root", (0, 0, 0.339548)),
        ("right_knee", "revolute", "right_hip", (0, -1.686184, 0)),
        ("right_ankle", "spherical", "right_knee", (0, -1.63948, 0)),
        ("right_shoulder", "spherical", "chest", (-0.0962, 0.974, 0.73244)),
        ("right_elbow", "revolute", "right_shoulder", (0, -1.099152, 0)),
        ("right_wrist", "fixed", "right_elbow", (0, -1.035788, 0)),
        ("left_hip", "spherical", "root", (0, 0, -0.339548)),
        ("left_knee", "revolute", "left_hip", (0, -1.686184, 0)),
        ("left_ankle", "spherical", "left_knee", (0, -1.63948, 0)),
        ("left_shoulder", "spherical", "chest", (-0.0962, 0.974, -0.73244)),
        ("left_elbow", "revolute", "left_shoulder", (0, -1.099152, 0)),
        ("left_wrist", "fixed", "left_elbow", (0, -1.035788, 0))])


def test_deepmimic_forward_kinematics_by_hand():
    from posert.data.deepmimic import ROW, clip_to_h36m, parse_urdf_joints

    joints = parse_urdf_joints(_HUMANOID_URDF)
    assert joints["right_knee"][0] == "right_hip" and np.allclose(joints["right_knee"][2], [0, 0, 1])
    row = np.zeros(ROW)
    row[0], row[1:4] = 1 / 30, [0.0, 0.85, 0.0]  # duration, root position (y-up, m)
    row[4:8] = [1, 0, 0, 0]  # root: identity
    i = 8
    for _, n in (("chest", 4), ("neck", 4), ("rh", 4), ("rk", 1), ("ra", 4), ("rs", 4), ("re", 1), ("lh", 4),
                 ("lk", 1), ("la", 4), ("ls", 4), ("le", 1)):
        if n == 4:
            row[i] = 1.0
        i += n
    bent = row.copy()
    bent[20] = -np.pi / 2  # right knee flexed 90°
    half = np.sqrt(0.5)
    bent[4:8] = [half, 0, half, 0]  # root turned +90° about the vertical (y): facing −z
    p = clip_to_h36m(np.stack([row, bent]), joints)
    np.testing.assert_allclose(p[0, 0], [0, 0.85, 0])
    np.testing.assert_allclose(p[0, 1], [0, 0.85, 0.339548 / 4], atol=1e-9)  # right hip at +z (the right)
    np.testing.assert_allclose(p[0, 3], [0, 0.85 - (1.686184 + 1.63948) / 4, 0.339548 / 4], atol=1e-9)
    np.testing.assert_allclose(bone_lengths(p[0]), bone_lengths(p[1]), atol=1e-9)  # rigid bones
    # facing −z after the turn, the flexed shin points backwards (+z) and stays horizontal
    shin = p[1, 3] - p[1, 2]
    np.testing.assert_allclose(shin, [0, 0, 1.63948 / 4], atol=1e-9)
    with pytest.raises(ValueError):
        clip_to_h36m(np.zeros((2, 40)), joints)


def test_omomo_reader_columns_joint_order_and_rate(tmp_path, monkeypatch, motion):
    """An InterMimic-layout table built from real CMU frames (z-up, m, 30 fps) comes back as the
    same H36M joints in mm at 50 fps; the joint order is read from the package's own list."""
    import torch

    import posert.data.sources as sources

    h36 = motion[:60].astype(np.float64)  # (60, 17, 3) mm, z-up, 50 fps; treated as 30 fps
    names = ["Pelvis", "L_Hip", "L_Knee", "L_Ankle", "L_Toe", "R_Hip", "R_Knee", "R_Ankle", "R_Toe", "Torso",
             "Spine", "Chest", "Neck", "Head", "L_Thorax", "L_Shoulder", "L_Elbow", "L_Wrist"] + \
        [f"L_Finger{i}" for i in range(15)] + ["R_Thorax", "R_Shoulder", "R_Elbow", "R_Wrist"] + \
        [f"R_Finger{i}" for i in range(15)]
    assert len(names) == 52
    J = {n: i for i, n in enumerate(JOINT_NAMES)}
    smpl = np.zeros((len(h36), 52, 3))
    for side, s in (("l", "L"), ("r", "R")):
        for j in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
            smpl[:, names.index(f"{s}_{j.capitalize()}")] = h36[:, J[f"{side}_{j}"]]
        smpl[:, names.index(f"{s}_Thorax")] = h36[:, J["thorax"]]
    smpl[:, names.index("Torso")] = smpl[:, names.index("Spine")] = h36[:, J["spine"]]
    smpl[:, names.index("Neck")] = h36[:, J["thorax"]]
    smpl[:, names.index("Head")] = h36[:, J["neck"]]
    table = np.zeros((len(h36), 591), np.float32)
    table[:, 162:318] = (smpl / 1000.0).reshape(len(h36), -1)
    root = tmp_path / "extracted/holosoma_omomo"
    (root / "holosoma_retargeting/demo_data/OMOMO_new").mkdir(parents=True)
    (root / "holosoma_retargeting/config_types").mkdir(parents=True)
    (root / "holosoma_retargeting/config_types/data_type.py").write_text(
        "OTHER = [\"x\"]\nSMPLH_DEMO_JOINTS = [\n" + "".join(f'    "{n}",\n' for n in names) + "]\n")
    torch.save(torch.from_numpy(table), root / "holosoma_retargeting/demo_data/OMOMO_new/sub1_box_001.pt")
    (root / ".extracted").touch()
    monkeypatch.setattr(sources, "_pip_download", lambda *a, **k: tmp_path / "holosoma.whl")

    out = sources.load_omomo(tmp_path)
    seq = out["sub1_box_001"]
    assert seq.dtype == np.float32 and seq.shape == (99, 17, 3)  # 59 intervals at 30 fps → 50 fps
    want = h36.copy()
    want[:, J["pelvis"]] = 0.5 * (h36[:, J["l_hip"]] + h36[:, J["r_hip"]])
    want[:, J["head"]] = h36[:, J["neck"]] + sources.OMOMO_HEAD_TOP * (h36[:, J["neck"]] - h36[:, J["thorax"]])
    np.testing.assert_allclose(seq[::5], want[::3].astype(np.float32), atol=1e-3)  # t = 0, 0.1, 0.2 … s
    np.testing.assert_allclose(seq, resample(want, 30.0), atol=1e-3)
