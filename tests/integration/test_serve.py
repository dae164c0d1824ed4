"""posert serve over Zenoh (loopback TCP): the wire format, a server fed by producers, stream
lifecycle, newest-frame-wins, and the MCAP recording of the committed clip."""

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from posert.camera import ring_rig
from posert.config import PipelineConfig
from posert.data.dataset import center_on_floor, render
from posert.serve.wire import Keypoints, Pose

DATA = Path(__file__).parents[1] / "data"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def views():
    with np.load(DATA / "cmu_01_01.npz") as z:
        world = center_on_floor(z["cmu_01_01"][:120])
    cams = ring_rig()
    return cams, [render(world, c)[0].astype(np.float32) for c in cams]


def _wait(cond, timeout=5.0):
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    return cond()


def test_wire_records_round_trip_and_refuse_what_they_are_not(views):
    cams, px = views
    k = Keypoints("cam0", 12.5, 1000, 1000, px[0][3], np.linspace(0, 1, 17, dtype=np.float32), cams[0])
    raw = k.encode()
    assert raw[:4] == b"PK2D" and len(raw) == 24 + 204 + 216 + 1 + 4
    back = Keypoints.decode(raw)
    np.testing.assert_array_equal(back.kp2d, k.kp2d)
    np.testing.assert_array_equal(back.conf, k.conf)
    np.testing.assert_array_equal(back.camera.R, cams[0].R)
    assert back.camera.oriented and back.stream == "cam0" and back.capture_time == 12.5
    assert Keypoints.decode(Keypoints("s", 0.0, 640, 480, px[0][0], np.ones(17)).encode()).camera is None
    seen = np.arange(17) % 3 != 0  # joints 0, 3, …, 15 not seen
    pose = Pose("cam0", 1.0, 2.0, 0.7, 2, True, 5, *(np.full((17, 3), v, np.float32) for v in (1, 2, 3)), seen)
    got = Pose.decode(pose.encode())
    assert (got.health, got.valid, got.dropped, got.tick_ms) == (2, True, 5, pytest.approx(0.7))
    assert got.world[0, 0] == 2.0 and got.lifted[16, 2] == 3.0
    np.testing.assert_array_equal(got.seen, seen)
    v1 = bytearray(pose.encode())
    v1[4:6] = (1).to_bytes(2, "little")  # a record of the version without ``seen``
    with pytest.raises(ValueError, match="PP3D v2"):
        Pose.decode(bytes(v1))
    for bad in (b"", raw[:100], b"XXXX" + raw[4:], raw + b"x", pose.encode()):
        with pytest.raises(ValueError):
            Keypoints.decode(bad)
    with pytest.raises(ValueError):
        Pose.decode(raw)
    for sid in ("a/b", "*", "", "x" * 300):
        with pytest.raises(ValueError):
            Keypoints(sid, 0.0, 1, 1, px[0][0], np.ones(17)).encode()


def test_a_served_pipeline_gives_what_an_in_process_one_gives(views):
    """Two producers through a loopback server: every frame is ticked and published once, the
    poses equal an in-process pipeline's bit for bit; a bad record and a bad frame are rejected
    and counted without touching the streams; an ended stream frees its slot, a silent one times
    out, a stream beyond capacity is refused."""
    pytest.importorskip("zenoh")
    from posert.runtime import Pipeline
    from posert.serve import PoseClient, PoseServer, zenoh_config

    cams, px = views
    cfg = PipelineConfig().override({"max_streams": 2, "backend.threads": 1})
    conf = np.ones((2, 40, 17), np.float32)
    conf[1, 20:30, 14:17] = 0.0  # cam1 loses its right arm for 10 frames
    port = _port()
    got: dict[str, list] = {"cam0": [], "cam1": [], "cam2": []}
    with PoseServer(cfg, zconfig=zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]), stream_timeout_s=0.5) as server:
        with PoseClient(zconfig=zenoh_config(connect=[f"tcp/127.0.0.1:{port}"])) as client:
            client.subscribe(lambda p: got[p.stream].append(p))
            time.sleep(0.3)
            for t in range(40):
                for k in range(2):
                    client.send(f"cam{k}", px[k][t], conf[k, t], t / 50, 1000, 1000, cams[k] if t == 0 else None)
                if t == 10:
                    client.node.put("posert/in/cam0", b"garbage")  # not a record
                    bad = px[1][t].copy()
                    bad[3] = np.nan
                assert _wait(lambda n=t + 1: len(got["cam0"]) == n and len(got["cam1"]) == n), t
            client.send("cam2", px[2][0], np.ones(17), 0.0, 1000, 1000)  # no free slot
            assert _wait(lambda: server.stats().get("refused", 0) == 1)
            client.send("cam1", bad, np.ones(17), 41 / 50, 1000, 1000)  # NaN on a visible joint
            assert _wait(lambda: server.stats().get("rejected", 0) == 2)
            client.end("cam0")
            assert _wait(lambda: server.stats().get("ended", 0) == 1)
            assert _wait(lambda: server.stats().get("timed_out", 0) == 1, 3.0)  # cam1 fell silent
            client.send("cam2", px[2][0], np.ones(17), 0.0, 1000, 1000)  # now there is room
            assert _wait(lambda: len(got["cam2"]) == 1)
            stats = server.stats()
    assert stats["received"] == 83 and stats["published"] == 81 and stats.get("dropped", 0) == 0
    with Pipeline(cfg) as pipe:
        for k in range(2):
            pipe.add_stream(f"cam{k}", 1000, 1000, cams[k])
        for t in range(40):
            pipe.push_many(["cam0", "cam1"], np.stack([px[0][t], px[1][t]]), conf[:, t], [t / 50] * 2)
            res = pipe.tick()
            for k in range(2):
                p = got[f"cam{k}"][t]
                assert p.capture_time == t / 50 and p.output_time > 0 and p.valid
                np.testing.assert_array_equal(p.refined, res.refined[k])
                np.testing.assert_array_equal(p.world, res.world[k])
                np.testing.assert_array_equal(p.seen, conf[k, t] > 0)


