"""py-spy on the SDK workers during a drain, and where their bundle thread's wall time goes, by category."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from benchmarks.common import log
from benchmarks.flink.cluster import sdk_workers


def py_spy_path() -> str:
    """Where py-spy is: $PY_SPY, read when a profile starts (not at import), else the benchmark's own install."""
    return os.environ.get("PY_SPY", "/tmp/pyspy/bin/py-spy")


def start_pyspy(flink, out: Path, secs: float) -> dict | None:
    """py-spy recording each SDK worker for `secs` into OUT-PID.txt; None (and a log line) where it cannot."""
    py_spy = py_spy_path()
    workers = sdk_workers(flink)
    if not workers or not os.access(py_spy, os.X_OK):
        log(f"py-spy: {'no SDK worker found' if not workers else f'not found at {py_spy}'}; no profile")
        return None
    procs = []
    for pid in workers:
        path = out.with_name(f"{out.stem}-{pid}.txt")
        command = [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(secs)),
            "--rate",
            "50",
            "--idle",
            "--threads",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(path),
        ]
        procs.append((pid, path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
    log(f"py-spy: recording SDK worker(s) {workers} for {secs:.0f}s")
    return {"procs": procs}


# Where a sample of the bundle thread is: the category of its innermost frame that matches one (first match wins).
CATEGORIES = (
    ("pull (emulator RPC, message conversion)", ("pubsub_pull.py", "pubsub_v1/services/subscriber/")),
    (
        "publish and acknowledge (whole requests)",
        ("pubsub_publish.py", "pubsub_v1/publisher/", "pubsub_v1/services/publisher/"),
    ),
    ("model (TensorFlow, SavedModel handler)", ("tensorflow/", "model_handlers/")),
    ("parse / validate", ("transforms/events.py",)),
    ("format prediction / dead letter", ("transforms/predictions.py", "transforms/dead_letter.py")),
    ("waiting for elements from the runner (data plane)", ("data_plane.py",)),
    ("RunInference / batching", ("ml/inference/", "transforms/util.py")),
    ("Beam harness (coders, windows, bookkeeping)", ("apache_beam/",)),
)
OUTSIDE_BUNDLE = "outside a bundle (waiting for the runner to start one)"


def finish_pyspy(spy: dict) -> dict:
    """Per SDK worker: the bundle thread's wall time by category."""
    result = {}
    for pid, path, proc in spy["procs"]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not path.exists():
            result[str(pid)] = {"error": "no output"}
            continue
        result[str(pid)] = {**categorize_pyspy(path.read_text(errors="replace")), "raw": f"logs/{path.name}"}
    return result


def categorize_pyspy(raw: str) -> dict:
    """py-spy `record --format raw --threads --idle`: `thread (tid): name;frame (file:line);... count` lines, root
    first. Samples inside process_bundle are the bundle thread's work (or waits); every thread is sampled at every
    tick with --idle, so the most-sampled thread's count is the recording's length in samples."""
    per_thread: dict[str, int] = {}
    in_bundle: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        per_thread[frames[0]] = per_thread.get(frames[0], 0) + n
        if not any("process_bundle" in f for f in frames):
            continue
        category = "other"
        for frame in reversed(frames):  # innermost first
            hit = next((name for name, needles in CATEGORIES if any(x in frame for x in needles)), None)
            if hit:
                category = hit
                break
        in_bundle[category] = in_bundle.get(category, 0) + n
    wall = max(per_thread.values(), default=0)
    busy = sum(in_bundle.values())
    total = max(wall, busy)
    share = {k: v / total for k, v in in_bundle.items()} if total else {}
    if total and total > busy:
        share[OUTSIDE_BUNDLE] = (total - busy) / total
    return {
        "samples": total,
        "in_bundle_samples": busy,
        "threads": len(per_thread),
        "share": dict(sorted(share.items(), key=lambda kv: -kv[1])),
    }
