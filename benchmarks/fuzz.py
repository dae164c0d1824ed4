"""Run the streaming API's state machine (tests/runtime/test_state_machine.py) longer than the
test suite does and count its calls by kind and outcome.

    python benchmarks/fuzz.py [--examples 300] [--steps 60] [--backends native onnxruntime]

Every call of the machine is checked as in the test: bad input raises its error and writes
nothing, healthy streams match the control pipeline bit for bit, every pose is finite and
possible. A failure prints hypothesis's shortest failing sequence and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unittest
from pathlib import Path

from report import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.runtime import test_state_machine as sm  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--backends", nargs="+", default=["native", "onnxruntime"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {}
    ok = True
    for backend in args.backends:
        sm.CALLS.clear()
        t0 = time.perf_counter()
        case = sm.machine(backend, args.examples, args.steps)
        result = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromTestCase(case))
        ok &= result.wasSuccessful()
        calls = dict(sorted(sm.CALLS.items()))
        report[backend] = {"examples": args.examples, "steps": args.steps, "calls": sum(calls.values()),
                           "refused_cleanly": sum(v for k, v in calls.items() if "bad" in k or "unknown" in k
                                                  or "refused" in k or "one bad" in k),
                           "failures": len(result.failures) + len(result.errors), "by_kind": calls,
                           "seconds": round(time.perf_counter() - t0, 1)}
        print(backend, json.dumps(report[backend]))
    write_json(args.json, report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
