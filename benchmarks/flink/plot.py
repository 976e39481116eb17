"""flink.png: streaming throughput and latency against the baselines, backfill, the settings swept, scale-out, and
where the CPU and the SDK worker's time go; drawn from the section's summary."""

from __future__ import annotations

from pathlib import Path

from benchmarks.flink.records import Summary
from benchmarks.records import load


def _label(value) -> str:
    return "-" if value is None else format(value, ",.0f")


def _bars(ax, items, title, ylabel, log_scale=False):
    """One bar per (label, value, color) that has a value, each with its value written above it."""
    items = [(label, value, color) for label, value, color in items if value]
    xs = range(len(items))
    ax.bar(xs, [v for _, v, _ in items], color=[c for _, _, c in items])
    for x, (_, value, _) in zip(xs, items):
        ax.text(x, value * (1.05 if log_scale else 1.01), f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [label for label, _, _ in items], fontsize=8)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)


def plot(flink: dict, machine: dict, path: Path, quick: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = load(Summary, flink.get("summary"))
    fig, axes = plt.subplots(3, 3, figsize=(18, 15))
    (ax_tp, ax_lat, ax_light), (ax_cfg, ax_scale, ax_bf), (ax_cpu, ax_spy, ax_unused) = axes
    _throughput(ax_tp, summary)
    _latency(ax_lat, summary)
    _light_load(ax_light, summary)
    _settings(ax_cfg, summary)
    _scale_out(ax_scale, summary)
    _backfill(ax_bf, summary)
    _cpu(ax_cpu, summary)
    _sdk_worker(ax_spy, summary)
    ax_unused.axis("off")
    fig.suptitle(
        f"Beam {machine.get('apache_beam')} on a local Flink {flink.get('flink_version')} ({flink.get('beam_java_runner_version')} "
        f"job server) vs the plain consumer; {machine.get('nproc')} cores ({machine.get('cpu_model')}), shared with the "
        f"emulator and the benchmark, {machine.get('date')}" + ("  [--quick]" if quick else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _throughput(ax, summary: Summary) -> None:
    s = summary.figures
    plain = s.plain_drain_events_per_sec
    earlier = s.direct_runner_streaming_from not in (None, "this run")
    _bars(
        ax,
        [
            ("Flink streaming\n(drain, median)", s.flink_drain_events_per_sec, "#c44e52"),
            ("plain consumer\n(drain)", plain, "#8172b2"),
            ("plain consumer\n(as streaming\nsection)", s.plain_sustained_events_per_sec, "#b3a9d4"),
            (
                "DirectRunner\nstreaming" + ("\n(earlier run)" if earlier else ""),
                s.direct_runner_streaming_events_per_sec,
                "#dd8452",
            ),
        ],
        "Streaming throughput, fraud (events/s)",
        "events/s",
    )
    if plain:
        ax.axhline(2.5 * plain, color="black", linestyle="--", linewidth=1, label="target: 2.5x plain consumer (drain)")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_ylim(0, max(2.5 * plain, s.flink_drain_events_per_sec or 0) * 1.2)


def _p50_p99_bars(ax, systems, target_ms: float, target_label: str) -> None:
    """Side by side p50 and p99 bars per (name, p50, p99), with a target line."""
    systems = [x for x in systems if x[1] is not None]
    width = 0.38
    for i, (name, color) in enumerate((("p50", "#4c72b0"), ("p99", "#dd8452"))):
        xs = [j + (i - 0.5) * width for j in range(len(systems))]
        values = [x[1 + i] for x in systems]
        ax.bar(xs, values, width, label=name, color=color)
        for x, value in zip(xs, values):
            ax.text(x, value * 1.01, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(target_ms, color="black", linestyle="--", linewidth=1, label=target_label)
    ax.set_xticks(range(len(systems)), [x[0] for x in systems], fontsize=8)
    ax.set_ylabel("publish -> prediction, ms")
    ax.legend(fontsize=8)


def _latency(ax, summary: Summary) -> None:
    s = summary.figures
    systems = [
        ("Flink\nreceived", s.flink_p50_ms, s.flink_p99_ms),
        ("Flink\nto publish", s.flink_p50_ms_to_output_publish, s.flink_p99_ms_to_output_publish),
        ("plain\nreceived", s.plain_p50_ms, s.plain_p99_ms),
        ("plain\nto publish", s.plain_p50_ms_to_output_publish, s.plain_p99_ms_to_output_publish),
    ]
    if s.direct_runner_streaming_p50_ms:
        systems.append(("DirectRunner\nreceived", s.direct_runner_streaming_p50_ms, s.direct_runner_streaming_p99_ms))
    _p50_p99_bars(ax, systems, 500, "target p99 < 500 ms (to publish)")
    ax.set_title(
        f"Publish -> prediction latency, each at half its max rate (Flink "
        f"{_label(s.flink_latency_rate_per_sec)}/s, plain {_label(s.plain_latency_rate_per_sec)}/s)",
        fontsize=9,
    )


def _light_load(ax, summary: Summary) -> None:
    s = summary.figures
    systems = [
        ("Flink\nreceived", s.flink_light_p50_ms, s.flink_light_p99_ms),
        ("plain\nreceived", s.plain_light_p50_ms, s.plain_light_p99_ms),
    ]
    target = 1.5 * s.plain_light_p99_ms if s.plain_light_p99_ms else 0
    _p50_p99_bars(ax, systems, target, "target: Flink p99 within 1.5x the plain consumer's")
    ax.set_title(f"Latency at light load, {_label(s.light_load_rate_per_sec)} events/s", fontsize=9)


def _scale_out(ax, summary: Summary) -> None:
    rows = [row for row in summary.scale_out if row.drain_events_per_sec]
    if not rows:
        ax.set_title("Scale-out (not measured in this run)", fontsize=10)
        return
    xs = range(len(rows))
    ax.bar(xs, [row.drain_events_per_sec for row in rows], color="#c44e52", label="drain events/s")
    for x, row in zip(xs, rows):
        ax.text(x, row.drain_events_per_sec * 1.01, f"{row.drain_events_per_sec:,.0f}", ha="center", va="bottom")
    ax.set_xticks(list(xs), [f"parallelism {row.parallelism}" for row in rows], fontsize=8)
    ax.set_ylabel("drain events/s")
    twin = ax.twinx()
    twin.plot(list(xs), [row.sdk_and_taskmanager_us_per_event for row in rows], "o-", color="#4c72b0")
    twin.set_ylabel("us of CPU per event, SDK workers + TaskManagers", color="#4c72b0")
    ax.set_title("Scale-out: two TaskManagers of two slots, on this machine's cores", fontsize=10)


def _backfill(ax, summary: Summary) -> None:
    s = summary.figures
    _bars(
        ax,
        [
            ("Flink\nend to end", s.backfill_flink_end_to_end_events_per_sec, "#c44e52"),
            ("DirectRunner\nend to end", s.backfill_direct_end_to_end_events_per_sec, "#55a868"),
            ("Flink\nsteady", s.backfill_flink_steady_events_per_sec, "#e8a0a2"),
            ("DirectRunner\nsteady", s.backfill_direct_steady_events_per_sec, "#8fd19e"),
            ("Flink p=2\nend to end", s.backfill_flink_parallelism_2_end_to_end_events_per_sec, "#8c2d30"),
        ],
        f"Backfill, fraud, N={_label(s.backfill_n)} (events/s, medians)",
        "events/s",
    )


def _settings(ax, summary: Summary) -> None:
    per_config = summary.per_config
    names = [n for n in per_config if per_config[n].drain_events_per_sec]
    if not names:
        return
    xs = range(len(names))
    ax.bar(xs, [per_config[n].drain_events_per_sec for n in names], color="#c44e52", label="drain events/s")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("drain events/s")
    twin = ax.twinx()
    twin.plot(list(xs), [per_config[n].p99_ms_to_output_publish for n in names], "o", color="#dd8452", label="p99 ms")
    twin.plot(list(xs), [per_config[n].p50_ms_to_output_publish for n in names], "s", color="#4c72b0", label="p50 ms")
    twin.axhline(500, color="black", linestyle=":", linewidth=1)
    twin.set_ylabel("latency at half its rate, to publish, ms")
    twin.legend(fontsize=8, loc="upper right")
    ax.set_title("Flink settings: drain throughput and latency", fontsize=10)


def _cpu(ax, summary: Summary) -> None:
    bd = summary.breakdown
    keys = sorted(set((bd.flink_cpu_us_per_event or {}) | (bd.plain_cpu_us_per_event or {})))
    for label, per_event, offset, color in (
        ("Flink", bd.flink_cpu_us_per_event, -0.2, "#c44e52"),
        ("plain consumer", bd.plain_cpu_us_per_event, 0.2, "#8172b2"),
    ):
        if per_event:
            ax.barh(
                [i + offset for i in range(len(keys))],
                [per_event.get(k, 0) for k in keys],
                0.4,
                label=f"{label} ({sum(per_event.values()):,.0f} us/event)",
                color=color,
            )
            ax.set_yticks(range(len(keys)), keys, fontsize=8)
    ax.set_xlabel("CPU us per event during a drain")
    ax.set_title("Where the CPU goes (per process group)", fontsize=10)
    if bd.flink_cpu_us_per_event:
        ax.legend(fontsize=8)


def _sdk_worker(ax, summary: Summary) -> None:
    share = summary.breakdown.sdk_worker_bundle_thread_share or {}
    if share:
        keys = list(share)
        ax.barh(range(len(keys)), [share[k] * 100 for k in keys], color="#4c72b0")
        ax.set_yticks(range(len(keys)), [k.replace(" (", "\n(") for k in keys], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("% of the SDK worker's bundle thread (wall time, py-spy)")
    ax.set_title("SDK worker: where a drain's wall time goes", fontsize=10)
