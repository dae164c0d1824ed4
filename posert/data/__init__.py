"""Real motion: fetching from packages, conversion to H36M-17, datasets of windows."""
