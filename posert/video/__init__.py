"""From video to refined 3D: a pluggable 2D front-end (MediaPipe BlazePose by default), rate
conversion to the model's 50 fps, the streaming :class:`~posert.runtime.Pipeline`, rendered
output and per-stage latency. Needs the ``video`` extra for MediaPipe and the
``imageio``/``imageio-ffmpeg`` packages for decoding and encoding."""

from posert.video.detect import Detection, MediaPipePose, RecordedDetector
from posert.video.resample import RateConverter
from posert.video.run import VideoRun, run_video

__all__ = ["Detection", "MediaPipePose", "RecordedDetector", "RateConverter", "VideoRun", "run_video"]
