"""CPU seconds per component (a process group, or one process) over a window, read from /proc: where a drain's
CPU goes on a machine that the system under test shares with the emulator and the benchmark itself."""

from __future__ import annotations

import os
import threading
import time

from plumbing.process import group_members, proc_stat


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when gone)."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


class CpuMeter:
    """CPU seconds per component (a process group, or a single pid) between two snapshots, sampled every
    `every_secs` in between, so that `between` can also give the CPU of any window inside (a drain's first to last
    output, as Pub/Sub stamped them, rather than until the benchmark's slower collectors received the last)."""

    def __init__(self, groups: dict[str, int], single: dict[str, int] | None = None, every_secs: float = 0.1):
        self._groups, self._single = groups, single or {}
        self._every_secs = every_secs
        self._start: dict[str, dict[int, int]] = {}
        self._t0 = 0.0
        self._samples: list[tuple[float, dict[str, float]]] = []  # (time.time(), CPU seconds since start)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self) -> dict[str, dict[int, int]]:
        snap = {name: {pid: cpu_ticks(pid) for pid in group_members(pgid)} for name, pgid in self._groups.items()}
        snap.update({name: {pid: cpu_ticks(pid)} for name, pid in self._single.items()})
        return snap

    def _since_start(self, snap: dict[str, dict[int, int]]) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        secs = {}
        for name, pids in snap.items():
            before = self._start.get(name, {})
            # A process that started in between counts from zero; one that ended is lost (rare in a drain).
            secs[name] = sum(ticks - before.get(pid, 0) for pid, ticks in pids.items()) / hz
        return secs

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.monotonic()
        self._samples = [(time.time(), dict.fromkeys(self._start, 0.0))]
        self._thread = threading.Thread(target=self._sample, name="cpu-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stopping.wait(self._every_secs):
            self._samples.append((time.time(), self._since_start(self._snapshot())))

    def stop(self) -> dict:
        """wall_secs, cpu_secs and cores_busy per component, cores_busy_total: the JSON of `cpu_during_drain`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        wall = time.monotonic() - self._t0
        secs = self._since_start(self._snapshot())
        self._samples.append((time.time(), secs))
        return _figures(secs, wall)

    def between(self, t0: float, t1: float) -> dict | None:
        """The same figures for the window [t0, t1] (time.time()), interpolated between samples; None when the
        samples do not cover it."""
        if len(self._samples) < 2 or t1 <= t0 or t0 < self._samples[0][0] or t1 > self._samples[-1][0]:
            return None
        at0, at1 = self._at(t0), self._at(t1)
        return _figures({name: at1[name] - at0.get(name, 0.0) for name in at1}, t1 - t0)

    def _at(self, t: float) -> dict[str, float]:
        for (ta, a), (tb, b) in zip(self._samples, self._samples[1:]):
            if ta <= t <= tb:
                f = (t - ta) / (tb - ta) if tb > ta else 0.0
                return {name: a.get(name, 0.0) + f * (b[name] - a.get(name, 0.0)) for name in b}
        raise ValueError(f"{t} is outside the samples")


def _figures(secs: dict[str, float], wall: float) -> dict:
    return {
        "wall_secs": wall,
        "cpu_secs": secs,
        "cores_busy": {k: v / wall for k, v in secs.items()} if wall else {},
        "cores_busy_total": sum(secs.values()) / wall if wall else None,
    }


def busiest(cores_busy: dict[str, float]) -> str:
    """`name cores, ...`, busiest first: for progress lines."""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores_busy.items(), key=lambda kv: -kv[1]))
