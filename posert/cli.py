"""The ``posert`` command line: data | train | export | build | eval | bench | demo | run | serve | config."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from posert.config import ATTENTION_MODES, BACKENDS, CORRECTION_MODES, PRECISIONS
from posert.evaluate import CAMERA_SETS, EVAL_SUBJECT, TRAIN_SUBJECTS


def _pipeline_config(args, **values):
    """The pipeline config of a command: ``--config FILE`` (or the defaults), with every flag the
    user gave on top (``values``: {"section.field": value or None})."""
    from posert.config import PipelineConfig

    cfg = PipelineConfig.from_file(args.config) if getattr(args, "config", None) else PipelineConfig()
    return cfg.override(values)


def cmd_data(args) -> int:
    from posert.data.build import build_dataset

    path = build_dataset(force=args.force)
    print(f"dataset: {path}\nmanifest: {path.parent / 'sources.json'}\n"
          f"validation motion: {path.parent / 'val_motion.npz'}")
    return 0


def cmd_train(args) -> int:
    from posert.data.build import training_sequences
    from posert.data.sources import cache_dir
    from posert.evaluate import h36m_cameras
    from posert.models.denoiser import DenoiserConfig
    from posert.models.io import default_checkpoint_dir, save_lifter, save_refiner
    from posert.models.lifter import LifterConfig
    from posert.train.loops import TrainConfig, train_lifter, train_refiner

    seqs, cams = training_sequences(args.holdout), h36m_cameras(TRAIN_SUBJECTS)
    out_dir = Path(args.out) if args.out else default_checkpoint_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(minutes=args.minutes, steps=args.steps, batch=args.batch, seed=args.seed, threads=args.threads,
                      p_occlusion=args.occlusion, p_pose_aug=args.pose_aug if args.model == "lifter" else 0.0,
                      p_class_camera=args.class_cameras)
    lifter_cfg = LifterConfig(window=args.window, causal=not args.offline)
    meta = {"sequences": sorted(seqs), "holdout": args.holdout, "class_cameras": args.class_cameras}
    if args.model == "lifter":
        model, stats = train_lifter(seqs, cams, cfg, lifter_cfg)
        save_lifter(model, out_dir / "lifter.pt", {"train": stats, **meta})
    else:
        den_cfg = DenoiserConfig(window=args.window, K=1 if args.noise == "regressor" else 2)
        feature_lifter = None
        if args.features == "final":  # the lifter this refiner will run with: beside it, else the default
            from posert.models.io import load_lifter

            own = out_dir / "lifter.pt"
            feature_lifter = load_lifter(own if own.exists() else None)
        model, cnd, stats = train_refiner(seqs, cams, cfg, fold_minutes=args.fold_minutes, fold_steps=args.fold_steps,
                                          lifter_cfg=lifter_cfg,
                                          model_cfg=den_cfg, noise=args.noise, folds=args.folds,
                                          fold_cache=cache_dir() / "folds", fold_by=args.fold_by,
                                          loss=args.loss, features=args.features,
                                          feature_lifter=feature_lifter, pose_aug=args.pose_aug,
                                          cnd_kind=args.cnd, cnd_windows=args.cnd_windows,
                                          mean_ema=args.mean_ema)
        save_refiner(model, cnd, out_dir / "refiner.pt", {"train": stats, **meta})
    print(json.dumps(stats, indent=2))
    return 0


def cmd_export(args) -> int:
    from posert.export.onnx import export_split_step, export_step
    from posert.models.io import load_lifter, load_refiner

    out = Path(args.out)
    lifter, (den, _) = load_lifter(args.lifter), load_refiner(args.refiner)
    paths = [export_step(lifter, out / "lifter_step.onnx"), export_step(den, out / "denoiser_step.onnx")]
    if args.split:
        paths += [export_split_step(lifter, out / "lifter_step.split"),
                  export_split_step(den, out / "denoiser_step.split")]
    for p in paths:
        print(p)
    return 0


def cmd_build(args) -> int:
    from posert.export.precision import precision_onnx
    from posert.export.trt_compat import check_tensorrt_compat

    if args.precision == "int8":
        paths = _ensure_int8(args.lifter, args.refiner, force=args.force)
    else:
        paths = precision_onnx(args.precision, args.lifter, args.refiner)
    for p in paths:
        problems = check_tensorrt_compat(p)
        print(f"{p}  ({p.stat().st_size / 1024:.0f} KiB; TensorRT check: "
              f"{'ok' if not problems else f'{len(problems)} problems'})")
        for prob in problems:
            print(f"    {prob}")
    if args.backend == "tensorrt":
        from posert.runtime.backends.tensorrt import build_engines

        for name, path in build_engines(paths, args.precision, max_batch=args.max_batch).items():
            print(f"{name} engine: {path}")
    return 0


def _ensure_int8(lifter: str | None = None, refiner: str | None = None, force: bool = False):
    """The gated INT8 step models of these checkpoints, built (calibration + gate) if missing."""
    import json as _json

    from posert.calibration.build import build_int8
    from posert.data.build import VAL_MOTION_NAME, build_dataset, training_sequences
    from posert.evaluate import h36m_cameras, load_motion
    from posert.export.precision import precision_onnx
    from posert.runtime.backends.onnxruntime import OrtBackend

    if not force:
        try:
            return precision_onnx("int8", lifter, refiner)
        except FileNotFoundError:
            pass
    print("building INT8 models: calibration on real training motion, then the accuracy gate ...")
    fp32 = precision_onnx("fp32", lifter, refiner)
    val = load_motion(build_dataset().parent / VAL_MOTION_NAME)
    report = build_int8(fp32, OrtBackend.from_checkpoints(lifter, refiner), training_sequences(),
                        h36m_cameras(TRAIN_SUBJECTS), val, h36m_cameras([EVAL_SUBJECT]))
    keys = ("fp32", "int8", "delta_mm", "accel_excess", "kept_float", "quantized_nodes")
    print(_json.dumps({k: report[k] for k in keys}, indent=2))
    return precision_onnx("int8", lifter, refiner)


def cmd_eval(args) -> int:
    from posert.data.dataset import NoiseModel, OcclusionModel
    from posert.evaluate import eval_camera_sets, evaluate, load_motion
    from posert.runtime import Pipeline

    seqs = load_motion(args.motion)
    cams = eval_camera_sets(args.cameras)
    cfg = _pipeline_config(args, **{
        "max_streams": len(seqs) * max(len(c) for c in cams.values()), "backend.name": args.backend,
        "backend.precision": args.precision,
        "backend.lifter": args.lifter, "backend.refiner": args.refiner, "refiner.steps": args.steps,
        "refiner.hypotheses": args.hypotheses, "correction.mode": args.correction})
    if cfg.backend.precision == "int8":
        _ensure_int8(cfg.backend.lifter, cfg.backend.refiner)
    noise = {"none": None, "detector": NoiseModel(), "occlusion": OcclusionModel()}[args.noise]
    with Pipeline(cfg) as pipe:
        report = evaluate(pipe, seqs, cams, noise, seed=args.seed, camera_aware=args.camera_aware)
    report["config"] = {"motion": str(args.motion), "noise": args.noise, "cameras": args.cameras, "seed": args.seed,
                        "camera_aware": args.camera_aware, **_summary(pipe.config), "pipeline": pipe.config.to_dict()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    _print_accuracy(report)
    return 0


def _summary(cfg) -> dict:
    """The flat keys an eval report's ``config`` has always carried (its ``pipeline`` holds all)."""
    b, r, c = cfg.backend, cfg.refiner, cfg.correction
    return {"backend": b.name, "precision": b.precision, "ddim_steps": r.steps, "hypotheses": r.hypotheses,
            "cnd_mean": r.cnd_mean, "mean_ema": r.mean_ema, "reprojection": c.mode, "reprojection_ema": c.lateral_ema,
            "bone_depth": c.bone_depth, "bone_view_power": c.bone_view_power, "bone_symmetry": c.bone_symmetry,
            "bone_view_cap": c.bone_view_cap, "distance_index": c.distance_index}


