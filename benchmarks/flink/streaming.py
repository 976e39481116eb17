"""One fresh Flink streaming job per knob setting: drain a backlog, then latency at half the drain rate."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import log
from benchmarks.flink.backlog import (
    FlinkBacklogRun,
    drain_cpu,
    drain_figures,
    latency_after_drain,
    log_drain,
    num,
    wait_for_drain,
)
from benchmarks.flink.cluster import TaskManagerKeeper, cluster_groups
from benchmarks.flink.cpu import CpuMeter
from benchmarks.flink.knobs import DEFAULT, LIGHT_LOAD_RATE, MODEL, config_args
from benchmarks.flink.profiler import finish_pyspy, start_pyspy
from localdev.traffic import Message


def run_flink_config(
    flink,
    emulator,
    model_dir: str,
    logs: Path,
    name: str,
    config: dict,
    backlog: Sequence[Message],
    latency_secs: float,
    seed: int,
    keeper: TaskManagerKeeper,
    ready_timeout_secs: float = 300,
    pyspy_secs: float = 0,
    light_secs: float = 0,
) -> dict:
    """A fresh streaming job with this knob setting: drain the backlog, then latency at half the drain rate, then
    (light_secs) at LIGHT_LOAD_RATE."""
    settings = {**DEFAULT, **config}
    args = config_args(flink, config)
    keeper.before_job()
    label = f"flink {name}"
    result: dict = {"config": settings, "args": args}
    started = time.monotonic()
    with FlinkBacklogRun(
        emulator, MODEL, model_dir, logs, args, prefix=f"flink-{name}-s{seed}-", backlog=backlog
    ) as run:
        log(
            f"{label}: {len(backlog):,} events published in {run.backlog_publish_secs:.1f}s before the job reads; "
            f"job starting ({', '.join(f'{k}={v}' for k, v in settings.items())}); log {run.log_path}"
        )
        groups = {
            "Pub/Sub emulator": emulator._process.pid,
            "pipeline launcher": run._process.pid,  # pylint: disable=protected-access
            **cluster_groups(flink),
        }
        meter = CpuMeter(groups, {"benchmark (publisher, collectors)": os.getpid()})
        profile = {}

        def on_ready(secs: float) -> None:
            result["ready_secs"] = secs
            log(f"{label}: first output {secs:.1f}s after launch; draining")
            if pyspy_secs:
                profile["spy"] = start_pyspy(flink, logs / f"pyspy-{name}.txt", pyspy_secs)

        ready = wait_for_drain(run, label, meter, started, ready_timeout_secs, on_ready)
        result["cpu_during_drain"] = drain_cpu(run, meter) if ready else None
        if not ready:
            raise RuntimeError(
                f"{label}: no output within {ready_timeout_secs:.0f}s; log {run.log_path}, "
                f"job server log {flink.log_path('jobserver')}"
            )
        drain = result["drain"] = drain_figures(run)
        if profile.get("spy"):
            result["pyspy"] = finish_pyspy(profile["spy"])
        log_drain(
            label,
            drain,
            len(backlog),
            result["cpu_during_drain"],
            extra=f", scored_at {num(drain.get('scored_at_events_per_sec'))}/s",
        )
        if drain.get("events_per_sec") and latency_secs:
            rate = drain["events_per_sec"] / 2
            result["latency"] = latency_after_drain(run, label, rate, latency_secs, seed + 1)
            log(
                f"{label}: latency at {rate:,.0f}/s: p50 {num(result['latency']['p50_ms'])} ms, "
                f"p99 {num(result['latency']['p99_ms'])} ms"
            )
        if light_secs:
            # What the job costs at light load (the fixed cost of ticks, bundles and checkpoints shows here).
            light_meter = CpuMeter(groups)
            light_meter.start()
            result["light_load"] = latency_after_drain(run, label, LIGHT_LOAD_RATE, light_secs, seed + 2)
            result["cpu_during_light_load"] = light_meter.stop()
        flink.cancel_all_jobs()
    return result
