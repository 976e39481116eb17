"""The Flink section's summary from its raw runs: headline figures (medians over repeats), ratios, the targets,
and where the time goes, in sentences that say what the figures mean."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import median, ratio
from benchmarks.flink.records import (
    Alone,
    Breakdown,
    Cpu,
    DirectRunnerStreaming,
    Figures,
    FlinkSection,
    JobRun,
    Ratios,
    ScaleOutRow,
    SettingFigures,
    Summary,
    Target,
)
from benchmarks.records import load
from benchmarks.sections import StreamingSection


def _median_of(runs: Sequence[JobRun], figure: Callable[[JobRun], float | None]) -> float | None:
    return median([figure(run) for run in runs])


def _us_per_event(cpu: Cpu, events: int) -> dict[str, float]:
    return {name: secs / events * 1e6 for name, secs in cpu.cpu_secs.items()}


# The processes that are the runner's cost: the SDK workers and every TaskManager (`Flink TaskManager 2`, ...).
RUNNER_PROCESSES = ("SDK workers", "Flink TaskManager")


def runner_cores(cpu: Cpu | None) -> float | None:
    """Cores the SDK workers and TaskManager(s) kept busy over a metered phase."""
    if not cpu or not cpu.wall_secs:
        return None
    return sum(v for k, v in cpu.cpu_secs.items() if k.startswith(RUNNER_PROCESSES)) / cpu.wall_secs


def runner_us_per_event(run: JobRun) -> float | None:
    """CPU per event of the SDK workers and the TaskManager(s) together over a run's drain."""
    if not run.cpu_during_drain or not run.drain.outputs:
        return None
    per_event = _us_per_event(run.cpu_during_drain, max(1, run.drain.outputs - 1))
    return sum(v for k, v in per_event.items() if k.startswith(RUNNER_PROCESSES))


def setting_figures(runs: Sequence[JobRun]) -> SettingFigures:
    """One setting's medians over its runs."""
    return SettingFigures(
        runs=len(runs),
        drain_events_per_sec=_median_of(runs, lambda r: r.drain.events_per_sec),
        drain_events_per_sec_samples=[r.drain.events_per_sec for r in runs],
        drain_middle_80pct_events_per_sec=_median_of(runs, lambda r: r.drain.events_per_sec_middle_80pct),
        drain_scored_at_events_per_sec=_median_of(runs, lambda r: r.drain.scored_at_events_per_sec),
        latency_rate_per_sec=_median_of(runs, lambda r: r.latency.rate_per_sec),
        p50_ms=_median_of(runs, lambda r: r.latency.p50_ms),
        p99_ms=_median_of(runs, lambda r: r.latency.p99_ms),
        p50_ms_to_output_publish=_median_of(runs, lambda r: r.latency.to_output_publish.p50_ms),
        p99_ms_to_output_publish=_median_of(runs, lambda r: r.latency.to_output_publish.p99_ms),
        cores_busy_during_drain=_median_of(
            runs, lambda r: r.cpu_during_drain.cores_busy_total if r.cpu_during_drain else None
        ),
        sdk_and_taskmanager_us_per_event=_median_of(runs, runner_us_per_event),
    )