def _print_accuracy(report: dict) -> None:
    print(f"{'sequence':<28}{'':>9}{'MPJPE':>9}{'P-MPJPE':>9}{'accel':>8}   (mm, mm/frame²)")
    rows = [*report["sequences"].items(), ("overall", report["overall"])]
    for name, r in rows:
        for kind in ("lifter", "refined"):
            m = r[kind]
            label = name if kind == "lifter" else ""
            print(f"{label:<28}{kind:>9}{m['mpjpe']:9.1f}{m['p_mpjpe']:9.1f}{m['accel']:8.2f}")
    for cls, r in report.get("classes", {}).items():
        L, R, m = r["lifter"], r["refined"], r.get("missing")
        whole = (f"; {100 * (1 - m['frames_with_missing_joint']):.0f} % of frames show every joint: "
                 f"{m['refined_mpjpe_visible_frames']:.1f} mm; on the others, joints shown "
                 f"{m['refined_mm_joints_shown']:.0f} mm, missing {m['refined_mm_joints_missing']:.0f}") if m else ""
        print(f"{'cameras: ' + cls:<28}{'refined':>9}{R['mpjpe']:9.1f}{R['p_mpjpe']:9.1f}{R['accel']:8.2f}   "
              f"rotation {R['rotation_deg']:.1f}° (lifter {L['mpjpe']:.1f} mm, {L['rotation_deg']:.1f}°){whole}")


