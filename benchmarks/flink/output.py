"""What the Flink section leaves behind: OUT/flink.json, OUT/flink-summary.json, OUT/flink.png, and the table
printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import log
from benchmarks.flink.knobs import DEFAULT, changed_knobs
from benchmarks.flink.plot import plot
from benchmarks.flink.records import Summary
from benchmarks.records import load


def without_samples(value):
    """`value` with every `latencies_ms` list (one entry per event) left out; the percentiles stay."""
    if isinstance(value, dict):
        return {k: without_samples(v) for k, v in value.items() if k != "latencies_ms"}
    if isinstance(value, list):
        return [without_samples(v) for v in value]
    return value


def write(flink: dict, results: dict, out: Path) -> None:
    """OUT/flink.json (the section with the run's machine facts and command), OUT/flink-summary.json (the same
    without per-event samples) and OUT/flink.png."""
    doc = {
        "command": results.get("command"),
        "quick": results.get("quick"),
        "machine": results.get("machine"),
        "flink": flink,
    }
    (out / "flink.json").write_text(json.dumps(doc, indent=1, default=str))
    # The same without the per-event latency samples (megabytes): the copy that goes into docs/benchmarks/.
    (out / "flink-summary.json").write_text(json.dumps(without_samples(doc), indent=1, default=str))
    try:
        plot(flink, results.get("machine", {}), out / "flink.png", quick=bool(results.get("quick")))
    except Exception as error:  # pylint: disable=broad-except
        log(f"could not draw flink.png: {error}")


def fmt(value, spec: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{format(value, spec)}{unit}"


def table(flink: dict) -> str:
    """The summary (flink["summary"]) as the lines printed at the end of a run."""
    summary = load(Summary, flink.get("summary"))
    s, r, t = summary.figures, summary.ratios, summary.target
    alone = summary.breakdown.alone
    samples = ", ".join(fmt(x) for x in s.flink_drain_events_per_sec_samples or [])
    rows = [
        ("Flink (fraud, in_process) | plain google-cloud-pubsub consumer, same emulator, this run", ""),
        (
            "drain (events/s): Flink, median [runs] | plain",
            f"{fmt(s.flink_drain_events_per_sec)} [{samples}] | {fmt(s.plain_drain_events_per_sec)}  "
            f"= {fmt(r.flink_over_plain_drain, '.2f', 'x')}",
        ),
        (
            f"p50 / p99 at half the drain rate ({fmt(s.flink_latency_rate_per_sec)}/s | "
            f"{fmt(s.plain_latency_rate_per_sec)}/s), to the prediction's publish (ms)",
            f"{fmt(s.flink_p50_ms_to_output_publish)} / {fmt(s.flink_p99_ms_to_output_publish)} | "
            f"{fmt(s.plain_p50_ms_to_output_publish)} / {fmt(s.plain_p99_ms_to_output_publish)}",
        ),
        (
            "  ... to the prediction received by the benchmark's collectors (ms)",
            f"{fmt(s.flink_p50_ms)} / {fmt(s.flink_p99_ms)} | {fmt(s.plain_p50_ms)} / {fmt(s.plain_p99_ms)}",
        ),
        (
            f"p50 / p99 at light load, {fmt(s.light_load_rate_per_sec)} events/s, received (ms)",
            f"{fmt(s.flink_light_p50_ms)} / {fmt(s.flink_light_p99_ms)} | "
            f"{fmt(s.plain_light_p50_ms)} / {fmt(s.plain_light_p99_ms)}  "
            f"= {fmt(r.flink_over_plain_light_load_p99, '.2f', 'x')} (p99)",
        ),
        (
            "CPU per event over the drain (us): SDK workers + TaskManager | plain consumer process",
            f"{fmt(s.flink_sdk_and_taskmanager_us_per_event)} | {fmt(s.plain_consumer_us_per_event)}  "
            f"(the project's own parse + predict + format: {fmt(alone.project_work_us_per_event if alone else None)})",
        ),
        (
            f"cores the SDK workers + TaskManager keep busy at {fmt(s.light_load_rate_per_sec)} events/s",
            fmt(s.flink_light_load_runner_cores, ".2f"),
        ),
        (
            "plain consumer, as the streaming section measures it (events/s; p50 / p99 ms)",
            f"{fmt(s.plain_sustained_events_per_sec)}; {fmt(s.plain_as_streaming_section_p50_ms)} / "
            f"{fmt(s.plain_as_streaming_section_p99_ms)} at {fmt(s.plain_as_streaming_section_latency_rate_per_sec)}/s",
        ),
    ]
    if s.direct_runner_streaming_events_per_sec:
        rows.append(
            (
                f"DirectRunner streaming ({s.direct_runner_streaming_from}) (events/s)",
                fmt(s.direct_runner_streaming_events_per_sec),
            )
        )
    rows.append(
        (
            f"backfill N={fmt(s.backfill_n)} end to end: Flink / DirectRunner (events/s)",
            f"{fmt(s.backfill_flink_end_to_end_events_per_sec)} / "
            f"{fmt(s.backfill_direct_end_to_end_events_per_sec)} = "
            f"{fmt(r.backfill_flink_over_direct_end_to_end, '.2f', 'x')}",
        )
    )
    rows.append(
        (
            "backfill steady state: Flink / DirectRunner (events/s)",
            f"{fmt(s.backfill_flink_steady_events_per_sec)} / {fmt(s.backfill_direct_steady_events_per_sec)}",
        )
    )
    rows.append(
        (
            "backfill fixed cost: Flink / DirectRunner (s)",
            f"{fmt(s.backfill_flink_fixed_secs, '.1f')} / {fmt(s.backfill_direct_fixed_secs, '.1f')}",
        )
    )
    if s.backfill_flink_parallelism_2_end_to_end_events_per_sec:
        rows.append(
            (
                "backfill on Flink, --parallelism=2, end to end (events/s)",
                fmt(s.backfill_flink_parallelism_2_end_to_end_events_per_sec),
            )
        )
    rows += [
        ("target: drain >= 2.5x the plain consumer", fmt(t.drain_2_5x_plain_met)),
        ("target: p99 < 500 ms at half the drain rate (to the publish)", fmt(t.p99_under_500ms_at_half_drain_met)),
        ("target: <= 200 us of CPU per event, SDK workers + TaskManager", fmt(t.cpu_200us_per_event_met)),
        ("target: light-load p99 within 1.5x the plain consumer's", fmt(t.light_load_p99_within_1_5x_plain_met)),
    ]
    width = max(len(a) for a, _ in rows)
    lines = [f"{a:<{width}}  {b}" for a, b in rows]
    if summary.per_config:
        lines += [
            "",
            "per setting (p50/p99: prediction received; pub: to its publish)",
            f"{'setting':<16} {'runs':>4} {'drain/s':>8} {'mid80%/s':>9} {'scored/s':>9} {'cores':>6} "
            f"{'us/ev':>6} {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'pub p99':>8}  knobs",
        ]
        for name, c in summary.per_config.items():
            lines.append(
                f"{name:<16} {c.runs:>4} {fmt(c.drain_events_per_sec):>8} "
                f"{fmt(c.drain_middle_80pct_events_per_sec):>9} {fmt(c.drain_scored_at_events_per_sec):>9} "
                f"{fmt(c.cores_busy_during_drain, '.2f'):>6} {fmt(c.sdk_and_taskmanager_us_per_event):>6} "
                f"{fmt(c.latency_rate_per_sec):>7} "
                f"{fmt(c.p50_ms):>7} {fmt(c.p99_ms):>7} {fmt(c.p99_ms_to_output_publish):>8}  "
                f"{changed_knobs(name) or 'default'}"
            )
        lines.append(f"default: {DEFAULT}; us/ev: CPU per event, SDK workers + TaskManager, over the drain")
    if summary.scale_out:
        lines += ["", "scale-out: two TaskManagers of two slots, one worker pool, this machine's cores"]
        lines.append(f"{'parallelism':>11} {'drain/s':>8} {'us/ev':>6} {'cores':>6}")
        for row in summary.scale_out:
            lines.append(
                f"{row.parallelism:>11} {fmt(row.drain_events_per_sec):>8} "
                f"{fmt(row.sdk_and_taskmanager_us_per_event):>6} {fmt(row.cores_busy_during_drain, '.2f'):>6}"
            )
    if summary.breakdown.note:
        lines += ["", "where the time goes:"] + [f"- {n}" for n in summary.breakdown.note]
    return "\n".join(lines)
