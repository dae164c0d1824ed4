"""``posert run``: a video file or a webcam → 2D front-end → streaming lifter + diffusion refiner →
rendered MP4, contact-sheet PNG and JSON, with per-stage latency."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posert.camera import Camera
from posert.config import PipelineConfig
from posert.skeleton import NUM_JOINTS
from posert.video.detect import Detection, save_recording
from posert.video.render import PersonCrop, compose, contact_sheet
from posert.video.resample import RateConverter, config_for_rate

STAGES = ("decode", "detect", "lift", "refine", "render")
#: A person lost for longer than this (seconds) starts a new stream: stale context is dropped.
MAX_GAP_S = 0.5
#: A pelvis that jumps by more than this share of the image width between detections is taken
#: as another person (single-person front-ends switch identity): the stream restarts.
MAX_JUMP = 0.15
DEMO_VIDEO_SPEC = "sports2d==0.8.34"


def demo_video() -> Path:
    """The Sports2D demo clip (BSD-3, 230 frames, 30 fps, 1768×994), fetched once into the cache
    (``pip download sports2d==0.8.34``; see shared/DATA.md). Raises RuntimeError if the download
    fails."""
    from posert.data.sources import _extract, _pip_download, cache_dir

    root = cache_dir()
    wheel = _pip_download(DEMO_VIDEO_SPEC, root / "downloads", sdist=False)
    out = _extract(wheel, lambda n: n.endswith("Demo/demo.mp4") or n.endswith("licenses/LICENSE"),
                   root / "extracted" / "sports2d")
    found = sorted(out.rglob("demo.mp4"))
    if not found:
        raise RuntimeError(f"{wheel.name} holds no Demo/demo.mp4")
    return found[0]


def open_video(source: str | int) -> tuple[Iterator[np.ndarray], float, bool]:
    """Frames (H, W, 3) uint8 RGB of a file or of webcam number ``source`` (int), the frame rate
    (fps), and whether it is live. Uses imageio's FFmpeg plugin. Raises FileNotFoundError for a
    missing file and ValueError for a file FFmpeg cannot read."""
    import imageio.v3 as iio

    if isinstance(source, int):
        uri = f"<video{source}>"
        return iter(iio.imiter(uri, plugin="FFMPEG")), 30.0, True
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    try:
        fps = float(iio.immeta(path, plugin="FFMPEG").get("fps") or 30.0)
    except Exception as e:  # imageio/FFmpeg's own errors: keep FFmpeg's last line, not its banner
        lines = [ln.strip() for ln in str(e).replace(". ", ".\n").splitlines() if ln.strip()]
        raise ValueError(f"{path} is not a readable video ({lines[-1] if lines else type(e).__name__})") from None
    return iter(iio.imiter(path, plugin="FFMPEG")), fps, False


def _checked(det: Detection | None) -> Detection | None:
    """Validate a front-end's output. Joints with a non-finite coordinate become missing
    (confidence 0) and confidences are clipped to [0, 1]; a detection with fewer than 4 visible
    joints counts as no person. Raises TypeError/ValueError for a malformed detection."""
    if det is None:
        return None
    if not isinstance(det, Detection):
        raise TypeError(f"a detector must return posert.video.Detection or None, got {type(det).__name__}")
    kp = np.asarray(det.kp2d, np.float32)
    conf = np.asarray(det.conf, np.float32)
    if kp.shape != (NUM_JOINTS, 2) or conf.shape != (NUM_JOINTS,):
        raise ValueError(f"detection must be kp2d ({NUM_JOINTS}, 2) and conf ({NUM_JOINTS},), got {kp.shape}, "
                         f"{conf.shape}")
    conf = np.where(np.isfinite(kp).all(axis=-1) & np.isfinite(conf), np.clip(conf, 0.0, 1.0), 0.0)
    if (conf > 0).sum() < 4:
        return None
    return Detection(kp, conf.astype(np.float32), det.raw)


@dataclass
class VideoRun:
    """Result of :func:`run_video`.

    Attributes:
        fps: source frame rate; frames: frames read; size: (width, height) px.
        times: (F,) float64 seconds of every frame (index / fps for a file, wall clock when live).
        detected: (F,) bool, a person was found in the frame.
        kp2d: (F, 17, 2) float32 px (NaN where none), conf: (F, 17) float32.
        refined, lifted: (F, 17, 3) float32 mm, camera frame, root-relative: the pose of the
            newest model frame at that video frame (NaN before the first detection).
        world: (F, 17, 3) float32 mm, the refined pose in the world frame (z up), root-relative:
            through the calibration's orientation when one is given, else as a level camera.
        seen: (F, 17) bool, the joints that pose's frame showed (``TickResult.seen``; the others
            are guesses: posert.runtime.hold); all False before the first detection.
        calibrated: a calibrated camera (K, distortion; ``oriented``: with its orientation) was used.
        live: frames came from a camera (or a file read in real time): only the newest frame is
            processed (:class:`posert.video.live.NewestFrame`); ``source_index`` (F,) is each
            processed frame's index in the source, ``dropped_frames`` the frames never processed,
            and ``capture_ms`` (F,) each frame's capture → 3D output latency, ms.
        stage_ms: stage → (F,) per-video-frame cost in ms (decode, detect, lift, refine, render).
        model_frames: 50 fps frames streamed through the pipeline.
        stream_restarts: times the stream restarted (person lost > ``MAX_GAP_S`` or switched).
        unflipped_frames: model frames the detector had mirrored (front taken for back) and the
            pipeline flipped back (:mod:`posert.runtime.flips`).
        config: the pipeline's config as it ran (:meth:`PipelineConfig.to_dict`).
    """

    fps: float
    frames: int
    size: tuple[int, int]
    times: np.ndarray
    detected: np.ndarray
    kp2d: np.ndarray
    conf: np.ndarray
    refined: np.ndarray
    lifted: np.ndarray
    stage_ms: dict[str, np.ndarray]
    model_frames: int
    detector: str
    stream_restarts: int = 0
    unflipped_frames: int = 0
    world: np.ndarray | None = None
    calibrated: str = "none"
    live: bool = False
    source_index: np.ndarray | None = None
    dropped_frames: int = 0
    capture_ms: np.ndarray | None = None
    seen: np.ndarray | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def latency_table(self) -> dict[str, dict[str, float]]:
        """stage → {p50, p99, mean} ms per video frame (lift/refine: frames with a detection)."""
        out = {}
        for s in (*STAGES, "total"):
            v = self.stage_ms[s] if s != "total" else sum(self.stage_ms[k] for k in STAGES)
            if s in ("lift", "refine"):
                v = v[self.detected]
            if len(v):
                out[s] = {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                          "mean": float(v.mean())}
        return out

    def to_json(self) -> dict:
        def rows(a):
            return [None if not np.all(np.isfinite(x)) else np.round(x, 2).tolist() for x in a]

        return {"video": {"fps": self.fps, "frames": self.frames, "width": self.size[0], "height": self.size[1]},
                "detector": self.detector, "model_fps": 50.0, "model_frames": self.model_frames,
                "stream_restarts": self.stream_restarts, "unflipped_model_frames": self.unflipped_frames,
                "frames_with_person": int(self.detected.sum()),
                "camera": self.calibrated,
                "units": {"kp2d": "px", "pose3d": "mm, camera frame (x right, y down, z forward), root-relative",
                          "world_mm": "mm, world frame (z up), root-relative: the calibration's orientation, or "
                                      "a level camera's when none is given"},
                "latency_ms": self.latency_table(), "outputs": self.outputs, "config": self.config,
                "live": None if not self.live else {
                    "dropped_frames": self.dropped_frames, "processed_frames": self.frames,
                    "capture_to_output_ms": {"p50": float(np.nanpercentile(self.capture_ms, 50)),
                                             "p99": float(np.nanpercentile(self.capture_ms, 99))}},
                "frames": [{"index": i, "t": round(float(self.times[i]), 4), "detected": bool(self.detected[i]),
                            "kp2d": r2, "conf": np.round(self.conf[i], 3).tolist(), "refined_mm": r3, "lifted_mm": l3,
                            "world_mm": w3, "seen": None if self.seen is None else self.seen[i].astype(int).tolist()}
                           for i, (r2, r3, l3, w3) in enumerate(zip(rows(self.kp2d), rows(self.refined),
                                                                    rows(self.lifted), rows(self.world)))]}


def run_video(source: str | int, out_mp4: str | Path | None = None, out_json: str | Path | None = None,
              out_png: str | Path | None = None, detector: Callable[[np.ndarray], Detection | None] | None = None,
              config: PipelineConfig | None = None, max_frames: int | None = None, render_height: int = 480,
              record: str | Path | None = None, follow_person: bool = True, progress: bool = True,
              camera: Camera | None = None, log=None, on_tick: Callable | None = None,
              realtime: bool = False) -> VideoRun:
    """Run a video (file path, or webcam number) through ``detector`` and the streaming pipeline.

    Args:
        detector: callable RGB frame → :class:`Detection` | None; default :class:`MediaPipePose`.
        config: the pipeline's config (default: the defaults; one stream).
        out_mp4 / out_png / out_json: rendered video, contact sheet of six frames, JSON report
            (any may be None). Rendering runs only when ``out_mp4`` or ``out_png`` is given.
        record: write the front-end's raw keypoints (``.npz``) for :class:`RecordedDetector`.
        follow_person: render a smoothed crop around the person (:class:`PersonCrop`) instead of
            the whole frame.
        camera: the video's calibrated camera (:func:`posert.camera.load_calibration`): its K and
            distortion for the correction stage and, when it is ``oriented``, its orientation for the
            upright view and the world-frame poses. Its image size must be the video's (ValueError).
        log: a :class:`posert.viz.RerunLog` (live view or ``.rrd``): every frame's image, 2D,
            refined and lifted 3D, world-frame 3D with an oriented camera, health and latency.
        on_tick: called with every :class:`~posert.runtime.pipeline.TickResult` (e.g.
            :meth:`posert.serve.mcap.McapRecorder.tick`).
        realtime: read a file at its own frame rate as a camera delivers frames (a stand-in
            camera): like a webcam, only the newest frame is processed, older ones are dropped.
    Detections are converted causally to the models' 50 fps (:class:`RateConverter`, with the
    correction's β for resampled 2D: :func:`~posert.video.resample.config_for_rate`); a person
    lost for more than ``MAX_GAP_S``, or a 2D pelvis jump of more than ``MAX_JUMP`` of the image
    width (the front-end switched to another person), restarts the stream. Returns a :class:`VideoRun`.
    Raises FileNotFoundError for a missing video and ValueError for an empty one.
    """
    from posert.runtime import Pipeline

    frames_it, fps, live = open_video(source)
    t_start = time.perf_counter()
    live = live or realtime
    newest = None
    if live:
        from posert.video.live import NewestFrame

        newest = NewestFrame(frames_it, fps, realtime=realtime)
    own_detector = detector is None
    if own_detector:
        from posert.video.detect import MediaPipePose

        detector = MediaPipePose()
    pipe = Pipeline(config_for_rate(config, fps), max_streams=1)
    pipe.on_tick = on_tick
    conv = RateConverter()
    render = out_mp4 is not None or out_png is not None
    writer = None
    if out_mp4 is not None:
        import imageio.v2 as iio2

        Path(out_mp4).parent.mkdir(parents=True, exist_ok=True)
        writer = iio2.get_writer(str(out_mp4), fps=fps, codec="libx264", quality=7, macro_block_size=2,
                                 ffmpeg_log_level="error")
    cols: dict[str, list] = {k: [] for k in ("t", "det", "kp", "conf", "ref", "lif", "wld", "shown", "raw", "idx",
                                             "cap")}
    stage: dict[str, list[float]] = {s: [] for s in STAGES}
    follow = PersonCrop() if follow_person else None
    kept: list[tuple[int, np.ndarray]] = []  # every ``stride``-th rendered frame at half size, for the PNG
    stride = 3
    nan3 = np.full((NUM_JOINTS, 3), np.nan, np.float32)
    last_ref, last_lif, last_wld, last_seen, stream_on, model_frames = nan3, nan3, nan3, -np.inf, False, 0
    last_shown = np.zeros(NUM_JOINTS, bool)  # the joints the last ticked frame showed (TickResult.seen)
    last_pelvis, restarts, last_health, unflipped = None, 0, None, 0
    size = (0, 0)
    bar = tqdm(desc="posert run", unit="frame", disable=not progress)
    try:
        i = 0
        while max_frames is None or i < max_frames:
            t0 = time.perf_counter()
            try:
                if newest is not None:
                    index, t_cap, frame = next(newest)
                else:
                    index, t_cap, frame = i, np.nan, next(frames_it)
            except StopIteration:
                break
            t_dec = time.perf_counter()
            size = (frame.shape[1], frame.shape[0])
            t = (t_cap - t_start) if live else i / fps
            det = _checked(detector(frame))
            t_det = time.perf_counter()
            lift_ms, tick_ms = 0.0, 0.0
            if det is not None:
                pelvis = det.kp2d[0] if det.conf[0] > 0 else None
                jump = (pelvis is not None and last_pelvis is not None
                        and np.linalg.norm(pelvis - last_pelvis) > MAX_JUMP * frame.shape[1])
                if pelvis is not None:
                    last_pelvis = pelvis
                if t - last_seen > MAX_GAP_S or jump:
                    if stream_on:
                        unflipped += pipe.stream_info("video").unflipped
                        pipe.remove_stream("video")
                        restarts += 1
                    if camera is not None and (camera.width, camera.height) != size:
                        raise ValueError(f"the calibration is for {camera.width}×{camera.height} images, the video "
                                         f"is {size[0]}×{size[1]}")
                    pipe.add_stream("video", *size, camera)
                    stream_on = True
                    conv.reset()
                last_seen = t
                for tau, kp, c in conv(t, det.kp2d, det.conf):
                    pipe.push("video", kp, c, tau)
                    res = pipe.tick()
                    lift_ms += res.latency_ms["lift"]
                    tick_ms += res.latency_ms["tick"]
                    last_ref, last_lif, last_wld, last_shown = res.refined[0], res.lifted[0], res.world[0], res.seen[0]
                    last_health = int(res.health[0])
                    model_frames += 1
            t_model = time.perf_counter()
            cols["idx"].append(index)
            cols["cap"].append((t_model - t_cap) * 1e3)
            kp = det.kp2d if det is not None else np.full((NUM_JOINTS, 2), np.nan, np.float32)
            conf = det.conf if det is not None else np.zeros(NUM_JOINTS, np.float32)
            for k, v in (("t", t), ("det", det is not None), ("kp", kp), ("conf", conf), ("ref", last_ref),
                         ("lif", last_lif), ("wld", last_wld), ("shown", last_shown),
                         ("raw", None if det is None else det.raw)):
                cols[k].append(v)
            if render:
                show = det is not None or np.all(np.isfinite(last_ref))
                img = compose(frame, kp if det is not None else None, conf,
                              last_ref if show and np.all(np.isfinite(last_ref)) else None,
                              last_lif if show and np.all(np.isfinite(last_lif)) else None,
                              height=render_height, label=f"t = {t:5.2f} s",
                              crop=None if follow is None else follow.update(
                                  kp if det is not None else None, conf, *size),
                              crop_aspect=PersonCrop().aspect)
                if writer is not None:
                    writer.append_data(img)
                if out_png is not None and i % stride == 0:
                    kept.append((i, img[::2, ::2].copy()))
                    if len(kept) > 90:  # long or live input: keep memory bounded
                        kept, stride = kept[::2], stride * 2
            t_ren = time.perf_counter()
            for s, v in (("decode", (t_dec - t0) * 1e3), ("detect", (t_det - t_dec) * 1e3), ("lift", lift_ms),
                         ("refine", tick_ms - lift_ms), ("render", (t_ren - t_model) * 1e3)):
                stage[s].append(v)
            if log is not None:
                log.frame("video", i, t, frame, kp if det is not None else None, conf)
                if np.all(np.isfinite(last_ref)):
                    oriented = camera is not None and camera.oriented
                    log.pose("video", i, last_ref, last_lif, last_wld if oriented else None, last_health, t,
                             last_shown)
                log.latency(i, {s: stage[s][-1] for s in STAGES}, t)
            i += 1
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if own_detector:
            detector.close()
        if newest is not None:
            newest.close()
        if stream_on:
            unflipped += pipe.stream_info("video").unflipped
        pipe.close()
    if i == 0:
        raise ValueError(f"no frames could be read from {source!r}")
    run = VideoRun(fps=fps, frames=i, size=size, times=np.array(cols["t"]), detected=np.array(cols["det"]),
                   kp2d=np.stack(cols["kp"]),
                   conf=np.stack(cols["conf"]), refined=np.stack(cols["ref"]), lifted=np.stack(cols["lif"]),
                   stage_ms={s: np.array(v) for s, v in stage.items()}, model_frames=model_frames,
                   detector=getattr(detector, "name", type(detector).__name__), stream_restarts=restarts,
                   unflipped_frames=unflipped, config=pipe.config.to_dict(), world=np.stack(cols["wld"]),
                   seen=np.stack(cols["shown"]),
                   calibrated="none" if camera is None else ("oriented" if camera.oriented else "intrinsics"),
                   live=live, source_index=np.array(cols["idx"]), capture_ms=np.array(cols["cap"], np.float64),
                   dropped_frames=0 if newest is None else newest.dropped)
    if out_mp4 is not None:
        run.outputs["mp4"] = str(out_mp4)
    if out_png is not None and kept:
        import imageio.v3 as iio

        hits = [img for k, img in kept if run.detected[k]] or [img for _, img in kept]
        picks = sorted({round(q) for q in np.linspace(len(hits) * 0.15, len(hits) - 1, 6)})
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out_png, contact_sheet([hits[k] for k in picks], columns=2))
        run.outputs["png"] = str(out_png)
    if record is not None:
        save_recording(record, cols["raw"], run.detector)
        run.outputs["record"] = str(record)
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        run.outputs["json"] = str(out_json)
        Path(out_json).write_text(json.dumps(run.to_json()))
    return run
