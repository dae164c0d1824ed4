"""posert.viz: a run of the committed clip recorded to a Rerun .rrd and read back (Rerun's
dataframe API): the entities, one row per video frame, and the logged values."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parents[1] / "data"


def _read(rrd: Path):
    """The recording as a pandas table indexed by the ``frame`` timeline (rerun-sdk 0.22's
    dataframe API, or the catalog of ≥ 0.29)."""
    import rerun as rr

    if hasattr(rr, "dataframe"):
        return rr.dataframe.load_recording(str(rrd)).view(index="frame", contents="/**").select().read_pandas()
    pytest.importorskip("datafusion")
    server = rr.server.Server(datasets={"run": [str(rrd)]})
    dataset = rr.catalog.CatalogClient(server.url()).get_dataset("run")
    return dataset.filter_contents("/**").reader(index="frame").to_pandas()


def _col(df, entity: str, *names: str) -> str:
    """The column of ``entity``'s component called one of ``names`` (they differ by version)."""
    for c in df.columns:
        if c.startswith(entity + ":") and c.split(":")[-1] in names:
            return c
    raise AssertionError(f"no column {entity}:{names} in {list(df.columns)}")


def test_a_recorded_run_reads_back(tmp_path):
    pytest.importorskip("rerun")
    pytest.importorskip("imageio_ffmpeg")
    from posert.camera import load_calibration
    from posert.video.detect import RecordedDetector
    from posert.video.run import run_video
    from posert.viz import RerunLog

    rrd = tmp_path / "run.rrd"
    log = RerunLog(rrd=rrd)
    run = run_video(DATA / "sports2d_clip.mp4", detector=RecordedDetector(DATA / "sports2d_clip_blazepose.npz"),
                    camera=load_calibration(DATA / "sports2d_clip_calib.yaml"), log=log, progress=False)
    log.close()
    df = _read(rrd).sort_values("frame")
    assert len(df) == run.frames == 60 and df["frame"].tolist() == list(range(60))
    pos = ("positions", "Position3D", "Position2D")
    for entity, names in (("/video/image", ("buffer", "ImageBuffer")), ("/video/image/keypoints", pos),
                          ("/video/camera/refined/joints", pos), ("/video/camera/lifted/joints", pos),
                          ("/world/video/joints", pos), ("/video/health", ("scalars", "Scalar")),
                          ("/latency/detect", ("scalars", "Scalar")), ("/latency/lift", ("scalars", "Scalar"))):
        _col(df, entity, *names)
    last = df.iloc[-1]
    refined = np.stack(last[_col(df, "/video/camera/refined/joints", *pos)])
    np.testing.assert_allclose(refined, run.refined[-1], atol=1e-3)  # mm
    world = np.stack(last[_col(df, "/world/video/joints", *pos)])
    np.testing.assert_allclose(world, run.world[-1], atol=1e-3)
    assert world[10, 2] - world[0, 2] > 400  # upright in the world frame (z up)
    kp = np.stack(last[_col(df, "/video/image/keypoints", *pos)])
    assert kp.shape == (int((run.conf[-1] > 0).sum()), 2)
    assert float(np.ravel(last[_col(df, "/video/health", "scalars", "Scalar")])[0]) == 0.0  # OK


def test_joints_the_frame_did_not_show_are_drawn_as_guesses(tmp_path, real_views):
    """RerunLog.result draws the refined joints TickResult.seen marks as not seen in GUESS_RGB,
    the rest (and their bones) in REFINED_RGB."""
    pytest.importorskip("rerun")
    from posert.runtime import Pipeline
    from posert.viz import GUESS_RGB, REFINED_RGB, RerunLog

    px = real_views[0][0]
    conf = np.ones(17, np.float32)
    conf[14:17] = 0.0  # the right arm hidden
    rrd = tmp_path / "guess.rrd"
    log = RerunLog(rrd=rrd)
    with Pipeline(backend="native", max_streams=1, threads=1) as pipe:
        pipe.add_stream("s", 1000, 1000)
        for t in range(5):
            pipe.push("s", px[t], conf, t / 50)
            res = pipe.tick()
            log.result(res, index=t)
    log.close()
    np.testing.assert_array_equal(res.seen[0], conf > 0)
    df = _read(rrd).sort_values("frame")
    packed = np.ravel(df.iloc[-1][_col(df, "/s/camera/refined/joints", "colors", "Color")]).astype(np.uint64)
    rgb = np.stack([(packed >> 24) & 255, (packed >> 16) & 255, (packed >> 8) & 255], -1)
    want = np.where((conf > 0)[:, None], REFINED_RGB, GUESS_RGB)
    np.testing.assert_array_equal(rgb, want)
