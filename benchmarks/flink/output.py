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
    rows = [("Flink (fraud, in_process)", "")]
    samples = ", ".join(fmt(x) for x in s.flink_drain_events_per_sec_samples or [])
    rows.append(
        ("streaming drain, default setting, median (events/s)", f"{fmt(s.flink_drain_events_per_sec)}  [{samples}]")
    )
    rows.append(
        (
            f"latency p50 / p99 at {fmt(s.flink_latency_rate_per_sec)}/s, prediction received (ms)",
            f"{fmt(s.flink_p50_ms)} / {fmt(s.flink_p99_ms)}",
        )
    )
    rows.append(
        (
            "  ... to the prediction's publish (the emulator's stamp) (ms)",
            f"{fmt(s.flink_p50_ms_to_output_publish)} / {fmt(s.flink_p99_ms_to_output_publish)}",
        )
    )
    rows.append(("plain consumer, same backlog drain (events/s)", fmt(s.plain_drain_events_per_sec)))
    rows.append(
        ("plain consumer, as the streaming section measures it (events/s)", fmt(s.plain_sustained_events_per_sec))
    )
    rows.append(
        (
            f"plain consumer p50 / p99 at {fmt(s.plain_latency_rate_per_sec)}/s, received (ms)",
            f"{fmt(s.plain_p50_ms)} / {fmt(s.plain_p99_ms)}",
        )
    )
    rows.append(
        (
            "  ... to the prediction's publish (ms)",
            f"{fmt(s.plain_p50_ms_to_output_publish)} / {fmt(s.plain_p99_ms_to_output_publish)}",
        )
    )
    rows.append(
        (
            f"plain consumer p50 / p99 at {fmt(s.plain_as_streaming_section_latency_rate_per_sec)}/s, "
            f"as the streaming section measures it (ms)",
            f"{fmt(s.plain_as_streaming_section_p50_ms)} / {fmt(s.plain_as_streaming_section_p99_ms)}",
        )
    )
    if s.direct_runner_streaming_events_per_sec:
        rows.append(
            (
                f"DirectRunner streaming ({s.direct_runner_streaming_from}) (events/s)",
                fmt(s.direct_runner_streaming_events_per_sec),
            )
        )
    rows.append(
        (
            "Flink / plain consumer (drain; as streaming section)",
            f"{fmt(r.flink_over_plain_drain, '.2f', 'x')}; {fmt(r.flink_over_plain_as_streaming_section, '.2f', 'x')}",
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
    rows.append(
        (
            "target: throughput >= 3x plain consumer (drain; as streaming section)",
            f"{fmt(t.throughput_3x_plain_met)}; {fmt(t.throughput_3x_plain_met_vs_as_streaming_section)}",
        )
    )
    rows.append(
        (
            "target: p99 < 1 s at half the max rate (received; to the prediction's publish)",
            f"{fmt(t.p99_under_1s_met)}; {fmt(t.p99_under_1s_met_to_output_publish)}",
        )
    )
    width = max(len(a) for a, _ in rows)
    lines = [f"{a:<{width}}  {b}" for a, b in rows]
    if summary.per_config:
        lines += [
            "",
            "per setting (p50/p99: prediction received; pub: to its publish)",
            f"{'setting':<16} {'runs':>4} {'drain/s':>8} {'mid80%/s':>9} {'scored/s':>9} {'cores':>6} "
            f"{'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'pub p99':>8}  knobs",
        ]
        for name, c in summary.per_config.items():
            lines.append(
                f"{name:<16} {c.runs:>4} {fmt(c.drain_events_per_sec):>8} "
                f"{fmt(c.drain_middle_80pct_events_per_sec):>9} {fmt(c.drain_scored_at_events_per_sec):>9} "
                f"{fmt(c.cores_busy_during_drain, '.2f'):>6} {fmt(c.latency_rate_per_sec):>7} "
                f"{fmt(c.p50_ms):>7} {fmt(c.p99_ms):>7} {fmt(c.p99_ms_to_output_publish):>8}  "
                f"{changed_knobs(name) or 'default'}"
            )
        lines.append(f"default: {DEFAULT}")
    if summary.breakdown.note:
        lines += ["", "where the time goes:"] + [f"- {n}" for n in summary.breakdown.note]
    return "\n".join(lines)
