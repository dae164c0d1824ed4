"""posert.viz: a run of the committed clip recorded to a Rerun .rrd and read back (Rerun's
dataframe API): the entities, one row per video frame, and the logged values."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parents[1] / "data"


def _read(rrd: Path):
    import rerun as rr

    server = rr.server.Server(datasets={"run": [str(rrd)]})
    dataset = rr.catalog.CatalogClient(server.url()).get_dataset("run")
    return dataset.filter_contents("/**").reader(index="frame").to_pandas()


def test_a_recorded_run_reads_back(tmp_path):
    pytest.importorskip("rerun")
    pytest.importorskip("datafusion")
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
    for entity in ("/video/image:Image:buffer", "/video/image/keypoints:Points2D:positions",
                   "/video/camera/refined/joints:Points3D:positions", "/video/camera/lifted/joints:Points3D:positions",
                   "/world/video/joints:Points3D:positions", "/video/health:Scalars:scalars",
                   "/latency/detect:Scalars:scalars", "/latency/lift:Scalars:scalars"):
        assert entity in df.columns, entity
    last = df.iloc[-1]
    refined = np.stack(last["/video/camera/refined/joints:Points3D:positions"])
    np.testing.assert_allclose(refined, run.refined[-1], atol=1e-3)  # mm
    world = np.stack(last["/world/video/joints:Points3D:positions"])
    np.testing.assert_allclose(world, run.world[-1], atol=1e-3)
    assert world[10, 2] - world[0, 2] > 400  # upright in the world frame (z up)
    kp = np.stack(last["/video/image/keypoints:Points2D:positions"])
    assert kp.shape == (int((run.conf[-1] > 0).sum()), 2)
    assert float(np.ravel(last["/video/health:Scalars:scalars"])[0]) == 0.0  # OK
