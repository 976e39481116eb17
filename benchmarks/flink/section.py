"""The whole Flink section against one emulator and one local cluster, in the order that spreads a shared
machine's drifts over every setting; it fills the section's JSON as it goes and stops all it started."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import log
from benchmarks.flink.backfill import run_backfill
from benchmarks.flink.baseline import pieces_alone, run_plain
from benchmarks.flink.cluster import FlinkSetup, TaskManagerKeeper
from benchmarks.flink.knobs import BEAM_DEFAULTS, CONFIGS, DEFAULT, LIGHT_LOAD_RATE, MODEL, SCALE_OUT, settings
from benchmarks.flink.streaming import run_flink_config
from localdev.pubsub_emulator import PubsubEmulator
from localdev.traffic import make_traffic
from model_handlers.interface import MODELS

NOTES = [
    "the benchmark's collectors (a streaming pull each, as StreamingRun's) receive at most about 2,000 messages/s "
    "on this machine: throughput is timed by the emulator's publish stamps of the outputs, not by when they were "
    "received; at half the drain rate they keep up, but near their limit 'received' latency includes their queue",
    "drain: a backlog published into the input subscription before the job reads it; throughput = (outputs - 1) "
    "/ (last output - first output) as the benchmark's collectors receive them; middle_80pct: the same between the "
    "10th and 90th percentile output; scored_at: from the pipeline's own scoring stamps (collectors left out)",
    "latency: publish -> prediction received, from the published_at attribute, events paced at half the setting's "
    "drain rate (the default setting for latency_secs, the others for half as long)",
    "plain consumer: as_streaming_section = benchmarks.streaming.measure (publish as fast as possible while it "
    "consumes, throughput = outputs / (first publish -> last output)); drain = the same backlog drain as Flink",
    "backfill: run(argv) + wait_until_finish() in a fresh process (benchmarks.backfill_worker), JSON Lines in and "
    "out, outputs counted; on Flink this includes job submission (staging the job server jar) and SDK worker start",
    "cpu_during_drain: utime + stime of each process group between the first and the last output as Pub/Sub stamped them (sampled every 0.1 s, interpolated), in cores",
    "pyspy: one SDK worker's bundle thread sampled at 50 Hz, idle included (wall time), by innermost matching frame",
    "one machine runs everything (emulator, Flink JVMs, job server, SDK workers, publisher, collectors); "
    "other work on a shared machine shows up as noise",
]


def run(
    model_dir: str,
    workdir: Path,
    profile: dict,
    setup: FlinkSetup,
    results: dict,
    configs: Sequence[str] | None = None,
    ceiling: dict | None = None,
) -> dict:
    """Everything in the package's docstring against one emulator and one local cluster; fills `results` as it
    goes (an interruption keeps what was measured) and stops everything it started on the way out.

    profile keys: flink_backlog_events, flink_plain_events, flink_latency_secs, flink_light_secs, flink_repeats,
    flink_configs, flink_backfill_n_small, flink_backfill_n_big, flink_backfill_repeats, flink_variants,
    flink_pyspy_secs, flink_scale_out."""
    from localdev.flink import BEAM_JAVA_VERSION, FLINK_VERSION

    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    configs = list(configs if configs is not None else profile["flink_configs"])
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown Flink settings {unknown}; choose from {list(CONFIGS)}")
    n_backlog, latency_secs, repeats = (
        profile["flink_backlog_events"],
        profile["flink_latency_secs"],
        profile["flink_repeats"],
    )
    traffic = make_traffic(
        MODELS[MODEL], max(n_backlog, profile["flink_plain_events"]), malformed_fraction=0.03, seed=21
    )
    backlog = traffic[:n_backlog]
    results.update(
        model=MODEL,
        inference="in_process",
        flink_version=FLINK_VERSION,
        beam_java_runner_version=BEAM_JAVA_VERSION,
        backlog_events=n_backlog,
        latency_secs=latency_secs,
        light_load_rate=LIGHT_LOAD_RATE,
        light_load_secs=profile["flink_light_secs"],
        default_config=DEFAULT,
        beam_defaults=BEAM_DEFAULTS,
        configs={name: settings(name) for name in configs},
        streaming={},
        notes=NOTES,
        taskmanager_restarts=[],
    )
    with PubsubEmulator(project="bench-project", log_path=str(logs / "flink-emulator.log")) as emulator:
        log(f"Pub/Sub emulator up at {emulator.host}")
        flink = setup.cluster()
        keeper = TaskManagerKeeper(flink, results["taskmanager_restarts"])
        results["cluster"] = {
            "state_dir": str(flink.state_dir),
            "ports": dataclasses.asdict(flink.ports),
            "slots": flink.slots,
            "logs": str(flink.logs_dir),
        }
        log(
            f"local Flink {FLINK_VERSION} + Beam {BEAM_JAVA_VERSION} job server + SDK worker pool starting "
            f"({flink.state_dir}, REST port {flink.ports.rest})"
        )
        t0 = time.monotonic()
        flink.start()  # the emulator's address travels with each pipeline's options
        results["cluster"]["start_secs"] = time.monotonic() - t0
        log(f"local Flink up in {results['cluster']['start_secs']:.0f}s")
        try:
            # The default setting first and last (and between, with more repeats), the others in between: slow
            # drifts of a shared machine spread over all of them.
            order = ["default"] + [c for c in configs if c != "default"]
            order += ["default"] * (repeats - 1)
            for i, name in enumerate(order):
                secs = latency_secs if name == "default" else latency_secs / 2
                log(f"Flink streaming {i + 1}/{len(order)}: setting {name!r}")
                one = run_flink_config(
                    flink,
                    emulator,
                    model_dir,
                    logs,
                    name,
                    CONFIGS[name],
                    backlog,
                    secs,
                    seed=100 + 10 * i,
                    keeper=keeper,
                    light_secs=profile["flink_light_secs"] if name == "default" else 0,
                )
                if name != "default" and one.get("latency"):
                    one["latency"].pop("latencies_ms", None)  # the raw samples of the default setting only
                results["streaming"].setdefault(name, []).append(one)
            log("plain consumer on the same emulator")
            results["plain_consumer"] = run_plain(
                emulator,
                model_dir,
                logs,
                backlog,
                traffic[: profile["flink_plain_events"]],
                latency_secs,
                light_secs=profile["flink_light_secs"],
            )
            log("where the time goes: the pieces alone")
            results["pieces_alone"] = pieces_alone(emulator, min(n_backlog, 10_000), workdir, model_dir, ceiling)
            if profile.get("flink_pyspy_secs"):
                log(
                    "where the time goes: py-spy on the SDK worker during one more drain (default setting, not "
                    "counted in the medians)"
                )
                results["pyspy_run"] = run_flink_config(
                    flink,
                    emulator,
                    model_dir,
                    logs,
                    "pyspy",
                    CONFIGS["default"],
                    backlog,
                    0,
                    seed=900,
                    keeper=keeper,
                    pyspy_secs=profile["flink_pyspy_secs"],
                )
            log(
                f"backfill: N={profile['flink_backfill_n_small']:,} and N={profile['flink_backfill_n_big']:,}, "
                f"DirectRunner and Flink, {profile['flink_backfill_repeats']} repeat(s), each a fresh process"
            )
            results["backfill"] = run_backfill(
                flink,
                model_dir,
                workdir,
                profile["flink_backfill_n_small"],
                profile["flink_backfill_n_big"],
                profile["flink_backfill_repeats"],
                profile["flink_variants"],
                keeper,
            )
            if profile.get("flink_scale_out"):
                results["scale_out"] = run_scale_out(flink, emulator, model_dir, logs, backlog, keeper)
        finally:
            with contextlib.suppress(Exception):
                flink.cancel_all_jobs(timeout=30)
            flink.stop()
            log("local Flink stopped")
    return results


def run_scale_out(flink, emulator, model_dir: str, logs: Path, backlog, keeper: TaskManagerKeeper) -> dict:
    """Drains at each parallelism of SCALE_OUT on two TaskManagers of two slots each (a second one is started for
    them), the default setting otherwise: {parallelism: the run}."""
    name = flink.add_taskmanager()
    log(f"scale-out: a second TaskManager ({name}) up; {flink.status().slots_total} slots")
    runs = {}
    for parallelism in SCALE_OUT:
        log(f"scale-out: parallelism {parallelism}")
        runs[str(parallelism)] = run_flink_config(
            flink,
            emulator,
            model_dir,
            logs,
            f"scale_out_p{parallelism}",
            {"parallelism": parallelism},
            backlog,
            0,
            seed=500 + parallelism,
            keeper=keeper,
        )
    return runs
