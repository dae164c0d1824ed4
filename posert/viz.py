"""Live view and recording with Rerun (``rerun-sdk``, extra ``viz``): what posert sees and outputs.

:class:`RerunLog` logs, per stream and frame: the image with its 2D keypoints and bones, the
refined 3D skeleton (the lifter's alone, faint, beside it) in the camera frame, the refined
skeleton in the world frame (z up) when the stream's camera orientation is known, the stream's
health code, and the per-stage latency as time series. ``posert run --viewer`` shows it live,
``--rrd FILE`` records it; a robot program logs its own streams the same way::

    log = RerunLog(rrd="out/robot.rrd")          # or spawn=True for a viewer, serve=True for the web viewer
    log.frame("cam0", index=i, t=t, image=rgb, kp2d=kp, conf=conf)
    log.result(pipe.tick(), index=i)
    log.close()

Entities: ``<stream>/image`` (+ ``/keypoints``, ``/bones``), ``<stream>/camera/refined`` and
``/lifted`` (points and bones, mm, camera frame: x right, y down, z forward), ``world/<stream>``
(mm, z up), ``<stream>/health``, ``latency/<stage>`` (ms). Timelines: ``frame`` (the caller's
index) and ``time`` (seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posert.skeleton import BONES

REFINED_RGB = (66, 165, 245)
LIFTED_RGBA = (200, 200, 200, 90)
KEYPOINT_RGB = (255, 193, 7)
GUESS_RGB = (158, 158, 158)  # a refined joint the frame did not show (TickResult.seen): a guess


def _rerun():
    try:
        import rerun as rr
    except ImportError:  # pragma: no cover - the extra is missing
        from posert.errors import MissingDependency

        raise MissingDependency("the live view needs rerun-sdk: pip install 'posert[viz]'") from None
    return rr


def _name(stream) -> str:
    """A stream id as one entity path part."""
    rr = _rerun()
    return rr.escape_entity_path_part(str(stream))


class RerunLog:
    """One Rerun recording of posert's streams.

    Args:
        rrd: write the recording to this ``.rrd`` file.
        spawn: start a Rerun viewer and stream to it (needs a display).
        serve: serve the web viewer (``serve_web_viewer``) on ``web_port``.
        app_id: the recording's application id.
    Raises :class:`~posert.errors.MissingDependency` without ``rerun-sdk`` and
    ValueError when no sink (rrd, spawn, serve) is given.
    """

    def __init__(self, rrd: str | Path | None = None, spawn: bool = False, serve: bool = False,
                 app_id: str = "posert", web_port: int = 9090):
        rr = _rerun()
        if not (rrd or spawn or serve):
            raise ValueError("RerunLog needs a sink: rrd=FILE, spawn=True or serve=True")
        self.rr = rr
        self._scalar = getattr(rr, "Scalars", None) or rr.Scalar  # rerun-sdk ≥ 0.23 / < 0.23
        if rrd is not None:
            Path(rrd).parent.mkdir(parents=True, exist_ok=True)
        if hasattr(rr, "FileSink"):  # rerun-sdk ≥ 0.23: several sinks at once
            self.rec = rr.RecordingStream(app_id)
            sinks = [rr.FileSink(str(rrd))] if rrd is not None else []
            if spawn:
                rr.spawn(connect=False, recording=self.rec)
                sinks.append(rr.GrpcSink())
            if serve:
                url = rr.serve_grpc(recording=self.rec)
                rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=url)
            if sinks:
                self.rec.set_sinks(*sinks)
        else:  # rerun-sdk 0.22 (numpy < 2, beside MediaPipe 0.10.21): one sink
            if sum(map(bool, (rrd, spawn, serve))) > 1:
                raise ValueError("rerun-sdk < 0.23 writes to one sink: choose rrd, spawn or serve")
            self.rec = rr.new_recording(app_id)
            if rrd is not None:
                self.rec.save(str(rrd))
            elif spawn:
                self.rec.spawn()
            else:
                self.rec.serve(open_browser=False, web_port=web_port)
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self._static: set[str] = set()

    def _time(self, index: int, t: float | None) -> None:
        if hasattr(self.rec, "set_time"):
            self.rec.set_time("frame", sequence=int(index))
            if t is not None:
                self.rec.set_time("time", duration=float(t))
        else:
            self.rec.set_time_sequence("frame", int(index))
            if t is not None:
                self.rec.set_time_seconds("time", float(t))

    def _skeleton(self, path: str, pose: np.ndarray, color, radius: float, seen: np.ndarray | None = None) -> None:
        rr = self.rr
        ok = np.isfinite(pose).all(-1)
        bones = [(p, c) for p, c in BONES if ok[p] and ok[c]]
        joint_colors, bone_colors = color, color
        if seen is not None:  # the joints not shown (and their bones) grey
            seen = np.asarray(seen, bool)
            joint_colors = np.where(seen[:, None], np.asarray(color, np.uint8), np.asarray(GUESS_RGB, np.uint8))[ok]
            bone_colors = [color if seen[p] and seen[c] else GUESS_RGB for p, c in bones]
        self.rec.log(f"{path}/joints", rr.Points3D(pose[ok], colors=joint_colors, radii=radius))
        self.rec.log(f"{path}/bones", rr.LineStrips3D([pose[[p, c]] for p, c in bones], colors=bone_colors,
                                                      radii=radius * 0.6))

    def frame(self, stream, index: int, t: float | None = None, image: np.ndarray | None = None,
              kp2d: np.ndarray | None = None, conf: np.ndarray | None = None) -> None:
        """Log a stream's input at frame ``index``: ``image`` (H, W, 3) uint8 RGB, kp2d (17, 2) px
        and conf (17,) (joints with confidence 0 are not drawn)."""
        rr = self.rr
        s = _name(stream)
        self._time(index, t)
        if s not in self._static:
            self.rec.log(f"{s}/camera", rr.ViewCoordinates.RDF, static=True)  # x right, y down, z forward
            self._static.add(s)
        if image is not None:
            self.rec.log(f"{s}/image", rr.Image(np.asarray(image)))
        if kp2d is not None:
            kp = np.asarray(kp2d, np.float32)
            seen = np.isfinite(kp).all(-1) & (np.ones(len(kp), bool) if conf is None else np.asarray(conf) > 0)
            self.rec.log(f"{s}/image/keypoints", rr.Points2D(kp[seen], colors=KEYPOINT_RGB, radii=3.0))
            self.rec.log(f"{s}/image/bones", rr.LineStrips2D([kp[[p, c]] for p, c in BONES if seen[p] and seen[c]],
                                                            colors=KEYPOINT_RGB))

    def pose(self, stream, index: int, refined: np.ndarray, lifted: np.ndarray | None = None,
             world: np.ndarray | None = None, health: int | None = None, t: float | None = None,
             seen: np.ndarray | None = None) -> None:
        """Log a stream's output at frame ``index``: refined and lifted (17, 3) mm camera frame,
        world (17, 3) mm z up (pass it only when the camera's orientation is known), its health code,
        and seen (17,) bool (``TickResult.seen``: the joints not seen are drawn grey, guesses)."""
        s = _name(stream)
        self._time(index, t)
        self._skeleton(f"{s}/camera/refined", np.asarray(refined, np.float32), REFINED_RGB, 15.0, seen)
        if lifted is not None:
            self._skeleton(f"{s}/camera/lifted", np.asarray(lifted, np.float32), LIFTED_RGBA, 10.0)
        if world is not None:
            self._skeleton(f"world/{s}", np.asarray(world, np.float32), REFINED_RGB, 15.0, seen)
        if health is not None:
            self.rec.log(f"{s}/health", self._scalar(float(health)))

    def latency(self, index: int, stages: dict[str, float], t: float | None = None) -> None:
        """Log per-stage latencies (ms) at frame ``index`` as time series ``latency/<stage>``."""
        self._time(index, t)
        for k, v in stages.items():
            if np.isfinite(v):
                self.rec.log(f"latency/{k}", self._scalar(float(v)))

    def result(self, res, index: int, t: float | None = None, world: bool = False) -> None:
        """Log every stream of a :class:`~posert.runtime.pipeline.TickResult` at frame ``index``
        (its world-frame poses too with ``world``) and the tick's latency."""
        for i, sid in enumerate(res.stream_ids):
            self.pose(sid, index, res.refined[i], res.lifted[i], res.world[i] if world else None,
                      int(res.health[i]), t, res.seen[i])
        self.latency(index, res.latency_ms, t)

    def close(self) -> None:
        """Flush and close the recording."""
        self.rec.flush()
        self.rec.disconnect()
