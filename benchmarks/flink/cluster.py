"""Which local Flink cluster the benchmark uses, its processes, and a fresh TaskManager for each job."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.common import log
from plumbing.process import group_members


@dataclasses.dataclass(frozen=True)
class FlinkSetup:
    """Which local cluster: the default one (build/flink, ports 8081...), or another beside it."""

    state_dir: str | None = None  # None: LocalFlink's default, build/flink
    port_offset: int = 0  # added to every default port

    def cluster(self):
        from localdev.flink import LocalFlink, Ports

        ports = None
        if self.port_offset:
            ports = Ports(**{name: port + self.port_offset for name, port in dataclasses.asdict(Ports()).items()})
        if self.state_dir:
            _seed_install(Path(self.state_dir))
        return LocalFlink(state_dir=self.state_dir, ports=ports, verbose=False)


def _seed_install(state_dir: Path) -> None:
    """A new state directory reuses the default one's installed Flink and job server (hard links where the
    file system allows, else copies) instead of a minute of pip and Maven; LocalFlink checks what it finds."""
    from localdev.flink import DEFAULT_STATE_DIR

    source = DEFAULT_STATE_DIR
    if state_dir.resolve() == source.resolve():
        return
    for name in ("dist", "jobserver"):
        if (source / name).is_dir() and not (state_dir / name).exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            partial = state_dir / f"{name}.seeding"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                subprocess.run(["cp", "-al", str(source / name), str(partial)], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError):
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(source / name, partial, symlinks=True)
            partial.rename(state_dir / name)


# A TaskManager carries something of every job it ran: a class loader each (the job server jar), which fills its
# metaspace; CPU it keeps spending after the job is cancelled (at light load 0.17, then 0.30, then 0.41 cores over
# three jobs, measured); and, after about ten streaming jobs, too little direct memory for a batch job's shuffle
# (OutOfMemoryError). A production TaskManager runs one job, so each measured job gets a fresh one.


class TaskManagerKeeper:
    """Restarts one cluster's TaskManager before every job but the first it runs (see above).

    `restarts` is the list each restart is recorded in (how long it took): the section's `taskmanager_restarts`,
    filled as it goes so an interrupted run keeps it."""

    def __init__(self, flink, restarts: list | None = None):
        self.flink = flink
        self.restarts = restarts if restarts is not None else []
        self.jobs = 0  # since the TaskManager (re)started

    def before_job(self) -> None:
        """No job runs between two measured ones, so nothing is lost by the restart."""
        if self.jobs == 0:
            self.jobs = 1
            return
        t0 = time.monotonic()
        self.flink.kill_taskmanager()
        self.flink.start_taskmanager()
        self.restarts.append({"jobs": self.jobs, "secs": time.monotonic() - t0})
        self.jobs = 1
        log(f"TaskManager restarted in {time.monotonic() - t0:.0f}s: a fresh one for each job, as in production")


COMPONENT_NAMES = {
    "jobmanager": "Flink JobManager",
    "taskmanager": "Flink TaskManager",
    "jobserver": "Beam job server",
    "workerpool": "SDK workers (worker pool)",
}


def cluster_groups(flink) -> dict[str, int]:
    """Process group per component of the local cluster (each runs in a session of its own)."""
    state = json.loads(flink.state_file.read_text())
    return {_component_name(name): entry["pid"] for name, entry in state.get("processes", {}).items()}


def _component_name(name: str) -> str:
    """`taskmanager-2` (LocalFlink.add_taskmanager) -> `Flink TaskManager 2`."""
    base, _, number = name.partition("-")
    return COMPONENT_NAMES.get(base, base) + (f" {number}" if number else "")


def sdk_workers(flink) -> list[int]:
    """The SDK worker processes the worker pool started (its group, less the pool itself)."""
    pool = cluster_groups(flink).get(COMPONENT_NAMES["workerpool"])
    return [pid for pid in group_members(pool) if pid != pool] if pool else []
