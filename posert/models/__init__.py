"""PyTorch models: the 2D→3D lifter, the diffusion denoiser and the diffusion math."""

from posert.models.denoiser import Denoiser
from posert.models.diffusion import CND, Schedule
from posert.models.lifter import Lifter

__all__ = ["CND", "Denoiser", "Lifter", "Schedule"]
