"""The README's table of current figures, from the JSON that ``benchmarks/run.sh`` writes.

    python benchmarks/table.py benchmarks/out
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from report import cpu_name

PROTOCOLS = (("none", "ground-truth 2D"), ("detector", "detector-like noise"), ("occlusion", "missing joints/limbs"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=Path("benchmarks/out"))
    args = ap.parse_args()
    print(f"{datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores; the default pipeline (native, fp32)\n")
    print("| validation motion, 4 H36M cameras | lifter MPJPE | refined MPJPE (ratio) | P-MPJPE | accel ratio |")
    print("|---|---|---|---|---|")
    for noise, label in PROTOCOLS:
        path = args.out / f"eval_{noise}.json"
        if not path.exists():
            continue
        o = json.loads(path.read_text())["overall"]
        lf, rf = o["lifter"], o["refined"]
        print(f"| {label} | {lf['mpjpe']:.1f} mm | {rf['mpjpe']:.1f} mm ({rf['mpjpe'] / lf['mpjpe']:.3f}) | "
              f"{rf['p_mpjpe']:.1f} mm | {rf['accel'] / lf['accel']:.2f} |")
    bench = args.out / "bench.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        w = {r["window"]: r["pipeline_p50_ms"] for r in b.get("windows", [])}
        ratio = f"{w[max(w)] / w[min(w)]:.2f}" if len(w) > 1 else "–"
        print("\n| tick, 1 stream p50 / p99 | eager reference p50 (speedup) | 16 streams | p50 at N = 243 / N = 27 |")
        print("|---|---|---|---|")
        print(f"| {b['pipeline_p50_ms']:.2f} / {b['pipeline_p99_ms']:.2f} ms | {b['reference_p50_ms']:.1f} ms "
              f"({b['speedup']:.0f}×) | {b['throughput_poses_per_s']:,.0f} poses/s | {ratio} |")


if __name__ == "__main__":
    main()
