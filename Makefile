# Two entry points: `make demo` (the main job on real motion, CPU) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.posert-installed

.PHONY: setup demo test test-fast video lint clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*/*)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 scikit-build-core pybind11 cmake ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/posert demo

test: setup
	$(PY) -m pytest -q

# The same suite without the tests marked slow (ONNX split export, INT8 calibration, training, bench).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# A real video (the Sports2D demo clip, fetched once) → MediaPipe → refined 3D: MP4, PNG, JSON.
video: setup
	$(PY) -m pip install -q --no-build-isolation -e ".[dev,video]"
	$(VENV)/bin/posert run --video demo --out out/video.mp4 --png out/video.png --json out/video.json

lint: setup
	$(VENV)/bin/ruff check posert tests benchmarks experiments

clean:
	rm -rf build out
