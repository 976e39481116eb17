"""Which local Flink cluster the benchmark uses, its processes, and a TaskManager kept alive across ~20 jobs."""

from __future__ import annotations

import contextlib
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


# The TaskManager's JVM metaspace grows by a few tens of MB with every job (each ships the job server jar, loaded
# by a class loader of its own that is not let go) until it dies with OutOfMemoryError: Metaspace: after about 8
# jobs with Flink's default 256 MB (localdev.flink now gives it 768 MB). The benchmark submits about 20 jobs, so
# above this share the TaskManager is restarted between two jobs; where Flink has no metaspace figure yet (its
# REST metrics fill in lazily), after this many jobs.
METASPACE_RESTART_FRACTION = 0.5
JOBS_PER_TASKMANAGER = 4


def metaspace_fraction(flink) -> float | None:
    """The most used share of JVM metaspace over the TaskManagers (Flink's REST metrics), None if unknown."""
    fractions = []
    with contextlib.suppress(Exception):
        for tm in flink.rest("GET", "/taskmanagers")["taskmanagers"]:
            metrics = flink.rest(
                "GET",
                f"/taskmanagers/{tm['id']}/metrics"
                "?get=Status.JVM.Memory.Metaspace.Used,Status.JVM.Memory.Metaspace.Max",
            )
            values = {m["id"]: float(m["value"]) for m in metrics}
            if values.get("Status.JVM.Memory.Metaspace.Max", 0) > 0:
                fractions.append(values["Status.JVM.Memory.Metaspace.Used"] / values["Status.JVM.Memory.Metaspace.Max"])
    return max(fractions, default=None)


class TaskManagerKeeper:
    """Counts the jobs one cluster's TaskManager has run and restarts it before one would kill it.

    `restarts` is the list each restart is recorded in (what it was for, how long it took): the section's
    `taskmanager_restarts`, filled as it goes so an interrupted run keeps it."""

    def __init__(self, flink, restarts: list | None = None):
        self.flink = flink
        self.restarts = restarts if restarts is not None else []
        self.jobs = 0  # since the TaskManager (re)started

    def before_job(self) -> None:
        """Restart the TaskManager when its metaspace is past METASPACE_RESTART_FRACTION, or, with no figure from
        Flink, after JOBS_PER_TASKMANAGER jobs. No job runs between two measured ones, so nothing is lost."""
        jobs = self.jobs
        fraction = metaspace_fraction(self.flink)
        due = fraction >= METASPACE_RESTART_FRACTION if fraction is not None else jobs >= JOBS_PER_TASKMANAGER
        if not due:
            self.jobs = jobs + 1
            return
        t0 = time.monotonic()
        self.flink.kill_taskmanager()
        self.flink.start_taskmanager()
        self.jobs = 1
        self.restarts.append({"metaspace_fraction": fraction, "jobs": jobs, "secs": time.monotonic() - t0})
        why = f"its metaspace was {fraction:.0%} full" if fraction is not None else f"{jobs} jobs since it started"
        log(
            f"TaskManager restarted in {time.monotonic() - t0:.0f}s ({why}): it keeps a class loader per job and "
            f"would die of OutOfMemoryError: Metaspace"
        )


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
