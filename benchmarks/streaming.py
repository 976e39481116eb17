"""Streaming end to end through the Pub/Sub emulator: the Beam pipeline (DirectRunner) and the plain consumer.

Both are measured the same way, as separate processes reading the same kind of traffic from the same emulator:

1. readiness: one probe event is published and its output awaited (model load, pipeline start);
2. sustained throughput: N events published as fast as possible; throughput = outputs / (first publish -> last
   output), predictions and dead letters both counted;
3. latency: events published at a fixed rate below capacity (half the sustained rate) for a while;
   publish-to-prediction latency from the `published_at` attribute the outputs carry over, p50/p99. The plain
   consumer is also measured at the Beam pipeline's latency rate, so the two compare at equal load as well.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import log, percentile
from localdev.pubsub_emulator import PubsubEmulator
from localdev.streaming import PIPELINE_MODULES, Received, StreamingRun
from localdev.traffic import Message, make_traffic
from model_handlers.interface import MODELS
from plumbing.polling import PollTimeout, poll_until


class PlainConsumerRun(StreamingRun):
    """StreamingRun's topics, subscriptions and collectors, with `benchmarks.plain_consumer` as the process."""

    def command(self) -> list[str]:
        em = self.emulator
        return [
            sys.executable,
            "-m",
            "benchmarks.plain_consumer",
            f"--model={self.model}",
            f"--input_subscription={em.subscription_path(self.input_subscription)}",
            f"--output_topic={em.topic_path(self.predictions_topic)}",
            f"--dead_letter_topic={em.topic_path(self.dead_letters_topic)}",
            f"--model_dir={self.model_dir}",
            *self.extra_args,
        ]


def wait_for_outputs(
    run: StreamingRun,
    label: str,
    n: int,
    *,
    stall_secs: float,
    max_secs: float,
    base: int = 0,
    on_first: Callable[[], None] | None = None,
    poll_secs: float = 0.1,
) -> None:
    """Until `n` outputs beyond `base`, no new output for `stall_secs`, or `max_secs`; progress every 5 s.

    With `on_first` (a backlog drain), it is called at the first output, and the stall clock starts there: a job
    that takes long to start is not stalled."""
    first_seen = on_first is None

    def done() -> bool | None:
        nonlocal first_seen
        count = run.outputs()
        if count > base and not first_seen:
            first_seen = True
            on_first()
        if count >= base + n:
            return True
        run.check_alive()
        return None

    try:
        poll_until(
            done,
            timeout=max_secs,
            interval=poll_secs,
            what=f"{n:,} outputs",
            progress=run.outputs,
            stall=stall_secs,
            stall_after_first_change=on_first is not None,
            report=lambda: log(f"{label}: {run.outputs() - base:,} of {n:,} outputs"),
        )
    except PollTimeout:
        log(f"{label}: stopped waiting at {run.outputs() - base:,} of {n:,} outputs")


def _phase_outputs(run: StreamingRun, base: tuple[int, int]) -> tuple[list[Received], list[Received]]:
    return run.predictions[base[0] :], run.dead_letters[base[1] :]


def latency_stats(predictions: Sequence[Received]) -> dict:
    latencies = [p.latency_secs for p in predictions if p.latency_secs is not None]
    return {
        "count": len(latencies),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p90_ms": _ms(percentile(latencies, 90)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies)) if latencies else None,
    }


def _ms(secs: float | None) -> float | None:
    return None if secs is None else secs * 1000


def unique_inputs(predictions: Sequence[Received], dead_letters: Sequence[Received]) -> int:
    seqs = {p.attributes.get("seq") for p in predictions}
    seqs |= {d.body.get("attributes", {}).get("seq") for d in dead_letters}
    seqs.discard(None)
    return len(seqs)