def summarize(flink: dict, direct_streaming: DirectRunnerStreaming | None = None) -> Summary:
    """Headline figures (medians over repeats), ratios, the targets and the profile breakdown."""
    section = load(FlinkSection, flink)
    per_config = {name: setting_figures(runs) for name, runs in section.streaming.items()}
    default = per_config.get("default", SettingFigures())
    default_runs = section.streaming.get("default", [])
    plain, bf = section.plain_consumer, section.backfill
    plain_cpu = plain.drain.cpu_during_drain
    plain_us = (
        plain_cpu.cpu_secs.get("plain consumer", 0) / max(1, (plain.drain.outputs or 1) - 1) * 1e6
        if plain_cpu
        else None
    )
    figures = Figures(
        flink_drain_events_per_sec=default.drain_events_per_sec,
        flink_drain_events_per_sec_samples=default.drain_events_per_sec_samples,
        flink_latency_rate_per_sec=default.latency_rate_per_sec,
        flink_p50_ms=default.p50_ms,
        flink_p99_ms=default.p99_ms,
        flink_p50_ms_to_output_publish=default.p50_ms_to_output_publish,
        flink_p99_ms_to_output_publish=default.p99_ms_to_output_publish,
        flink_sdk_and_taskmanager_us_per_event=default.sdk_and_taskmanager_us_per_event,
        light_load_rate_per_sec=section.light_load_rate,
        flink_light_p50_ms=_median_of(default_runs, lambda r: r.light_load.p50_ms),
        flink_light_p99_ms=_median_of(default_runs, lambda r: r.light_load.p99_ms),
        flink_light_p99_ms_to_output_publish=_median_of(default_runs, lambda r: r.light_load.to_output_publish.p99_ms),
        flink_light_load_runner_cores=_median_of(default_runs, lambda r: runner_cores(r.cpu_during_light_load)),
        plain_light_p50_ms=plain.light_load.p50_ms,
        plain_light_p99_ms=plain.light_load.p99_ms,
        plain_light_p99_ms_to_output_publish=plain.light_load.to_output_publish.p99_ms,
        plain_consumer_us_per_event=plain_us,
        plain_drain_events_per_sec=plain.drain.events_per_sec,
        plain_sustained_events_per_sec=plain.as_streaming_section.sustained.events_per_sec,
        plain_latency_rate_per_sec=plain.latency.rate_per_sec,
        plain_p50_ms=plain.latency.p50_ms,
        plain_p99_ms=plain.latency.p99_ms,
        plain_p50_ms_to_output_publish=plain.latency.to_output_publish.p50_ms,
        plain_p99_ms_to_output_publish=plain.latency.to_output_publish.p99_ms,
        plain_as_streaming_section_latency_rate_per_sec=plain.as_streaming_section.latency.rate_per_sec,
        plain_as_streaming_section_p50_ms=plain.as_streaming_section.latency.p50_ms,
        plain_as_streaming_section_p99_ms=plain.as_streaming_section.latency.p99_ms,
        direct_runner_streaming_events_per_sec=direct_streaming.events_per_sec if direct_streaming else None,
        direct_runner_streaming_p50_ms=direct_streaming.p50_ms if direct_streaming else None,
        direct_runner_streaming_p99_ms=direct_streaming.p99_ms if direct_streaming else None,
        direct_runner_streaming_from=direct_streaming.source if direct_streaming else None,
        backfill_n=bf.n_big,
        backfill_flink_end_to_end_events_per_sec=bf.flink.end_to_end_events_per_sec,
        backfill_direct_end_to_end_events_per_sec=bf.direct_runner.end_to_end_events_per_sec,
        backfill_flink_steady_events_per_sec=bf.flink.steady_events_per_sec,
        backfill_direct_steady_events_per_sec=bf.direct_runner.steady_events_per_sec,
        backfill_flink_fixed_secs=bf.flink.fixed_secs,
        backfill_direct_fixed_secs=bf.direct_runner.fixed_secs,
        backfill_flink_parallelism_2_end_to_end_events_per_sec=bf.flink_parallelism_2.end_to_end_events_per_sec,
    )
    ratios = Ratios(
        flink_over_plain_drain=ratio(figures.flink_drain_events_per_sec, figures.plain_drain_events_per_sec),
        flink_over_plain_as_streaming_section=ratio(
            figures.flink_drain_events_per_sec, figures.plain_sustained_events_per_sec
        ),
        flink_over_direct_runner_streaming=ratio(
            figures.flink_drain_events_per_sec, figures.direct_runner_streaming_events_per_sec
        ),
        flink_over_plain_light_load_p99=ratio(figures.flink_light_p99_ms, figures.plain_light_p99_ms),
        backfill_flink_over_direct_end_to_end=bf.flink_over_direct_runner_end_to_end,
        backfill_flink_over_direct_steady=bf.flink_over_direct_runner_steady,
    )
    return Summary(
        figures=figures,
        ratios=ratios,
        per_config=per_config,
        scale_out=[
            ScaleOutRow(
                int(parallelism),
                run.drain.events_per_sec,
                runner_us_per_event(run),
                run.cpu_during_drain.cores_busy_total if run.cpu_during_drain else None,
            )
            for parallelism, run in section.scale_out.items()
        ],
        target=target(figures, ratios, per_config),
        breakdown=breakdown(section),
    )


def target(figures: Figures, ratios: Ratios, per_config: dict[str, SettingFigures]) -> Target:
    """Were the targets met, and which setting came closest. Latency at half the drain rate is taken to the
    prediction's publish (the emulator's stamp): near their limit the benchmark's collectors, not the system
    under test, would set the 'received' figure."""
    drained = [n for n in per_config if per_config[n].drain_events_per_sec]
    best_throughput = max(drained, key=lambda n: per_config[n].drain_events_per_sec, default=None)
    within_latency = [
        n
        for n in per_config
        if per_config[n].p99_ms_to_output_publish is not None and per_config[n].p99_ms_to_output_publish < 500
    ]
    best_within = max(within_latency, key=lambda n: per_config[n].drain_events_per_sec or 0, default=None)
    best = per_config.get(best_throughput, SettingFigures())
    to_publish = figures.flink_p99_ms_to_output_publish
    cpu = figures.flink_sdk_and_taskmanager_us_per_event
    return Target(
        what=(
            "Flink drain >= 2.5x the plain consumer's; p99 < 500 ms at half the drain rate (to the prediction's "
            "publish); <= 200 us of CPU per event in the SDK workers and TaskManager together; p99 at light load "
            "(the main job's rate) within 1.5x the plain consumer's"
        ),
        drain_2_5x_plain_met=_at_least(ratios.flink_over_plain_drain, 2.5),
        p99_under_500ms_at_half_drain_met=None if to_publish is None else to_publish < 500,
        cpu_200us_per_event_met=None if cpu is None else cpu <= 200,
        light_load_p99_within_1_5x_plain_met=(
            None if ratios.flink_over_plain_light_load_p99 is None else ratios.flink_over_plain_light_load_p99 <= 1.5
        ),
        best_throughput_setting=best_throughput,
        best_throughput_setting_events_per_sec=best.drain_events_per_sec,
        best_throughput_setting_p99_ms=best.p99_ms,
        best_setting_with_p99_under_500ms=best_within,
    )


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _by_cost(per_event: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(per_event.items(), key=lambda kv: -kv[1]) if v >= 1)


