"""CPU seconds per component (a process group, or one process) over a window, read from /proc: where a drain's
CPU goes on a machine that the system under test shares with the emulator and the benchmark itself."""

from __future__ import annotations

import os
import time

from plumbing.process import group_members, proc_stat


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when gone)."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


class CpuMeter:
    """CPU seconds per component (a process group, or a single pid) between two snapshots."""

    def __init__(self, groups: dict[str, int], single: dict[str, int] | None = None):
        self._groups, self._single = groups, single or {}
        self._start: dict[str, dict[int, int]] = {}
        self._t0 = 0.0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        snap = {name: {pid: cpu_ticks(pid) for pid in group_members(pgid)} for name, pgid in self._groups.items()}
        snap.update({name: {pid: cpu_ticks(pid)} for name, pid in self._single.items()})
        return snap

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.monotonic()

    def stop(self) -> dict:
        """wall_secs, cpu_secs and cores_busy per component, cores_busy_total: the JSON of `cpu_during_drain`."""
        end, wall = self._snapshot(), time.monotonic() - self._t0
        hz = os.sysconf("SC_CLK_TCK")
        secs = {}
        for name, pids in end.items():
            before = self._start.get(name, {})
            # A process that started in between counts from zero; one that ended is lost (rare in a drain).
            secs[name] = sum(ticks - before.get(pid, 0) for pid, ticks in pids.items()) / hz
        return {
            "wall_secs": wall,
            "cpu_secs": secs,
            "cores_busy": {k: v / wall for k, v in secs.items()} if wall else {},
            "cores_busy_total": sum(secs.values()) / wall if wall else None,
        }


def busiest(cores_busy: dict[str, float]) -> str:
    """`name cores, ...`, busiest first: for progress lines."""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores_busy.items(), key=lambda kv: -kv[1]))
