"""Is a change's tick slower? ``posert bench`` of two checkouts, alternated round by round in one run.

Each round runs ``posert bench`` once in checkout A and once in checkout B (the order alternating
each round), so a slow phase of the machine falls on both alike; the table gives the median of
the rounds and B / A. Every checkout needs its own ``.venv`` (``make setup`` there).

    python benchmarks/ab_bench.py /path/to/old /path/to/new --rounds 5 --json out/ab.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from report import stamp, write_json

KEYS = ("pipeline_p50_ms", "pipeline_p99_ms", "throughput_poses_per_s", "multi_stream_tick_p50_ms", "reference_p50_ms")


def bench(repo: Path, out: Path, frames: int, motion: str | None) -> dict:
    cmd = [str(repo / ".venv" / "bin" / "posert"), "bench", "--json", str(out), "--frames", str(frames), "--windows"]
    if motion:
        cmd += ["--motion", motion]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="checkout A (e.g. the commit before a change)")
    ap.add_argument("b", type=Path, help="checkout B")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--motion", default=None, help="default: the validation motion of `posert data`")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in ("ab" if r % 2 == 0 else "ba"):
                repo = args.a if side == "a" else args.b
                runs[side].append(bench(repo.resolve(), Path(tmp) / f"{side}{r}.json", args.frames, args.motion))
                print(f"round {r + 1}/{args.rounds} {side.upper()}: p50 {runs[side][-1]['pipeline_p50_ms']:.3f} ms, "
                      f"{runs[side][-1]['throughput_poses_per_s']:.0f} poses/s", flush=True)
    med = {s: {k: float(np.median([x[k] for x in v])) for k in KEYS} for s, v in runs.items()}
    print(f"\n{'median of ' + str(args.rounds) + ' rounds':<28}{'A':>12}{'B':>12}{'B / A':>9}")
    for k in KEYS:
        print(f"{k:<28}{med['a'][k]:>12.3f}{med['b'][k]:>12.3f}{med['b'][k] / med['a'][k]:>9.3f}")
    write_json(args.json, {**stamp(), "a": str(args.a), "b": str(args.b), "rounds": args.rounds, "median": med,
                           "runs": runs})


if __name__ == "__main__":
    main()