def cmd_bench(args) -> int:
    import tempfile

    import torch

    from posert.bench import real_stream, run_bench, window_sweep
    from posert.evaluate import bench_sequence, eval_cameras
    from posert.models.io import load_lifter, load_refiner
    from posert.runtime import Pipeline

    torch.set_num_threads(args.threads)
    name, seq = bench_sequence(args.motion)
    cam = eval_cameras(args.cameras)[0]
    cfg = _pipeline_config(args, **{
        "max_streams": args.streams, "backend.name": args.backend, "backend.precision": args.precision,
        "backend.threads": args.ort_threads, "backend.workers": args.workers, "backend.attention": args.attention})
    if cfg.backend.precision == "int8":
        _ensure_int8(cfg.backend.lifter, cfg.backend.refiner)
    lifter, den = load_lifter(cfg.backend.lifter), load_refiner(cfg.backend.refiner)[0]
    if cfg.backend.name == "cuda":
        from posert.runtime.backends.cuda import CudaBackend

        if cfg.backend.precision != "fp32" or cfg.backend.attention != "auto":
            raise SystemExit("posert bench --backend cuda: fp32 and --attention auto only")
        be = CudaBackend.from_checkpoints(cfg.backend.lifter, cfg.backend.refiner, compile=args.compile)
        pipe = Pipeline(cfg, backend=be)
        lifter, den = be.lifter, be.denoiser  # the eager reference runs on the same GPU
    else:
        pipe = Pipeline(cfg)
    backend = pipe.backend.name
    native = backend == "native"
    res = run_bench(pipe, lifter, den, seq, cam, frames=args.frames, streams=args.streams)
    res.update(sequence=name, backend=backend, precision=cfg.backend.precision, workers=pipe.workers,
               config=pipe.config.to_dict())
    if native:
        res.update(kv_cache_dtype=str(pipe.cache_dtype))
    if backend == "cuda":
        res.update(device=torch.cuda.get_device_name(), cuda_graphs=pipe.backend.graphs, compile=args.compile,
                   torch_version=torch.__version__)
    elif backend == "onnxruntime":
        res.update(ort_threads=args.ort_threads, attention="kernel" if pipe.backend.split else "graph")
    if args.windows:
        with tempfile.TemporaryDirectory() as tmp:
            res["windows"] = window_sweep(args.windows, real_stream(seq, cam)[0], cam, args.frames, args.ort_threads,
                                          Path(tmp), split=getattr(pipe.backend, "split", False),
                                          backend=backend, compile=args.compile)
    pipe.close()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    if backend == "cuda":
        label = f"posert pipeline (CUDA graph{' + compile' if args.compile else ''}), 1 stream"
    elif native:
        kv = "fp16" if res["kv_cache_dtype"] == "float16" else "fp32"
        label = f"posert pipeline (native CPU fp32, {kv} KV), 1 stream"
    elif backend == "onnxruntime":
        label = f"posert pipeline (ORT CPU {cfg.backend.precision}, {res['attention']}), 1 stream"
    else:
        label = f"posert pipeline ({backend} {cfg.backend.precision}), 1 stream"
    wd = max(40, len(label) + 1)
    print(f"{'':<{wd}}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{label:<{wd}}{res['pipeline_p50_ms']:9.2f}{res['pipeline_p99_ms']:9.2f}")
    print(f"{'PyTorch eager reference':<{wd}}{res['reference_p50_ms']:9.2f}{res['reference_p99_ms']:9.2f}")
    print(f"speedup (reference p50 / pipeline p50): {res['speedup']:.2f}x")
    print(f"throughput, {args.streams} streams: {res['throughput_poses_per_s']:.0f} poses/s "
          f"(tick p50 {res['multi_stream_tick_p50_ms']:.2f} ms, {pipe.workers} shard(s) per tick)")
    if res.get("windows"):
        print(f"\n{'window N':>9}{'span M':>8}{'pipeline p50':>14}{'p99':>8}{'reference p50':>15}   (ms, 1 stream)")
        for r in res["windows"]:
            print(f"{r['window']:>9}{r['max_lag']:>8}{r['pipeline_p50_ms']:>14.2f}{r['pipeline_p99_ms']:>8.2f}"
                  f"{r['reference_p50_ms']:>15.2f}")
        w = {r["window"]: r["pipeline_p50_ms"] for r in res["windows"]}
        if min(w) in w and max(w) in w:
            print(f"p50 at N = {max(w)} / p50 at N = {min(w)}: {w[max(w)] / w[min(w)]:.2f}")
    return 0


