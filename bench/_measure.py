"""Measurement helpers shared by the benchmarks (standard library only: parents stay small)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def own_peak_rss_mb() -> float:
    """This process image's own high-water mark (VmHWM), to cross-check ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(script: str, threads: int, *args: str) -> dict:
    """``script`` in a child process with polars limited to ``threads``; its last stdout line."""
    env = os.environ | {"POLARS_MAX_THREADS": str(threads)}
    command = [sys.executable, script, *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(command[1:])} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def significant(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")
