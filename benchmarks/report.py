"""Turns the raw results into the summary figures, results.png and the table printed at the end."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import ratio
from benchmarks.records import load
from benchmarks.sections import Results

TARGET_EVENTS_PER_SEC = 10_000


def summarize(results: dict) -> dict:
    """Flat headline figures and ratios from the raw sections (missing sections give None)."""
    sections = load(Results, results)
    s: dict = {}
    for model in ("fraud", "price"):
        ceiling, suite = sections.ceiling_of(model), sections.backfill.suite(model)
        for batch in ("1", "32", "256"):
            s[f"ceiling_{model}_b{batch}_events_per_sec"] = ceiling.batch(batch).events_per_sec
        s[f"ceiling_{model}_b256_median_latency_ms"] = ceiling.batch("256").median_latency_ms
        s[f"backfill_{model}_end_to_end_events_per_sec"] = suite.end_to_end_events_per_sec
        s[f"backfill_{model}_steady_events_per_sec"] = suite.steady_events_per_sec
        s[f"backfill_{model}_fixed_secs"] = suite.fixed_secs
        s[f"backfill_{model}_n_big"] = suite.n_big
        # Per-event cost: the project's own work measured outside Beam, against the pipeline's steady state.
        outside = ceiling.outside_beam_us
        steady = s[f"backfill_{model}_steady_events_per_sec"]
        s[f"{model}_us_per_event_outside_beam"] = outside
        s[f"backfill_{model}_us_per_event_steady"] = 1e6 / steady if steady else None
        s[f"backfill_{model}_us_per_event_runner_overhead"] = (
            1e6 / steady - outside if steady and outside is not None else None
        )
    for name in ("multi_processing_2", "multi_threading_2"):
        variant = sections.backfill.variant(name)
        s[f"backfill_fraud_{name}_events_per_sec"] = variant.events_per_sec
        s[f"backfill_fraud_{name}_steady_events_per_sec"] = variant.steady_events_per_sec
        s[f"backfill_fraud_{name}_fixed_secs"] = variant.fixed_secs
    s["backfill_fraud_large_events_per_sec"] = sections.backfill.large.events_per_sec
    s["backfill_fraud_large_n"] = sections.backfill.large.n_events
    for system in ("beam_direct_runner", "plain_consumer"):
        measured = sections.streaming.system(system)
        s[f"streaming_{system}_events_per_sec"] = measured.sustained.events_per_sec
        s[f"streaming_{system}_p50_ms"] = measured.latency.p50_ms
        s[f"streaming_{system}_p99_ms"] = measured.latency.p99_ms
        s[f"streaming_{system}_latency_rate_per_sec"] = measured.latency.rate_per_sec
    at_beam_rate = sections.streaming.plain_consumer.latency_at_other_rate
    s["streaming_plain_consumer_p50_ms_at_beam_rate"] = at_beam_rate.p50_ms
    s["streaming_plain_consumer_p99_ms_at_beam_rate"] = at_beam_rate.p99_ms

    r: dict = {}
    for model in ("fraud", "price"):
        ceiling = s[f"ceiling_{model}_b256_events_per_sec"]
        r[f"backfill_{model}_end_to_end_over_ceiling"] = ratio(
            s[f"backfill_{model}_end_to_end_events_per_sec"], ceiling
        )
        r[f"backfill_{model}_steady_over_ceiling"] = ratio(s[f"backfill_{model}_steady_events_per_sec"], ceiling)
    for name in ("multi_processing_2", "multi_threading_2"):
        r[f"backfill_fraud_{name}_over_default"] = ratio(
            s[f"backfill_fraud_{name}_events_per_sec"], s["backfill_fraud_end_to_end_events_per_sec"]
        )
    beam, plain = "streaming_beam_direct_runner", "streaming_plain_consumer"
    r["streaming_beam_over_plain_consumer_throughput"] = ratio(
        s[f"{beam}_events_per_sec"], s[f"{plain}_events_per_sec"]
    )
    r["streaming_beam_over_plain_consumer_p50"] = ratio(s[f"{beam}_p50_ms"], s[f"{plain}_p50_ms"])
    r["streaming_beam_over_plain_consumer_p99"] = ratio(s[f"{beam}_p99_ms"], s[f"{plain}_p99_ms"])
    r["streaming_beam_over_plain_consumer_p50_same_rate"] = ratio(
        s[f"{beam}_p50_ms"], s[f"{plain}_p50_ms_at_beam_rate"]
    )
    r["streaming_beam_over_plain_consumer_p99_same_rate"] = ratio(
        s[f"{beam}_p99_ms"], s[f"{plain}_p99_ms_at_beam_rate"]
    )
    r["streaming_beam_over_backfill_steady"] = ratio(
        s[f"{beam}_events_per_sec"], s["backfill_fraud_steady_events_per_sec"]
    )
    r["plain_consumer_over_ceiling"] = ratio(s[f"{plain}_events_per_sec"], s["ceiling_fraud_b256_events_per_sec"])

    e2e, steady = s["backfill_fraud_end_to_end_events_per_sec"], s["backfill_fraud_steady_events_per_sec"]
    target = {
        "what": f"fraud backfill >= {TARGET_EVENTS_PER_SEC:,} events/s on the DirectRunner",
        "events_per_sec": TARGET_EVENTS_PER_SEC,
        "end_to_end_events_per_sec": e2e,
        "met_end_to_end": None if e2e is None else e2e >= TARGET_EVENTS_PER_SEC,
        "steady_events_per_sec": steady,
        "met_steady_state": None if steady is None else steady >= TARGET_EVENTS_PER_SEC,
        "large_backfill_events_per_sec": s["backfill_fraud_large_events_per_sec"],
        "met_large_backfill_end_to_end": (
            None
            if s["backfill_fraud_large_events_per_sec"] is None
            else s["backfill_fraud_large_events_per_sec"] >= TARGET_EVENTS_PER_SEC
        ),
    }
    return {"figures": s, "ratios": r, "target": target}


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if unit == "x":
        return f"{value:.3g}x"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}"


def table(results: dict) -> str:
    s, r, t = results["summary"]["figures"], results["summary"]["ratios"], results["summary"]["target"]

    def per_model(label: str, figures: dict, key: str, unit: str = "") -> tuple[str, str, str]:
        """A row with one value per model: `key` names the figure with {m} where the model's name goes."""
        return label, _fmt(figures[key.format(m="fraud")], unit), _fmt(figures[key.format(m="price")], unit)

    n_big = s["backfill_fraud_n_big"] or s["backfill_price_n_big"]
    large_backfill = f"large backfill, N={_fmt(s['backfill_fraud_large_n'])}, 2 worker processes, end to end (events/s)"
    rows = [
        ("figure", "fraud", "price"),
        per_model("signature ceiling, batch 1 (events/s)", s, "ceiling_{m}_b1_events_per_sec"),
        per_model("signature ceiling, batch 32 (events/s)", s, "ceiling_{m}_b32_events_per_sec"),
        per_model("signature ceiling, batch 256 (events/s)", s, "ceiling_{m}_b256_events_per_sec"),
        per_model(f"backfill end to end, N={_fmt(n_big)} (events/s)", s, "backfill_{m}_end_to_end_events_per_sec"),
        per_model("backfill steady state (events/s)", s, "backfill_{m}_steady_events_per_sec"),
        (large_backfill, _fmt(s["backfill_fraud_large_events_per_sec"]), "-"),
        per_model("backfill fixed cost (s)", s, "backfill_{m}_fixed_secs"),
        per_model("per event: pipeline steady state (us)", s, "backfill_{m}_us_per_event_steady"),
        per_model("per event: project code outside Beam (us)", s, "{m}_us_per_event_outside_beam"),
        per_model("per event: the rest, Beam runner + IO (us)", s, "backfill_{m}_us_per_event_runner_overhead"),
        per_model("backfill / ceiling (end to end)", r, "backfill_{m}_end_to_end_over_ceiling", "x"),
        per_model("backfill / ceiling (steady)", r, "backfill_{m}_steady_over_ceiling", "x"),
    ]
    for name, label in (("multi_processing_2", "multi_processing"), ("multi_threading_2", "multi_threading")):
        rows.append(
            (
                f"backfill, 2 workers {label}: e2e / steady* (events/s)",
                f"{_fmt(s[f'backfill_fraud_{name}_events_per_sec'])} / {_fmt(s[f'backfill_fraud_{name}_steady_events_per_sec'])}",
                "",
            )
        )
        rows.append((f"backfill, 2 workers {label}: fixed cost (s)", _fmt(s[f"backfill_fraud_{name}_fixed_secs"]), ""))
    for system, name in (
        ("beam_direct_runner", "Beam streaming (DirectRunner)"),
        ("plain_consumer", "plain Pub/Sub consumer"),
    ):
        rows.append((f"{name}: sustained (events/s)", _fmt(s[f"streaming_{system}_events_per_sec"]), ""))
        rows.append(
            (
                f"{name}: p50 / p99 at {_fmt(s[f'streaming_{system}_latency_rate_per_sec'])}/s (ms)",
                f"{_fmt(s[f'streaming_{system}_p50_ms'])} / {_fmt(s[f'streaming_{system}_p99_ms'])}",
                "",
            )
        )
    rows.append(
        (
            f"plain Pub/Sub consumer: p50 / p99 at {_fmt(s['streaming_beam_direct_runner_latency_rate_per_sec'])}/s (ms)",
            f"{_fmt(s['streaming_plain_consumer_p50_ms_at_beam_rate'])} / {_fmt(s['streaming_plain_consumer_p99_ms_at_beam_rate'])}",
            "",
        )
    )
    rows.append(
        (
            "streaming Beam / plain consumer (throughput)",
            _fmt(r["streaming_beam_over_plain_consumer_throughput"], "x"),
            "",
        )
    )
    rows.append(
        (
            "streaming Beam / plain consumer (p50, p99; each at half its rate)",
            f"{_fmt(r['streaming_beam_over_plain_consumer_p50'], 'x')}, {_fmt(r['streaming_beam_over_plain_consumer_p99'], 'x')}",
            "",
        )
    )
    rows.append(
        (
            "streaming Beam / plain consumer (p50, p99; same rate)",
            f"{_fmt(r['streaming_beam_over_plain_consumer_p50_same_rate'], 'x')}, "
            f"{_fmt(r['streaming_beam_over_plain_consumer_p99_same_rate'], 'x')}",
            "",
        )
    )
    rows.append(("plain consumer / ceiling", _fmt(r["plain_consumer_over_ceiling"], "x"), ""))
    rows.append(
        (
            f"target >= {TARGET_EVENTS_PER_SEC:,}/s met: end to end, steady",
            f"{_fmt(t['met_end_to_end'])}, {_fmt(t['met_steady_state'])}",
            "",
        )
    )
    rows.append(("* variants: one sample each; their fixed cost varies (worker start, TF imports in parallel)", "", ""))
    widths = [max(len(row[i]) for row in rows[:-1]) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            lines.append(row[0])
            break
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}".rstrip())
        if i == 0:
            lines.append("-" * (sum(widths) + 4))
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]["figures"]
    bars = [
        ("ceiling b256\nfraud", s["ceiling_fraud_b256_events_per_sec"], "#4c72b0"),
        ("ceiling b256\nprice", s["ceiling_price_b256_events_per_sec"], "#4c72b0"),
        ("backfill e2e\nfraud", s["backfill_fraud_end_to_end_events_per_sec"], "#55a868"),
        ("backfill steady\nfraud", s["backfill_fraud_steady_events_per_sec"], "#55a868"),
        ("backfill e2e\nprice", s["backfill_price_end_to_end_events_per_sec"], "#8fd19e"),
        ("backfill steady\nprice", s["backfill_price_steady_events_per_sec"], "#8fd19e"),
        ("backfill fraud\n2 procs, e2e", s["backfill_fraud_multi_processing_2_events_per_sec"], "#c4ad66"),
        ("backfill fraud\n2 threads, e2e", s["backfill_fraud_multi_threading_2_events_per_sec"], "#c4ad66"),
        ("streaming\nBeam Direct", s["streaming_beam_direct_runner_events_per_sec"], "#c44e52"),
        ("streaming\nplain consumer", s["streaming_plain_consumer_events_per_sec"], "#8172b2"),
    ]
    bars = [b for b in bars if b[1]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2.2, 1]})
    if bars:
        xs = range(len(bars))
        ax1.bar(xs, [b[1] for b in bars], color=[b[2] for b in bars])
        for x, (_, value, _) in zip(xs, bars):
            ax1.text(x, value * 1.08, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
        ax1.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylim(10, max([b[1] for b in bars] + [TARGET_EVENTS_PER_SEC]) * 2.5)
    ax1.axhline(
        TARGET_EVENTS_PER_SEC, color="black", linestyle="--", linewidth=1, label=f"target {TARGET_EVENTS_PER_SEC:,}/s"
    )
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_ylabel("events/s (log scale)")
    ax1.set_title("Throughput (medians)")

    systems = [("Beam streaming\n(DirectRunner)", "beam_direct_runner"), ("plain Pub/Sub\nconsumer", "plain_consumer")]
    systems = [
        (f"{label}\nat {s[f'streaming_{key}_latency_rate_per_sec']:,.0f} events/s", f"streaming_{key}_{{q}}_ms")
        for label, key in systems
        if s[f"streaming_{key}_p50_ms"] is not None
    ]
    if s["streaming_plain_consumer_p50_ms_at_beam_rate"] is not None:
        systems.append(
            (
                f"plain Pub/Sub\nconsumer\nat {s['streaming_beam_direct_runner_latency_rate_per_sec']:,.0f} events/s",
                "streaming_plain_consumer_{q}_ms_at_beam_rate",
            )
        )
    width = 0.38
    for i, (quantile, color) in enumerate((("p50", "#4c72b0"), ("p99", "#dd8452"))):
        values = [s[key.format(q=quantile)] for _, key in systems]
        positions = [j + (i - 0.5) * width for j in range(len(systems))]
        ax2.bar(positions, values, width, label=quantile, color=color)
        for x, value in zip(positions, values):
            ax2.text(x, value * 1.01, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(range(len(systems)), [label for label, _ in systems], fontsize=8)
    ax2.set_ylabel("publish-to-prediction latency, ms")
    ax2.set_title("Publish-to-prediction latency below capacity")
    if systems:
        ax2.legend()
    machine = results.get("machine", {})
    fig.suptitle(
        f"fraud/price scoring, {machine.get('nproc')} cores ({machine.get('cpu_model')}), Beam {machine.get('apache_beam')}, "
        f"TF {machine.get('tensorflow')}, {machine.get('date')}" + ("  [--quick]" if results.get("quick") else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