def test_newest_frame_wins_and_drops_are_counted(views):
    """A burst faster than the ticks: the server keeps only each stream's newest frame, counts
    the rest as dropped, and publishes poses in capture order."""
    pytest.importorskip("zenoh")
    from posert.serve import PoseClient, PoseServer, zenoh_config

    cams, px = views
    port = _port()
    got = []
    cfg = PipelineConfig().override({"max_streams": 1, "backend.threads": 1})
    with PoseServer(cfg, zconfig=zenoh_config(listen=[f"tcp/127.0.0.1:{port}"])) as server:
        with PoseClient(zconfig=zenoh_config(connect=[f"tcp/127.0.0.1:{port}"])) as client:
            client.subscribe(got.append)
            time.sleep(0.3)
            for t in range(100):  # as fast as Python sends
                client.send("burst", px[0][t], np.ones(17), t / 50, 1000, 1000)
            assert _wait(lambda: server.stats().get("received", 0) == 100)
            assert _wait(lambda: got and got[-1].capture_time == 99 / 50)
            stats = server.stats()
    assert stats["published"] + stats.get("dropped", 0) == 100 and stats["published"] == len(got)
    times = [p.capture_time for p in got]
    assert times == sorted(times) and got[-1].dropped == stats.get("dropped", 0)


def test_the_committed_clip_recorded_to_mcap_reads_back(tmp_path):
    """`posert run --mcap` on the committed clip: one foxglove.SceneUpdate per model frame on
    /posert/video, the world-frame skeleton in metres, readable with the mcap library."""
    pytest.importorskip("foxglove")
    pytest.importorskip("imageio_ffmpeg")
    from mcap.reader import make_reader

    from posert.cli import main

    out = tmp_path / "run.mcap"
    assert main(["run", "--video", str(DATA / "sports2d_clip.mp4"), "--detections",
                 str(DATA / "sports2d_clip_blazepose.npz"), "--calib", str(DATA / "sports2d_clip_calib.yaml"),
                 "--mcap", str(out)]) == 0
    with open(out, "rb") as f:
        rows = [(s.name, c.topic, m.log_time) for s, c, m in make_reader(f).iter_messages()]
    assert len(rows) == 99  # the clip's model frames at 50 fps
    assert {r[0] for r in rows} == {"foxglove.SceneUpdate"} and {r[1] for r in rows} == {"/posert/video"}
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    decoder = pytest.importorskip("mcap_protobuf.decoder")
    with open(out, "rb") as f:
        msgs = [m for *_, m in make_reader(f, decoder_factories=[decoder.DecoderFactory()]).iter_decoded_messages()]
    e = msgs[-1].entities[0]
    assert e.id == "video" and e.frame_id == "world" and len(e.spheres) == 17
    head_z = e.spheres[10].pose.position.z - e.spheres[0].pose.position.z
    assert 0.4 < head_z < 0.9  # metres, z up: the person stands
    assert {kv.key: kv.value for kv in e.metadata} == {"health": "0", "seen": "1" * 17}  # the clip shows all


def test_mcap_marks_the_joints_a_frame_did_not_show(tmp_path, views):
    """McapRecorder.tick: a joint TickResult.seen marks as not seen is a grey sphere and a 0 in the
    entity's ``seen`` metadata."""
    pytest.importorskip("foxglove")
    decoder = pytest.importorskip("mcap_protobuf.decoder")
    from mcap.reader import make_reader

    from posert.runtime import Pipeline
    from posert.serve.mcap import McapRecorder

    cams, px = views
    conf = np.ones(17, np.float32)
    conf[[3, 6]] = 0.0  # both ankles hidden
    rec = McapRecorder(tmp_path / "seen.mcap")
    with Pipeline(backend="native", max_streams=1, threads=1) as pipe:
        pipe.add_stream("s", 1000, 1000, cams[0])
        pipe.on_tick = rec.tick
        for t in range(3):
            pipe.push("s", px[0][t], conf, t / 50)
            pipe.tick()
    rec.close()
    with open(tmp_path / "seen.mcap", "rb") as f:
        msgs = [m for *_, m in make_reader(f, decoder_factories=[decoder.DecoderFactory()]).iter_decoded_messages()]
    e = msgs[-1].entities[0]
    assert {kv.key: kv.value for kv in e.metadata}["seen"] == "".join("1" if c > 0 else "0" for c in conf)
    grey = [j for j, s in enumerate(e.spheres) if s.color.r == s.color.g == s.color.b]
    assert grey == [3, 6]
