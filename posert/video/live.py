"""A live source that never falls behind: the newest frame is processed, older ones are dropped.

A camera delivers frames at its own rate whatever the consumer does; if each frame's processing
takes longer than a frame period, reading them in order makes the output ever later. A
:class:`NewestFrame` reads its source on a thread, keeps only the newest frame with its capture
time (``time.perf_counter()`` when it was read), and counts every frame the consumer never saw.
A video file stands in for a camera with ``realtime=True``: its frames are released at the file's
own rate, as a camera would deliver them (``posert run --video FILE --realtime``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np


class NewestFrame:
    """Iterate ``(index, capture_time, frame)`` over the newest frames of ``frames``.

    Args:
        frames: the source's frames in order (e.g. :func:`posert.video.run.open_video`'s).
        fps: the source's frame rate (used with ``realtime``).
        realtime: release frame i at ``start + i / fps`` (a file standing in for a camera).
    ``index`` is the frame's index in the source (gaps: dropped frames); ``dropped`` counts the
    frames replaced before they were taken. Iteration ends after the source's last frame; an
    error of the source is raised by the iteration.
    """

    def __init__(self, frames: Iterator[np.ndarray], fps: float, realtime: bool = False):
        self._frames = frames
        self.fps = float(fps)
        self.realtime = realtime
        self.dropped = 0
        self._cond = threading.Condition()
        self._newest: tuple[int, float, np.ndarray] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="posert-live", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        start = time.perf_counter()
        try:
            for i, frame in enumerate(self._frames):
                if self.realtime:
                    delay = start + i / self.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                with self._cond:
                    if self._stop:
                        return
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = (i, time.perf_counter(), frame)
                    self._cond.notify()
        except BaseException as e:  # surfaced to the consumer
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, float, np.ndarray]:
        with self._cond:
            while self._newest is None and not self._done:
                self._cond.wait()
            if self._newest is None:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            item, self._newest = self._newest, None
            return item

    def close(self) -> None:
        """Stop reading (the source's current read finishes first)."""
        with self._cond:
            self._stop = True