def measure(
    run: StreamingRun,
    label: str,
    sustained: Sequence[Message],
    latency_secs: float,
    ready_timeout_secs: float = 240,
    seed: int = 31,
    malformed_fraction: float = 0.03,
    extra_latency_rate: float | None = None,
    extra_latency_secs: float | None = None,
) -> dict:
    """Probe, sustained throughput, then latency at half the sustained rate (see the module's docstring), and
    at `extra_latency_rate` too when given."""
    interface = MODELS[run.model]
    started = time.monotonic()
    probe = make_traffic(interface, 1, malformed_fraction=0.0, seed=seed + 1)
    run.publish(probe)
    if not run.wait_for_outputs(1, ready_timeout_secs):
        raise RuntimeError(f"{label}: no output for the probe event after {ready_timeout_secs}s; log {run.log_path}")
    ready_secs = time.monotonic() - started
    log(f"{label}: ready ({ready_secs:.1f}s from start to the probe's output)")

    # --- sustained throughput --------------------------------------------------------------------------
    base = (len(run.predictions), len(run.dead_letters))
    first_publish = time.time()
    run.publish(sustained)
    publish_secs = time.time() - first_publish
    log(f"{label}: published {len(sustained):,} events in {publish_secs:.2f}s, waiting for outputs")
    wait_for_outputs(
        run,
        f"{label} sustained",
        len(sustained),
        base=sum(base),
        stall_secs=30,
        max_secs=max(60.0, len(sustained) / 15),
    )
    predictions, dead = _phase_outputs(run, base)
    outputs = len(predictions) + len(dead)
    last_output = max((r.received_at for r in (*predictions, *dead)), default=first_publish)
    throughput = outputs / (last_output - first_publish) if outputs and last_output > first_publish else None
    sustained_result = {
        "events": len(sustained),
        "malformed": sum(1 for m in sustained if m.malformed),
        "publish_secs": publish_secs,
        "publish_rate": len(sustained) / publish_secs if publish_secs else None,
        "predictions": len(predictions),
        "dead_letters": len(dead),
        "outputs": outputs,
        "unique_inputs_out": unique_inputs(predictions, dead),
        "first_publish_to_last_output_secs": last_output - first_publish,
        "events_per_sec": throughput,
        "latency_under_overload": latency_stats(predictions),
        "latencies_ms": [round(p.latency_secs * 1000, 2) for p in predictions if p.latency_secs is not None],
    }
    log(
        f"{label}: sustained {outputs:,}/{len(sustained):,} outputs, "
        + (f"{throughput:,.0f} events/s" if throughput else "no throughput")
    )

    # --- latency below capacity ------------------------------------------------------------------------
    rate = max(1.0, (throughput or 2.0) / 2)
    latency_result = latency_phase(run, label, rate, latency_secs, seed + 2, malformed_fraction)
    result = {"ready_secs": ready_secs, "sustained": sustained_result, "latency": latency_result}
    if extra_latency_rate:
        # The same rate as another system's latency phase, so that latencies compare at equal load too.
        result["latency_at_other_rate"] = latency_phase(
            run, label, extra_latency_rate, extra_latency_secs or latency_secs, seed + 3, malformed_fraction
        )
    return result


def latency_phase(
    run: StreamingRun, label: str, rate: float, secs: float, seed: int, malformed_fraction: float = 0.03
) -> dict:
    """Publishes at `rate` for `secs`; publish-to-prediction latency stats of what comes out."""
    n = max(10, int(rate * secs))
    traffic = make_traffic(MODELS[run.model], n, malformed_fraction=malformed_fraction, seed=seed)
    base = (len(run.predictions), len(run.dead_letters))
    log(f"{label}: latency phase, {n:,} events at {rate:,.0f}/s ({secs:.0f}s)")
    t0 = time.time()
    run.publish(traffic, rate_per_sec=rate)
    publish_secs = time.time() - t0
    wait_for_outputs(run, f"{label} latency", n, base=sum(base), stall_secs=30, max_secs=60 + n / max(rate, 1))
    predictions, dead = _phase_outputs(run, base)
    result = {
        "rate_per_sec": rate,
        "secs": secs,
        "events": n,
        "publish_secs": publish_secs,
        "achieved_publish_rate": n / publish_secs if publish_secs else None,
        "predictions": len(predictions),
        "dead_letters": len(dead),
        "outputs": len(predictions) + len(dead),
        **latency_stats(predictions),
        "latencies_ms": [round(p.latency_secs * 1000, 2) for p in predictions if p.latency_secs is not None],
    }
    log(
        f"{label}: at {rate:,.0f}/s latency p50 {_num(result['p50_ms'])} ms, p99 {_num(result['p99_ms'])} ms "
        f"over {result['count']:,} predictions"
    )
    return result


def _num(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def run_streaming(
    model_dir: str,
    workdir: Path,
    beam_events: int,
    plain_events: int,
    latency_secs: float,
    model: str = "fraud",
    results: dict | None = None,
) -> dict:
    """Both systems against one emulator, one after the other; everything started here stops on the way out.

    Fills and returns `results` (a new dict when None) as each system finishes.
    """
    interface = MODELS[model]
    traffic = make_traffic(interface, max(beam_events, plain_events), malformed_fraction=0.03, seed=21)
    results = {} if results is None else results
    results["model"] = model
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    with PubsubEmulator(project="bench-project", log_path=str(workdir / "logs" / "emulator.log")) as emulator:
        log(f"Pub/Sub emulator up at {emulator.host}")
        with StreamingRun(emulator, model, model_dir, workdir / "logs", prefix="beam-") as run:
            log(f"streaming pipeline ({PIPELINE_MODULES[model]}, DirectRunner) starting; log {run.log_path}")
            results["beam_direct_runner"] = measure(run, "beam streaming", traffic[:beam_events], latency_secs)
        with PlainConsumerRun(emulator, model, model_dir, workdir / "logs", prefix="plain-") as run:
            log(f"plain consumer (benchmarks.plain_consumer) starting; log {run.log_path}")
            beam_rate = (results["beam_direct_runner"]["latency"] or {}).get("rate_per_sec")
            results["plain_consumer"] = measure(
                run,
                "plain consumer",
                traffic[:plain_events],
                latency_secs,
                extra_latency_rate=beam_rate,
                extra_latency_secs=latency_secs / 2,
            )
    return results
