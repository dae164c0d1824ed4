"""Latency benchmark of the streaming pipeline against a paper-style PyTorch eager reference,
measured in the same run on the same real 2D stream."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from posert.camera import Camera
from posert.data.dataset import center_on_floor, make_input, render
from posert.models.denoiser import Denoiser
from posert.models.diffusion import Schedule, ddim_step
from posert.models.lifter import Lifter


def real_stream(seq_world: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (T, 17, 2) and confidences (T, 17) of a real sequence seen by ``cam``."""
    px, _ = render(center_on_floor(seq_world), cam)
    return px, np.ones(px.shape[:2], np.float32)


@torch.no_grad()
def reference_tick_ms(lifter: Lifter, denoiser: Denoiser, px: np.ndarray, cam: Camera, frames: int,
                      warmup: int = 10, cnd=None) -> np.ndarray:
    """Per-frame latency (ms) of the paper-style streaming loop: for every new frame, shift it into
    the window (the last N frames, edge-padded at the stream start), run the whole window through the lifter, then
    K denoiser passes over the window with the DDIM update in a Python loop (torch eager, batch 1),
    and report the newest frame. Runs on the models' device: on a GPU the window is copied there
    and the newest pose back (which waits for the GPU), as a paper-style loop would. ``cnd``: the
    refiner's CND; with ``subtract_mean`` set, the window starts from x_T − μ̄ as
    :meth:`Refiner.start <posert.models.denoiser.Refiner.start>` computes it over the window."""
    from posert.models.denoiser import Refiner

    sched = Schedule(denoiser.cfg.T, denoiser.cfg.K)
    N = lifter.window
    win = np.zeros((1, N, 17, 3), np.float32)
    window = torch.from_numpy(win)  # shares memory with win
    device = next(lifter.parameters()).device
    refiner = Refiner(denoiser, cnd)
    times = []
    for i in range(min(frames + warmup, len(px))):
        t0 = time.perf_counter()
        y = make_input(px[i], np.ones(17, np.float32), cam.width, cam.height)
        if i == 0:
            win[0] = y  # edge padding: the first frame stands in for the frames before it
        else:
            win[0, :-1] = win[0, 1:]
            win[0, -1] = y
        w = window.to(device)
        x = lifter(w)
        x = refiner.start(w, x)
        for t, tp in sched.pairs():
            e = denoiser(w, x, torch.full((1,), float(t), device=device))
            x = ddim_step(x, e, sched.ddim_coefficients(t, tp))
        _ = x[0, -1].cpu() * 1000.0
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return np.array(times)


def pipeline_tick_ms(pipeline, px: np.ndarray, cam: Camera, frames: int, streams: int = 1,
                     warmup: int = 10) -> np.ndarray:
    """Per-tick latency (ms) of push (all streams) + tick, with ``streams`` streams fed the same
    real 2D sequence at different phases."""
    ids = [f"bench{s}" for s in range(streams)]
    for s in ids:
        pipeline.add_stream(s, cam.width, cam.height)
    conf = np.ones((streams, 17), np.float32)
    times = []
    T = len(px)
    try:
        for i in range(frames + warmup):
            kp = np.stack([px[(i + 37 * s) % T] for s in range(streams)])
            t0 = time.perf_counter()
            pipeline.push_many(ids, kp, conf, [i / 50.0] * streams)
            res = pipeline.tick()
            dt = (time.perf_counter() - t0) * 1e3
            assert len(res) == streams
            if i >= warmup:
                times.append(dt)
    finally:
        for s in ids:
            pipeline.remove_stream(s)
    return np.array(times)


def interleaved_tick_ms(pipelines: Sequence, px: np.ndarray, cam: Camera, frames: int,
                        warmup: int = 10) -> list[np.ndarray]:
    """Per-tick latency (ms) of push + tick for several 1-stream pipelines measured in turn on the
    same frames: at frame i every pipeline ticks once, starting from pipeline i mod P. A slowdown
    of the machine (another process, a frequency change) then falls on all of them alike instead
    of on whichever was being measured, so their ratios stay comparable. Returns one array of
    ``frames`` latencies per pipeline."""
    P = len(pipelines)
    for p in pipelines:
        p.add_stream("bench0", cam.width, cam.height)
    conf = np.ones((1, 17), np.float32)
    times: list[list[float]] = [[] for _ in range(P)]
    T = len(px)
    try:
        for i in range(frames + warmup):
            kp = px[i % T][None]
            for j in range(P):
                k = (i + j) % P
                t0 = time.perf_counter()
                pipelines[k].push_many(["bench0"], kp, conf, [i / 50.0])
                res = pipelines[k].tick()
                dt = (time.perf_counter() - t0) * 1e3
                assert len(res) == 1
                if i >= warmup:
                    times[k].append(dt)
    finally:
        for p in pipelines:
            p.remove_stream("bench0")
    return [np.array(t) for t in times]


