"""posert: real-time streaming 2D→3D human pose with a D3PRefiner-style diffusion refiner."""

__version__ = "0.1.0"
