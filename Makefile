# Two entry points: `make demo` (the main job on real motion, CPU) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.posert-installed

.PHONY: setup demo test test-fast video lint sanitize clean

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

# posert._C under ASan + UBSan (CPU kernels; build/sanitize), then the kernel tests, the bindings
# fuzz and the streaming API's state machine against it.
SAN := build/sanitize
sanitize: setup
	$(VENV)/bin/cmake -S . -B $(SAN) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSERT_CUDA=OFF -DPOSERT_SANITIZE=ON \
		-DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR=$$($(PY) -c "import pybind11; print(pybind11.get_cmake_dir())")
	$(VENV)/bin/cmake --build $(SAN)
	rm -rf $(SAN)/site && mkdir -p $(SAN)/site && cp -r posert $(SAN)/site/ && rm -f $(SAN)/site/posert/_C*.so
	cp $(SAN)/_C*.so $(SAN)/site/posert/ && ln -s $(abspath checkpoints) $(SAN)/site/checkpoints
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(PY) -m tests.run_sanitized $(abspath $(SAN)/site) -q -p no:cacheprovider tests/kernels \
		tests/runtime/test_state_machine.py -k "not OnnxRuntime" tests/runtime/test_trust.py \
		tests/runtime/test_flips.py

lint: setup
	$(VENV)/bin/ruff check posert tests benchmarks experiments

clean:
	rm -rf build out
