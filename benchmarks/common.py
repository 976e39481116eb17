"""Helpers the benchmark modules share: statistics, machine facts, child processes that always stop, progress."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from plumbing.process import ManagedProcess

_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress line with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank-interpolated percentile (q in [0, 100]), None for no values."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total_gib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": mem_total_gib,
        "loadavg_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "apache_beam": _version("apache-beam"),
        "tensorflow": _version("tensorflow"),
        "google_cloud_pubsub": _version("google-cloud-pubsub"),
        "numpy": _version("numpy"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


class ChildError(RuntimeError):
    pass


class Child(ManagedProcess):
    """A child process in its own session, so that it and everything it starts stop together on exit or Ctrl-C.
    plumbing's ManagedProcess, raising ChildError, entered as `with Child(command, log_path) as child:`."""

    def __init__(self, command: Sequence[str], log_path: str | Path, env: dict | None = None):
        super().__init__(command, log_path, env=env, error=ChildError)

    def log_tail(self, lines: int = 25) -> str:
        return self.tail(lines)


def run_json_child(command: Sequence[str], log_path: Path, json_path: Path, timeout: float) -> dict:
    """Runs a child that writes a JSON result to `json_path`; raises with the log's tail when it fails."""
    with contextlib.suppress(FileNotFoundError):
        json_path.unlink()
    with Child(command, log_path) as child:
        code = child.wait(timeout)
        if code != 0 or not json_path.exists():
            raise ChildError(f"{' '.join(command[:3])} exited with code {code}; log {log_path}:\n{child.log_tail()}")
    return json.loads(json_path.read_text())


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