def window_sweep(windows: Sequence[int], px: np.ndarray, cam: Camera, frames: int, threads: int | None,
                 folder: Path, reference_frames: int = 40, split: bool = True, backend: str = "onnxruntime",
                 compile: bool = False) -> list[dict]:
    """Per-tick latency vs receptive field N: for every N, a lifter and denoiser of the default
    width and depth but window N (untrained weights: latency does not depend on their values),
    exported to ONNX and streamed through a 1-stream Pipeline, plus the eager reference at N.
    The pipelines of all N are built first and measured interleaved (``interleaved_tick_ms``), so
    the p50 ratios between windows do not depend on when the machine was busy.
    ``split`` (onnxruntime): run the split step graphs with the C++ attention cores, else the
    single step graphs. ``backend="native"``: the fused C++ step kernel instead of ONNX Runtime;
    ``"cuda"``: the CUDA-graph backend, and the reference on the GPU. Returns one dict per N:
    window, max_lag (the per-layer attention span M), p50/p99 of both."""
    from posert.export.onnx import export_split_step, export_step
    from posert.models.denoiser import DenoiserConfig
    from posert.models.diffusion import Schedule
    from posert.models.lifter import LifterConfig
    from posert.runtime import Pipeline
    from posert.runtime.backends.onnxruntime import OrtBackend

    models, pipes = [], []
    for N in windows:
        torch.manual_seed(0)
        lifter, den = Lifter(LifterConfig(window=N)).eval(), Denoiser(DenoiserConfig(window=N)).eval()
        if backend == "cuda":
            from posert.runtime.backends.cuda import CudaBackend

            be = CudaBackend(lifter, den, compile=compile)
            lifter, den = be.lifter, be.denoiser  # the reference runs on the same GPU
        elif backend == "native":
            from posert.runtime.backends.native import NativeBackend

            be = NativeBackend(lifter, den)
        else:
            if split:
                lp = export_split_step(lifter, folder / f"lifter_n{N}")
                dp = export_split_step(den, folder / f"denoiser_n{N}")
            else:
                lp = export_step(lifter, folder / f"lifter_n{N}.onnx")
                dp = export_step(den, folder / f"denoiser_n{N}.onnx")
            be = OrtBackend(lp, dp, N, Schedule(den.cfg.T, den.cfg.K), threads)
        models.append((lifter, den))
        pipes.append(Pipeline(backend=be, max_streams=1))
    ticks = interleaved_tick_ms(pipes, px, cam, frames)
    for p in pipes:
        p.close()
    rows = []
    for N, (lifter, den), one in zip(windows, models, ticks, strict=True):
        ref = reference_tick_ms(lifter, den, px, cam, reference_frames)
        rows.append({"window": N, "max_lag": lifter.max_lag, "pipeline_p50_ms": float(np.percentile(one, 50)),
                     "pipeline_p99_ms": float(np.percentile(one, 99)),
                     "reference_p50_ms": float(np.percentile(ref, 50))})
    return rows


def run_bench(pipeline, lifter: Lifter, denoiser: Denoiser, seq_world: np.ndarray, cam: Camera,
              frames: int = 300, streams: int = 16) -> dict:
    """The ``posert bench`` figures (keys fixed by the CLI contract)."""
    px, _ = real_stream(seq_world, cam)
    cnd = pipeline.backend.cnd if pipeline.config.refiner.cnd_mean else None
    ref = reference_tick_ms(lifter, denoiser, px, cam, frames, cnd=cnd)
    one = pipeline_tick_ms(pipeline, px, cam, frames, 1)
    many = pipeline_tick_ms(pipeline, px, cam, max(50, frames // 4), streams)
    p50, p99, r50 = (float(np.percentile(one, 50)), float(np.percentile(one, 99)), float(np.percentile(ref, 50)))
    return {
        "pipeline_p50_ms": p50, "pipeline_p99_ms": p99, "reference_p50_ms": r50,
        "reference_p99_ms": float(np.percentile(ref, 99)), "speedup": r50 / p50,
        "throughput_poses_per_s": float(streams * 1e3 / np.mean(many)),
        "streams_throughput": streams, "multi_stream_tick_p50_ms": float(np.percentile(many, 50)),
        "window": lifter.window, "ddim_steps": denoiser.cfg.K, "frames": int(len(one)),
        "torch_threads": torch.get_num_threads(),
    }