def breakdown(section: FlinkSection) -> Breakdown:
    """Where the time goes in a drain, from the measurements: CPU per event per process, the pieces alone, and the
    SDK worker's bundle thread (py-spy); plus sentences that say what they mean."""
    parts: dict = {}
    note: list[str] = []
    runs = section.streaming.get("default", [])
    last = runs[-1] if runs else None
    if last and last.cpu_during_drain:
        cpu = last.cpu_during_drain
        per_event = _us_per_event(cpu, max(1, (last.drain.outputs or 1) - 1))
        total = sum(per_event.values())
        own = sum(v for k, v in per_event.items() if k.startswith("benchmark"))
        parts.update(
            flink_cpu_us_per_event=per_event,
            flink_cpu_us_per_event_total=total,
            flink_cores_busy=cpu.cores_busy_total,
            flink_cpu_us_per_event_system_under_test=total - own,
        )
        nproc = os.cpu_count() or 1
        note.append(
            f"Flink drain: {total:,.0f} us of CPU per event over all processes ("
            + _by_cost(per_event)
            + f"); {cpu.cores_busy_total:.2f} of {nproc} cores busy between the first and last output's publish. "
            f"Without the benchmark's own share, {total - own:,.0f} us/event: {nproc} cores carry about "
            f"{nproc * 1e6 / (total - own):,.0f} events/s at that cost, the machine's limit for this path."
        )
    plain_drain = section.plain_consumer.drain
    if plain_drain.cpu_during_drain:
        cpu = plain_drain.cpu_during_drain
        per_event = _us_per_event(cpu, max(1, (plain_drain.outputs or 1) - 1))
        parts.update(plain_cpu_us_per_event=per_event, plain_cpu_us_per_event_total=sum(per_event.values()))
        note.append(
            f"plain consumer drain: {sum(per_event.values()):,.0f} us of CPU per event ("
            + _by_cost(per_event)
            + f"); {cpu.cores_busy_total:.2f} cores busy."
        )
    alone = section.pieces_alone
    if alone.pull:
        pull, publish = alone.pull, alone.publish_bulk
        per_call = pull.messages / max(1, pull.calls)
        project_us = (alone.model_us_per_event or {}).get("total_outside_beam")
        serial_us = 1e6 / pull.events_per_sec + 1e6 / (publish.events_per_sec or float("inf")) + (project_us or 0)
        parts["alone"] = Alone(
            emulator_pull_events_per_sec=pull.events_per_sec,
            emulator_messages_per_pull=per_call,
            publish_bulk_events_per_sec=publish.events_per_sec,
            publish_free_running_events_per_sec=alone.publish_free_running.events_per_sec,
            project_work_us_per_event=project_us,
            serial_sum_us_per_event=serial_us,
        )
        note.append(
            f"the pieces alone: the emulator answers a pull with at most {per_call:.0f} messages ({pull.events_per_sec:,.0f}/s "
            f"pulling alone); publishing as the sink does (whole requests) {publish.events_per_sec or 0:,.0f}/s, "
            f"through the client's per-message batching {alone.publish_free_running.events_per_sec or 0:,.0f}/s; "
            f"the project's parse + predict + format {project_us or 0:.0f} us/event. One after the "
            f"other, as one bundle thread does them: {serial_us:.0f} us/event = {1e6 / serial_us:,.0f} events/s "
            "before any harness cost."
        )
    shares = [worker.share for worker in section.pyspy_run.pyspy.values() if worker.share]
    if shares:
        merged: dict = {}
        for share in shares:
            for k, v in share.items():
                merged[k] = merged.get(k, 0) + v / len(shares)
        parts["sdk_worker_bundle_thread_share"] = merged
        note.append(
            "SDK worker, bundle thread (wall time, py-spy): "
            + ", ".join(f"{k} {v:.0%}" for k, v in sorted(merged.items(), key=lambda kv: -kv[1]) if v >= 0.005)
            + "."
        )
    return Breakdown(note=note, **parts)


def direct_streaming_figures(results: dict, out: Path) -> DirectRunnerStreaming | None:
    """The DirectRunner streaming figures: from this run's `streaming` section, else from the results.json a
    previous full run left in `out` (labelled with its date), else None."""

    def pick(streaming, source: str) -> DirectRunnerStreaming | None:
        beam = load(StreamingSection, streaming).beam_direct_runner
        if not beam.sustained.events_per_sec:
            return None
        return DirectRunnerStreaming(
            beam.sustained.events_per_sec, beam.latency.p50_ms, beam.latency.p99_ms, beam.latency.rate_per_sec, source
        )

    here = pick(results.get("streaming"), "this run")
    if here:
        return here
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((out / "results.json").read_text())
        return pick(previous.get("streaming"), f"{out / 'results.json'} of {previous.get('machine', {}).get('date')}")
    return None
