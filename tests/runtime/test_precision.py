"""FP16 and INT8 (Q/DQ) step models on real motion, the accuracy gate, the static TensorRT
compatibility check and the engine cache (everything of docs/precision.md that needs no GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from posert.calibration.gate import accuracy_gate
from posert.calibration.quantize import node_sensitivity, preprocess, quantizable_nodes, quantize_int8
from posert.calibration.windows import calibration_windows, record_step_inputs
from posert.export.fp16 import convert_fp16
from posert.export.trt_compat import TensorRTCompatibilityError, assert_tensorrt_compatible, check_tensorrt_compat
from posert.runtime.backends.onnxruntime import OrtBackend, create_session
from posert.runtime.engine_cache import EngineCache, EngineCacheError, EngineKey


@pytest.fixture(scope="module")
def fp32_backend(onnx_paths):
    return OrtBackend.from_checkpoints()  # the same cached FP32 step models as ``onnx_paths``


@pytest.fixture(scope="module")
def feeds(fp32_backend, motion, cameras):
    """Step-model inputs recorded while streaming real CMU windows: calibration and held-out."""
    seqs = {"calib": motion[:700], "held": motion[700:]}
    cal = calibration_windows({"calib": seqs["calib"]}, cameras, n=24, length=32, seed=0)
    held = calibration_windows({"held": seqs["held"]}, cameras, n=12, length=32, seed=1)
    return {"calib": record_step_inputs(fp32_backend, cal, stride=4, batch=24),
            "held": record_step_inputs(fp32_backend, held, stride=8, batch=12)}


@pytest.fixture(scope="module")
def prepared(onnx_paths, feeds, tmp_path_factory):
    """Pre-processed FP32 step models and their MinMax calibration caches."""
    work = tmp_path_factory.mktemp("int8")
    out = {}
    for i, name in enumerate(("lifter", "denoiser")):
        pre = preprocess(onnx_paths[i], work / f"{name}.pre.onnx")
        cache = work / f"{name}.calib.json"
        quantize_int8(pre, work / f"{name}.int8.onnx", feeds["calib"][i], cache)
        out[name] = {"path": pre, "calibration_cache": cache, "int8": work / f"{name}.int8.onnx", "work": work}
    return out


def _err_mm(a_path, b_path, feed_list) -> np.ndarray:
    a, b = create_session(a_path), create_session(b_path)
    return np.concatenate([np.abs(a.run(None, f)[0] - b.run(None, f)[0]).ravel() for f in feed_list]) * 1000.0


def test_calibration_windows_are_reproducible_and_cover_protocols(motion, cameras):
    a = calibration_windows({"cmu": motion}, cameras, n=9, length=30, seed=3)
    b = calibration_windows({"cmu": motion}, cameras, n=9, length=30, seed=3)
    assert [w.name for w in a] == [w.name for w in b]
    assert all(np.array_equal(x.px, y.px, equal_nan=True) for x, y in zip(a, b))
    assert {w.name.rsplit("/", 1)[1] for w in a} == {"none", "detector", "occlusion"}
    occluded = [w for w in a if w.name.endswith("occlusion")]
    assert all(np.isnan(w.px[w.conf == 0]).all() for w in occluded)
    with pytest.raises(ValueError, match="no training sequence"):
        calibration_windows({"short": motion[:10]}, cameras, n=2, length=30)


def test_recorded_feeds_replay_the_stream(fp32_backend, feeds, onnx_paths):
    """The recorded inputs are what the pipeline fed: replaying them gives finite poses and
    later ticks carry filled caches (the calibration sees real keys/values, not zeros)."""
    lifter_feeds, den_feeds = feeds["calib"]
    assert len(den_feeds) == 2 * len(lifter_feeds)  # K = 2 denoiser steps per tick
    sess = create_session(onnx_paths[0])
    pose = sess.run(None, lifter_feeds[-1])[0]
    assert np.isfinite(pose).all() and 0.1 < np.abs(pose).max() < 2.0  # metres, root-relative
    def empty_slots(c):  # (B, 17, heads, M, d): ring slots never written
        return int((np.abs(c).sum(axis=(1, 2, 4)) == 0).sum())

    assert empty_slots(lifter_feeds[0]["cache_0"]) > 0  # first recorded tick: ring still filling
    assert empty_slots(lifter_feeds[-1]["cache_0"]) == 0  # later: every slot holds a real frame


def test_fp16_close_to_fp32_on_real_frames(onnx_paths, feeds, tmp_path):
    for i, name in enumerate(("lifter", "denoiser")):
        half = convert_fp16(onnx_paths[i], tmp_path / f"{name}.fp16.onnx")
        m = onnx.load(half)
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
        err = _err_mm(onnx_paths[i], half, feeds["held"][i])
        assert err.mean() < 0.5 and err.max() < 10.0, (name, err.mean(), err.max())
        assert check_tensorrt_compat(half) == []


def test_int8_qdq_format_is_tensorrt_style(prepared):
    """Symmetric int8 (zero point 0), per-channel weights within the 7-bit range, Q/DQ on the
    inputs of every Gemm/MatMul and no quantised outputs."""
    for name, p in prepared.items():
        m = onnx.load(p["int8"])
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
        dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
        assert q and dq
        for n in q + dq:
            assert not inits[n.input[2]].any(), n.name
        weights = [inits[n.input[0]] for n in dq if inits.get(n.input[0]) is not None
                   and inits[n.input[0]].dtype == np.int8]
        assert weights and all(np.abs(w).max() <= 64 for w in weights)
        assert any(inits[n.input[1]].size > 1 for n in dq)  # per-channel scales
        produced_by = {o: n.op_type for n in m.graph.node for o in n.output}
        assert not any(produced_by.get(n.input[0]) in ("Gemm", "MatMul") for n in q)
        assert check_tensorrt_compat(m) == [], name


@pytest.mark.slow
def test_int8_error_bounded_and_excluding_sensitive_nodes_helps(prepared, feeds):
    """On held-out real frames: all-INT8 stays within a few mm of FP32; keeping the nodes ranked
    most sensitive in float lowers the error; keeping every node in float is FP32 exactly."""
    for i, (name, p) in enumerate(prepared.items()):
        held = feeds["held"][i]
        full = _err_mm(p["path"], p["int8"], held).mean()
        assert 0.01 < full < 20.0, (name, full)
        sens = node_sensitivity(p["path"], feeds["calib"][i], p["calibration_cache"], p["work"], max_feeds=4)
        assert set(sens) == set(quantizable_nodes(p["path"]))
        top = sorted(sens, key=sens.get, reverse=True)
        part = quantize_int8(p["path"], p["work"] / f"{name}.top.onnx", None, p["calibration_cache"],
                             nodes_to_exclude=top[:3])
        assert _err_mm(p["path"], part, held).mean() < full, name
        none = quantize_int8(p["path"], p["work"] / f"{name}.none.onnx", None, p["calibration_cache"],
                             nodes_to_exclude=top)
        assert _err_mm(p["path"], none, held).max() < 1e-3, name


@pytest.mark.slow
def test_accuracy_gate_keeps_nodes_until_tolerance(prepared, tmp_path):
    """The gate on a deterministic stand-in score (MPJPE rises with every quantised node of a
    chosen set): it must find the smallest float set that passes, and report it."""
    bad = {"lifter": set(quantizable_nodes(prepared["lifter"]["path"])[:3]),
           "denoiser": set(quantizable_nodes(prepared["denoiser"]["path"])[-2:])}
    models = {name: {"path": p["path"], "calibration_cache": p["calibration_cache"],
                     "sensitivity": {n: (10.0 if n in bad[name] else 0.1) for n in quantizable_nodes(p["path"])}}
              for name, p in prepared.items()}

    def score(paths):
        extra = 0.0
        for name, path in paths.items():
            extra += 0.6 * len(_quantised(path) & bad[name]) + 0.01 * len(_quantised(path) - bad[name])
        return {"lifter": 100.0 + extra, "refined": 98.0 + extra, "accel:refined": 2.0}

    report = accuracy_gate(models, score, tmp_path, tol_mm=1.0, log=lambda s: None)
    assert report["passed"] and report["delta_mm"] <= 1.0 and report["accel_excess"] == 0.0
    kept = {n for nodes in report["kept_float"].values() for n in nodes}
    assert kept == bad["lifter"] | bad["denoiser"]
    assert [t["float_nodes"] for t in report["trials"]][:4] == [0, 1, 2, 4]


def _quantised(path) -> set[str]:
    m = onnx.load(str(path))
    qd = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in m.graph.node if n.op_type in ("Gemm", "MatMul") and set(n.input) & qd}


@pytest.mark.slow
def test_accuracy_gate_watches_the_acceleration_error_too(prepared, tmp_path):
    """A node whose quantisation leaves MPJPE as it is but makes the output jitter (acceleration
    error ×3, as INT8 once did) must stay in float: the gate holds acceleration within 10 %."""
    jitter = quantizable_nodes(prepared["lifter"]["path"])[1]
    models = {name: {"path": p["path"], "calibration_cache": p["calibration_cache"],
                     "sensitivity": {n: (5.0 if n == jitter else 0.1) for n in quantizable_nodes(p["path"])}}
              for name, p in prepared.items()}

    def score(paths):
        shaky = jitter in _quantised(paths["lifter"])
        return {"lifter": 100.0, "refined": 98.0, "accel:lifter": 3.6 * (3 if shaky else 1), "accel:refined": 2.5}

    report = accuracy_gate(models, score, tmp_path, tol_mm=1.0, log=lambda s: None)
    assert report["passed"] and report["kept_float"] == {"lifter": [jitter], "denoiser": []}
    assert report["trials"][0]["delta_mm"] == 0.0 and report["trials"][0]["accel_excess"] > 1.9
    assert report["accel_excess"] == 0.0


@pytest.mark.slow
def test_gate_scores_acceleration_per_sequence(fp32_backend, onnx_paths, prepared, motion, cameras):
    """The gate's acceleration keys are per sequence: the same motion played 4 × slower has a
    far smaller FP32 acceleration error, so the all-INT8 models' jitter floor is a larger share
    of it there, which the frame-weighted overall figure would hide behind the fast sequence."""
    from scipy.interpolate import interp1d

    from posert.calibration.gate import gate_deltas, streaming_mpjpe

    fast = motion[:400]
    t = np.arange(0, len(fast) - 1, 0.25)
    slow = interp1d(np.arange(len(fast)), fast, axis=0)(t).astype(np.float32)
    seqs, cams = {"fast": fast, "slow": slow}, cameras[:1]
    args = (fp32_backend.window, fp32_backend.schedule, fp32_backend.cnd, seqs, cams)
    ref = streaming_mpjpe(onnx_paths[0], onnx_paths[1], *args, protocols=("none",))
    got = streaming_mpjpe(prepared["lifter"]["int8"], prepared["denoiser"]["int8"], *args, protocols=("none",))
    assert {k for k in ref if k.startswith("accel:")} == {f"accel:{m}@{n}" for m in ("lifter", "refined")
                                                        for n in seqs}
    assert ref["accel:refined@slow"] < 0.4 * ref["accel:refined@fast"]
    excess = {n: got[f"accel:refined@{n}"] / ref[f"accel:refined@{n}"] - 1.0 for n in seqs}
    assert excess["slow"] > 2 * excess["fast"] > 0.0
    assert gate_deltas(got, ref)[1] >= excess["slow"]


def _unsupported_model(onnx_paths, tmp_path):
    """The lifter with a dynamically quantised head (MatMulInteger: not in TensorRT)."""
    m = onnx.load(onnx_paths[0])
    out = m.graph.output[0].name
    m.graph.node.append(helper.make_node("DynamicQuantizeLinear", [out], ["dq_y", "dq_s", "dq_z"], name="dyn_q"))
    m.graph.node.append(helper.make_node("MatMulInteger", ["dq_y", "w_int"], ["mmi"], name="head_int"))
    m.graph.initializer.append(numpy_helper.from_array(np.ones((3, 3), np.uint8), "w_int"))
    m.graph.output.append(helper.make_tensor_value_info("mmi", onnx.TensorProto.INT32, None))
    path = tmp_path / "bad.onnx"
    onnx.save(m, path)
    return path


def test_trt_check_passes_shipped_models_and_names_unsupported_ops(onnx_paths, tmp_path):
    for p in onnx_paths:
        assert check_tensorrt_compat(p) == []
    bad = _unsupported_model(onnx_paths, tmp_path)
    problems = check_tensorrt_compat(bad)
    ops = {p.where for p in problems if p.kind == "op"}
    assert "node head_int (MatMulInteger)" in ops and "node dyn_q (DynamicQuantizeLinear)" in ops
    assert any(p.kind == "shape" and "mmi" in p.where for p in problems)  # no static shape
    with pytest.raises(TensorRTCompatibilityError, match="MatMulInteger"):
        assert_tensorrt_compatible(bad)


def test_trt_check_rejects_contrib_ops_asymmetric_qdq_and_dynamic_axes(onnx_paths, tmp_path):
    import onnxruntime as ort

    so = ort.SessionOptions()  # ORT's own optimised graph: com.microsoft fused ops
    so.optimized_model_filepath = str(tmp_path / "ort_opt.onnx")
    ort.InferenceSession(str(onnx_paths[0]), so, providers=["CPUExecutionProvider"])
    assert any(p.kind == "domain" for p in check_tensorrt_compat(tmp_path / "ort_opt.onnx"))

    m = onnx.load(onnx_paths[0])
    x = m.graph.output[0].name
    m.graph.initializer.extend([numpy_helper.from_array(np.array(0.01, np.float32), "s"),
                                numpy_helper.from_array(np.array(3, np.uint8), "zp")])
    m.graph.node.append(helper.make_node("QuantizeLinear", [x, "s", "zp"], ["q"], name="asym_q"))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "joints"
    problems = check_tensorrt_compat(m)
    assert any(p.kind == "quantization" and "asym_q" in p.where for p in problems)
    assert any(p.kind == "shape" and "inp" in p.where for p in problems)
    m.opset_import[0].version = 21
    assert any(p.kind == "opset" for p in check_tensorrt_compat(m))


def test_engine_cache_rebuilds_foreign_and_rejects_corrupt(tmp_path):
    cache = EngineCache(tmp_path)
    key = EngineKey("ab" * 32, "int8", "10.13.0", "NVIDIA H100 80GB HBM3", "9.0", 64)
    assert cache.load("lifter", key) is None
    blob = bytes(range(256)) * 40
    path = cache.store("lifter", key, blob)
    assert cache.load("lifter", key) == blob
    for other in (EngineKey("ab" * 32, "int8", "10.14.0", key.gpu_name, "9.0", 64),  # another TensorRT
                  EngineKey("ab" * 32, "int8", "10.13.0", "Orin", "8.7", 64),  # another GPU
                  EngineKey("cd" * 32, "int8", "10.13.0", key.gpu_name, "9.0", 64)):  # re-exported ONNX
        assert other.digest() != key.digest() and cache.load("lifter", other) is None
        cache.store("lifter", other, b"other")
    assert path in cache.stale("lifter", EngineKey("ef" * 32, "int8", "10.13.0", key.gpu_name, "9.0", 64))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EngineCacheError, match="corrupt"):
        cache.load("lifter", key)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(EngineCacheError, match="metadata"):
        cache.load("lifter", key)


def test_tensorrt_backend_is_lazy_and_explains_what_is_missing():
    """Importing the backend module needs neither TensorRT nor cuda-python; building it says
    which one is missing (here, where neither exists, the test checks the message)."""
    import importlib.util

    from posert.runtime.backends import tensorrt as trt_backend

    assert hasattr(trt_backend, "TrtBackend")
    if importlib.util.find_spec("tensorrt") is None:
        from posert.export.tensorrt import import_tensorrt

        with pytest.raises(ImportError, match="TensorRT is not installed"):
            import_tensorrt()


def test_build_command_writes_checked_fp16_models(capsys):
    from posert.cli import main
    from posert.export.precision import precision_onnx

    assert main(["build", "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    paths = precision_onnx("fp16")
    assert all(p.exists() and str(p) in out for p in paths)
    assert out.count("TensorRT check: ok") == 2
    with pytest.raises(ValueError, match="precision"):
        precision_onnx("int4")
