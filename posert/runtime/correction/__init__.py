"""The correction stage after the refiner: each refined pose is moved toward the 2D keypoints it
was lifted from, using the stream's camera (lateral step, bone depth, distance step).

:class:`Correction` is the stage (one per pipeline), :class:`CorrectionState` its per-stream
arrays, :mod:`posert.runtime.correction.reference` the NumPy definition of every step, which the
C++ kernel (csrc/correction/) is tested against.
"""

from posert.runtime.correction.stage import Correction, checked_camera
from posert.runtime.correction.state import CorrectionState

__all__ = ["Correction", "CorrectionState", "checked_camera"]
