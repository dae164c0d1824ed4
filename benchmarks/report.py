"""What every benchmark's JSON report starts with (the date and the machine) and how it is written."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def stamp() -> dict[str, str]:
    """``{"date": ISO date, "machine": "<CPU>, <n> cores"}``: where and when a figure was measured."""
    return {"date": datetime.date.today().isoformat(), "machine": f"{cpu_name()}, {os.cpu_count()} cores"}


def write_json(path: Path | None, report: dict) -> None:
    """Write ``report`` to ``path`` (its folder created); nothing when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