def cmd_demo(args) -> int:
    import numpy as np

    from posert.bench import pipeline_tick_ms, real_stream
    from posert.data.build import VAL_MOTION_NAME, build_dataset
    from posert.demo import skeleton_figure
    from posert.evaluate import eval_cameras, load_motion, score, stream_sequences
    from posert.runtime import Pipeline

    print("posert demo: fetching real motion (cached after the first run) ...")
    seqs = load_motion(build_dataset().parent / VAL_MOTION_NAME)
    cams = eval_cameras("h36m")
    pipe = Pipeline(_pipeline_config(args), max_streams=len(seqs) * len(cams))
    print(f"streaming {len(seqs)} validation sequences × {len(cams)} real H36M cameras, frame by frame ...")
    results, tick_ms = stream_sequences(pipe, seqs, cams)
    _print_accuracy(score(results))
    with Pipeline(_pipeline_config(args), max_streams=len(seqs) * len(cams), correction="off") as plain:
        alone = score(stream_sequences(plain, seqs, cams, progress=False)[0])["overall"]["refined"]
    print(f"overall, the refiner alone (no correction stage: Pipeline(correction='off')):\n"
          f"{'':<28}{'refined':>9}{alone['mpjpe']:9.1f}{alone['p_mpjpe']:9.1f}{alone['accel']:8.2f}")
    name = max(seqs, key=lambda k: len(seqs[k]))
    one = pipeline_tick_ms(pipe, real_stream(seqs[name], cams[0])[0], cams[0], 300)
    print(f"latency per tick: 1 stream p50 {np.percentile(one, 50):.2f} ms, p99 {np.percentile(one, 99):.2f} ms; "
          f"{len(seqs) * len(cams)} streams batched p50 {np.percentile(tick_ms, 50):.2f} ms")
    r = results[name]
    T = r["gt"].shape[1]
    frames = [int(f) for f in np.linspace(T * 0.1, T * 0.9, 5)]
    png = skeleton_figure(r["gt"][0], r["lifted"][0], r["refined"][0], frames, Path(args.out),
                          f"{name}, camera {cams[0].name}: ground truth / lifter / refined")
    pipe.close()
    print(f"wrote {png}")
    return 0


def cmd_config(args) -> int:
    print(_pipeline_config(args).to_toml(), end="")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    from posert.video.detect import RecordedDetector
    from posert.video.run import demo_video, run_video

    source = args.camera if args.camera is not None else (
        str(demo_video()) if args.video == "demo" else args.video)
    detector = RecordedDetector(args.detections) if args.detections else None
    camera = None
    if args.calib:
        from posert.camera import load_calibration

        camera = load_calibration(args.calib)
    cfg = _pipeline_config(args, **{"backend.name": args.backend, "backend.lifter": args.lifter,
                                    "backend.refiner": args.refiner})
    log = recorder = None
    if args.viewer or args.rrd:
        from posert.viz import RerunLog

        log = RerunLog(rrd=args.rrd, spawn=args.viewer == "spawn", serve=args.viewer == "web")
    if args.mcap:
        from posert.serve.mcap import McapRecorder

        recorder = McapRecorder(args.mcap)
    try:
        run = run_video(source, out_mp4=args.out, out_json=args.json, out_png=args.png, detector=detector,
                        config=cfg, max_frames=args.max_frames, record=args.record, camera=camera, log=log,
                        on_tick=None if recorder is None else recorder.tick, realtime=args.realtime)
    finally:
        for sink in (log, recorder):
            if sink is not None:
                sink.close()
    for kind in ("rrd", "mcap"):
        if getattr(args, kind):
            run.outputs[kind] = getattr(args, kind)
    print(f"{run.frames} frames at {run.fps:g} fps, {run.size[0]}×{run.size[1]} px; person found in "
          f"{int(run.detected.sum())}; {run.model_frames} model frames at 50 fps; front-end {run.detector}")
    print(f"{'stage':<10}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}   (per video frame)")
    for stage, v in run.latency_table().items():
        print(f"{stage:<10}{v['p50']:>9.2f}{v['p99']:>9.2f}{v['mean']:>9.2f}")
    if run.live:
        p50, p99 = np.nanpercentile(run.capture_ms, [50, 99])
        print(f"live: {run.frames} frames processed, {run.dropped_frames} dropped (newer ones came first); capture "
              f"→ 3D p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    for kind, path in run.outputs.items():
        print(f"{kind}: {path}")
    return 0


def cmd_serve(args) -> int:
    from posert.serve import PoseServer, zenoh_config

    cfg = _pipeline_config(args, **{"backend.name": args.backend, "max_streams": args.max_streams})
    recorder = None
    if args.mcap:
        from posert.serve.mcap import McapRecorder

        recorder = McapRecorder(args.mcap)
    server = PoseServer(cfg, zconfig=zenoh_config(args.listen, args.connect), prefix=args.prefix,
                        stream_timeout_s=args.timeout, on_tick=None if recorder is None else recorder.tick)
    print(f"posert serve: {args.prefix}/in/<stream> → {args.prefix}/out/<stream> on {args.listen + args.connect}, "
          f"up to {cfg.max_streams} streams; Ctrl-C stops")
    t0 = time.monotonic()
    try:
        with server:
            while args.seconds is None or time.monotonic() - t0 < args.seconds:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if recorder is not None:
            recorder.close()
    print("posert serve:", json.dumps(server.stats()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posert", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the traceback, not one line")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser

    d = sub.add_parser("data", help="fetch real motion and build the dataset")
    d.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    d.set_defaults(fn=cmd_data)

    t = sub.add_parser("train", help="train the lifter or the refiner (CPU, time-budgeted)")
    t.add_argument("model", choices=["lifter", "refiner"])
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the main model")
    t.add_argument("--steps", type=int, default=None,
                   help="a fixed number of optimiser steps for the main model instead of --minutes (the cosine "
                        "schedule runs over the steps; fold lifters keep --fold-minutes)")
    t.add_argument("--fold-minutes", type=float, default=14.0,
                   help="refiner: budget of each fold lifter (give them the final lifter's)")
    t.add_argument("--noise", choices=["cnd", "cnd0", "raw", "regressor"], default="cnd0",
                   help="refiner: CND noise without its conditional mean (default; the committed refiner), the "
                        "full CND of D3PRefiner, raw lifter error, or a one-step regressor (ablations)")
    t.add_argument("--fold-steps", type=int, default=None,
                   help="refiner: optimiser steps of each fold lifter instead of --fold-minutes (give them the "
                        "final lifter's --steps)")
    t.add_argument("--folds", type=int, default=2, help="refiner: k of the k-fold cross-fitting")
    t.add_argument("--features", choices=["fold", "final"], default=None,
                   help="refiner: also condition on a lifter's per-joint features, from the fold lifters or from "
                        "the final lifter (not streamable yet: "
                        "benchmarks/feature_conditioning.py evaluates it)")
    t.add_argument("--loss", choices=["mse", "mpjpe"], default="mse",
                   help="refiner: squared error of ê (D3PRefiner) or its per-joint Euclidean norm (MPJPE)")
    t.add_argument("--fold-by", choices=["time", "sequence"], default="time",
                   help="refiner: cross-fitting folds of a chunk of every sequence (time) or of whole sequences")
    t.add_argument("--window", type=int, default=27, help="receptive field N in frames")
    t.add_argument("--offline", action="store_true", help="non-causal lifter reporting the centre frame")
    t.add_argument("--holdout", default=None, help="leave this source (subject) out of training")
    t.add_argument("--occlusion", type=float, default=0.0,
                   help="share of training windows with runs of missing joints/limbs (joint-dropout training)")
    t.add_argument("--cnd", choices=["joint", "pose"], default="pose",
                   help="refiner: CND over the whole pose (default; errors correlated across joints, as a lifter's "
                        "are) or per joint (D3PRefiner)")
    t.add_argument("--cnd-windows", type=int, default=4096,
                   help="refiner: cross-fitted windows the CND is fitted on (a whole-pose CND needs ~4096)")
    t.add_argument("--mean-ema", type=float, default=0.3,
                   help="refiner, --noise cnd0: weight α of the causal EMA of the CND's conditional mean that "
                        "inference subtracts from x_T (1: the mean of every frame as it is; 0.3 chosen on the "
                        "validation motion)")
    t.add_argument("--pose-aug", type=float, default=0.0,
                   help="share of training windows with limb chains turned to unseen poses (lifter: its windows; "
                        "refiner: the denoiser's and the CND's windows, the fold lifters keep the plain recipe)")
    t.add_argument("--class-cameras", type=float, default=0.0,
                   help="share of training windows seen by a camera class real users mount (posert.rigs: pitched, "
                        "rolled, portrait, phone, level; half of them from the level camera at their place); taken "
                        "from the random cameras' share")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", default=None, help="checkpoint folder (default: checkpoints/)")
    t.set_defaults(fn=cmd_train)

    x = sub.add_parser("export", help="export the streaming lifter step and one denoiser step to ONNX")
    x.add_argument("--out", default="out/onnx")
    x.add_argument("--lifter", default=None)
    x.add_argument("--refiner", default=None)
    x.add_argument("--split", action="store_true",
                   help="also write the split step models (2L + 1 graphs per model; the ONNX Runtime CPU default, "
                        "with the C++ attention cores between them)")
    x.set_defaults(fn=cmd_export)

    u = sub.add_parser("build", help="FP32/FP16/INT8 ONNX models (and TensorRT engines) of the checkpoints")
    u.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    u.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default="onnxruntime",
                   help="onnxruntime: write the ONNX models; tensorrt: also build and cache engines")
    u.add_argument("--max-batch", type=int, default=64, help="tensorrt: largest batch of the optimisation profile")
    u.add_argument("--force", action="store_true", help="int8: recalibrate and re-run the gate")
    u.add_argument("--lifter", default=None)
    u.add_argument("--refiner", default=None)
    u.set_defaults(fn=cmd_build)

    e = sub.add_parser("eval", help="stream real motion through the pipeline and score it")
    e.add_argument("--motion", required=True, help=".npz of (T, 17, 3) mm sequences, z-up world, 50 fps")
    e.add_argument("--json", required=True, help="the report: scores, tick latency and the full config")
    e.add_argument("--noise", choices=["none", "detector", "occlusion"], default="none",
                   help="2D protocol: ground truth, detector-like noise, or missing joints/limbs")
    e.add_argument("--steps", type=int, default=None, help="DDIM steps K (default: the checkpoint's)")
    e.add_argument("--hypotheses", type=int, default=None, help="H hypotheses averaged (DiffHPE; default 1)")
    e.add_argument("--backend", choices=BACKENDS, default=None, help="default auto: native at fp32, onnxruntime at "
                   "fp16/int8")
    e.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="model precision (int8: built with calibration and the accuracy gate on first use)")
    e.add_argument("--cameras", choices=CAMERA_SETS, default="h36m",
                   help="h36m: the 4 real H36M cameras (S9); ring: a fixed synthetic 4-camera rig (offline); "
                        "level, pitched, rolled, portrait, phone: 8 cameras of that class (posert.rigs); all: "
                        "every class, reported per class")
    e.add_argument("--lifter", default=None)
    e.add_argument("--refiner", default=None)
    e.add_argument("--seed", type=int, default=0, help="seed of the 2D noise protocols")
    e.add_argument("--correction", choices=CORRECTION_MODES, default=None,
                   help="the correction stage after the refiner (the 2D and the camera): guess = every stream, with "
                        "guessed intrinsics unless --camera-aware gives the calibration (default); given = only with "
                        "--camera-aware; off = the refiner's output as it is")
    e.add_argument("--camera-aware", action="store_true",
                   help="give every stream its camera's calibration (K, distortion) for that stage")
    _config_arg(e)
    e.set_defaults(fn=cmd_eval)

    b = sub.add_parser("bench", help="per-tick latency vs the PyTorch eager reference")
    b.add_argument("--json", required=True)
    b.add_argument("--motion", default=None, help="default: the validation motion of `posert data`")
    b.add_argument("--cameras", choices=[c for c in CAMERA_SETS if c != "all"], default="h36m")
    b.add_argument("--frames", type=int, default=300)
    b.add_argument("--streams", type=int, default=16)
    b.add_argument("--threads", type=int, default=2, help="torch threads of the eager reference")
    b.add_argument("--ort-threads", type=int, default=None, help="ONNX Runtime threads (default: the runtime's)")
    b.add_argument("--workers", type=int, choices=[1, 2], default=None,
                   help="shards per multi-stream tick run concurrently (default: 2 on ≥ 2 cores)")
    b.add_argument("--precision", choices=PRECISIONS, default=None)
    b.add_argument("--backend", choices=["auto", "native", "onnxruntime", "cuda"], default=None,
                   help="auto (default): native at fp32 (posert's fused C++ step kernel on the CPU), onnxruntime "
                        "at fp16/int8 or with --attention kernel/graph; cuda: the whole tick as one CUDA graph on "
                        "the GPU, with the eager reference on the same GPU")
    b.add_argument("--compile", action="store_true", help="--backend cuda: torch.compile the steps before capture")
    b.add_argument("--attention", choices=ATTENTION_MODES, default=None,
                   help="attention cores: C++ kernels between split step graphs (auto at fp32) or inside one "
                        "ONNX graph per step")
    b.add_argument("--windows", type=int, nargs="*", default=[27, 81, 243],
                   help="receptive fields of the latency sweep (untrained models of each N); none to skip")
    _config_arg(b)
    b.set_defaults(fn=cmd_bench)

    r = sub.add_parser("run", help="a video or a webcam → 2D front-end → refined 3D: MP4, PNG and JSON")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="video file, or 'demo' for the Sports2D demo clip (fetched once)")
    src.add_argument("--camera", type=int, help="webcam number (live; stop with Ctrl-C or --max-frames)")
    r.add_argument("--out", default=None, help="rendered MP4 (2D overlay beside the refined 3D skeleton)")
    r.add_argument("--png", default=None, help="contact sheet of six rendered frames")
    r.add_argument("--json", default=None, help="per-frame 2D, 3D (mm) and per-stage latency")
    r.add_argument("--detections", default=None,
                   help="replay BlazePose landmarks recorded with --record instead of running MediaPipe")
    r.add_argument("--record", default=None, help="save the front-end's landmarks (.npz) for --detections")
    r.add_argument("--calib", default=None, metavar="FILE",
                   help="the camera's calibration (JSON or OpenCV YAML: K, distortion, R or rvec, t, image size): "
                        "its intrinsics for the correction and, with R (z-up world), the upright view and world-frame "
                        "poses in the JSON")
    r.add_argument("--viewer", nargs="?", const="spawn", choices=["spawn", "web"], default=None,
                   help="live view in Rerun: spawn the viewer (default) or serve the web viewer (extra 'viz')")
    r.add_argument("--rrd", default=None, metavar="FILE", help="record the live view to a Rerun .rrd file")
    r.add_argument("--mcap", default=None, metavar="FILE",
                   help="record the world-frame 3D to an MCAP file in Foxglove's schemas (extra 'serve')")
    r.add_argument("--realtime", action="store_true",
                   help="read the video at its own frame rate, as a camera delivers it (a stand-in camera): only "
                        "the newest frame is processed, older ones are dropped and counted")
    r.add_argument("--max-frames", type=int, default=None)
    r.add_argument("--backend", choices=["auto", "native", "onnxruntime", "torch"], default=None)
    r.add_argument("--lifter", default=None)
    r.add_argument("--refiner", default=None)
    _config_arg(r)
    r.set_defaults(fn=cmd_run)

    sv = sub.add_parser("serve", help="the pipeline as a service over Eclipse Zenoh (posert/in/*, posert/out/*)")
    sv.add_argument("--listen", nargs="*", default=["tcp/0.0.0.0:7447"], metavar="ENDPOINT",
                    help="Zenoh endpoints to listen on (default tcp/0.0.0.0:7447)")
    sv.add_argument("--connect", nargs="*", default=[], metavar="ENDPOINT", help="Zenoh endpoints to connect to")
    sv.add_argument("--prefix", default="posert", help="the key expressions' first chunk")
    sv.add_argument("--timeout", type=float, default=2.0, help="remove a stream silent this long, s")
    sv.add_argument("--max-streams", type=int, default=None)
    sv.add_argument("--mcap", default=None, metavar="FILE", help="record every pose to an MCAP file (Foxglove)")
    sv.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    sv.add_argument("--backend", choices=["auto", "native", "onnxruntime", "torch"], default=None)
    _config_arg(sv)
    sv.set_defaults(fn=cmd_serve)

    m = sub.add_parser("demo", help="the main job: real motion → runtime → numbers and a PNG")
    m.add_argument("--out", default="out/demo.png")
    _config_arg(m)
    m.set_defaults(fn=cmd_demo)

    c = sub.add_parser("config", help="print the pipeline config (defaults, or --config FILE) as TOML")
    _config_arg(c)
    c.set_defaults(fn=cmd_config)
    return p


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a pipeline config (.toml, .yaml, .json; `posert config` prints the defaults); the "
                             "other flags override it")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]  # KeyError's str() quotes its message
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one ``posert`` command and return its exit status. Bad input (a file that is missing,
    corrupt or of the wrong kind, a bad value) prints one line, ``posert: error: …``, and returns 1
    (``--debug``: the traceback instead); a backend this machine cannot run (no GPU, no CUDA build of
    ``posert._C``) or a missing optional package prints its reason and returns 2; an interrupt
    returns 130."""
    from posert.errors import BackendUnavailable, MissingDependency

    args = build_parser().parse_args(argv)
    if args.command == "train" and args.minutes is None:
        args.minutes = 14.0 if args.model == "lifter" else 15.0
    try:
        return args.fn(args)
    except (BackendUnavailable, MissingDependency) as e:
        if args.debug:
            raise
        print(f"posert {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posert: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every other failure, as one line for the user
        if args.debug:
            raise
        print(f"posert: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
