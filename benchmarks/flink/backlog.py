"""Backlog drains, for Flink and the plain consumer alike: a backlog waiting in the input subscription before the
system starts, every output kept with the emulator's publish stamp, and the drain's throughput and latency."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from benchmarks.common import log, percentile
from benchmarks.flink.cpu import CpuMeter, busiest
from benchmarks.streaming import PlainConsumerRun, latency_phase, latency_stats, unique_inputs, wait_for_outputs
from localdev.streaming import Collector, StreamingRun, dead_letter_body, json_body
from localdev.traffic import Message


class Output(NamedTuple):
    """One output message as the benchmark received it; duck-types localdev.streaming.Received."""

    body: dict
    attributes: dict[str, str]
    received_at: float  # time.time() when pulled
    publish_time: float  # when the system under test published it (the emulator's stamp, ms)

    @property
    def latency_secs(self) -> float | None:
        published_at = self.attributes.get("published_at")
        return self.received_at - int(published_at) / 1000 if published_at else None

    @property
    def pipeline_latency_secs(self) -> float | None:
        """Publish of the event -> publish of its output: the consumer of the outputs left out."""
        published_at = self.attributes.get("published_at")
        return self.publish_time - int(published_at) / 1000 if published_at else None


class StampedCollector(Collector):
    """Keeps every message of a subscription, with its publish time: StreamingRun's collector (streaming pull) plus
    the emulator's publish stamp of each output.

    A streaming-pull collector receives at most about 2,000 messages/s on this machine (measured alone), less than
    a system under test may publish; the publish stamps make the throughput figures independent of it."""

    def _record(self, message) -> Output:
        attributes = dict(message.attributes)
        try:
            body = self._decode(message.data, attributes)
        except ValueError:
            body = None
        return Output(body, attributes, time.time(), message.publish_time.timestamp())


class _BacklogRun:
    """StreamingRun mixin for the measured runs: a backlog waiting before the process starts, and StampedCollectors.

    StreamingRun.start() creates the topics and subscriptions, then asks `command()` for the process to start. In
    between, this creates the collectors' own subscriptions and publishes the backlog, so the backlog is waiting
    when the reader starts (its drain is measured alone, no publisher competing for the cores) and no output can
    be missed. After start(), StreamingRun's collectors are closed and their subscriptions deleted: the emulator
    keeps a closed streaming pull as a subscriber and would hand it half of the messages."""

    def __init__(self, *args, backlog: Sequence[Message] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.backlog = list(backlog)
        self.backlog_publish_secs: float | None = None
        self.backlog_published_at: float | None = None  # time.time() when the last publish was confirmed
        self._prepared = False

    def _observers(self) -> list[str]:
        return [self.predictions_topic, self.dead_letters_topic]

    def command(self) -> list[str]:
        if not self._prepared:
            self._prepared = True
            for topic in self._observers():
                self.emulator.create_subscription(topic, f"{topic}-stamped")
            if self.backlog:
                self._publish_backlog()
        return super().command()

    def start(self):
        from google.cloud import pubsub_v1

        super().start()
        for collector in self._collectors:
            collector.close()
        with pubsub_v1.SubscriberClient() as subscriber:
            for topic in self._observers():
                subscriber.delete_subscription(
                    request={"subscription": self.emulator.subscription_path(f"{topic}-observer")}
                )
        self._collectors = [
            StampedCollector(self.emulator.subscription_path(f"{topic}-stamped"), decode=decode)
            for topic, decode in zip(self._observers(), (json_body, dead_letter_body))
        ]
        return self

    def _publish_backlog(self) -> None:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        topic = self.emulator.topic_path(self.events_topic)
        t0 = time.time()
        futures = [
            publisher.publish(topic, m.payload, **{**m.attributes, "published_at": str(int(time.time() * 1000))})
            for m in self.backlog
        ]
        for future in futures:
            future.result(timeout=120)
        self.backlog_published_at = time.time()
        self.backlog_publish_secs = self.backlog_published_at - t0
        publisher.stop()


class FlinkBacklogRun(_BacklogRun, StreamingRun):
    pass


class PlainBacklogRun(_BacklogRun, PlainConsumerRun):
    pass


def wait_for_drain(
    run: StreamingRun,
    label: str,
    meter: CpuMeter,
    started: float,
    ready_timeout_secs: float,
    on_ready: Callable[[float], None] | None = None,
) -> float | None:
    """Until the backlog's outputs are out (or stall, or time runs out); `meter` runs from now (`drain_cpu` takes
    the drain's window out of it), and `on_ready` gets the seconds from `started` to the first output. Returns
    those seconds, None when nothing came out."""
    ready: dict = {}
    meter.start()

    def on_first():
        ready["secs"] = time.monotonic() - started
        if on_ready:
            on_ready(ready["secs"])

    n = len(run.backlog)
    wait_for_outputs(
        run,
        f"{label} drain",
        n,
        stall_secs=30,
        max_secs=ready_timeout_secs + max(60.0, n / 50),
        on_first=on_first,
        poll_secs=0.05,
    )
    return ready.get("secs")


def drain_cpu(run: StreamingRun, meter: CpuMeter) -> dict:
    """The CPU of each component between the drain's first and last output as Pub/Sub stamped them (the
    collectors receive them later, and the time until then is mostly idle), from a stopped meter."""
    figures = meter.stop()
    stamps = [r.publish_time for r in [*run.predictions, *run.dead_letters]]
    window = meter.between(min(stamps), max(stamps)) if len(stamps) >= 2 else None
    return window or figures


def drain_figures(run: StreamingRun) -> dict:
    """What came out of a backlog drain: counts, the rates (`drain_stats`), the latency under the backlog."""
    predictions, dead = run.predictions, run.dead_letters
    outputs = [*predictions, *dead]
    drain = drain_stats(outputs, len(run.backlog))
    drain.update(
        backlog_publish_secs=run.backlog_publish_secs,
        prepublished=bool(outputs) and min(r.received_at for r in outputs) > (run.backlog_published_at or 0),
        predictions=len(predictions),
        dead_letters=len(dead),
        unique_inputs_out=unique_inputs(predictions, dead),
        latency_under_backlog=without_latencies(latency_stats(predictions)),
    )
    return drain


def log_drain(label: str, drain: dict, n: int, cpu: dict | None, extra: str = "") -> None:
    """One progress line for a drain: its rates and, where measured, the cores each component kept busy."""
    log(
        f"{label}: drained {drain['outputs']:,}/{n:,} at {num(drain.get('events_per_sec'))} events/s "
        f"(middle 80% {num(drain.get('events_per_sec_middle_80pct'))}/s, as received "
        f"{num(drain.get('received_events_per_sec'))}/s{extra})"
        + (f"; {cpu['cores_busy_total']:.2f} cores busy: " + busiest(cpu["cores_busy"]) if cpu else "")
    )


def latency_after_drain(run: StreamingRun, label: str, rate: float, secs: float, seed: int) -> dict:
    """`streaming.latency_phase` at `rate` on the same run, plus latency to each prediction's publish."""
    base = len(run.predictions)
    latency = latency_phase(run, label, rate, secs, seed)
    latency["to_output_publish"] = pipeline_latency(run.predictions[base:])
    return latency


def rates(times: Sequence[float]) -> dict:
    """(n - 1) / (last - first), and the same between the 10th and 90th percentile."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return {}
    lo, hi = int(0.1 * (len(times) - 1)), int(0.9 * (len(times) - 1))
    return {
        "secs": times[-1] - times[0],
        "events_per_sec": (len(times) - 1) / (times[-1] - times[0]),
        "events_per_sec_middle_80pct": (hi - lo) / (times[hi] - times[lo]) if times[hi] > times[lo] else None,
    }


def drain_stats(outputs: Sequence[Output], n_expected: int) -> dict:
    result: dict = {"outputs": len(outputs), "expected": n_expected}
    # When the outputs reached Pub/Sub (the emulator's publish time): the system's own rate, whoever reads them.
    published = rates([r.publish_time for r in outputs])
    received = rates([r.received_at for r in outputs])
    result["first_to_last_output_secs"] = published.get("secs")
    result["events_per_sec"] = published.get("events_per_sec")
    result["events_per_sec_middle_80pct"] = published.get("events_per_sec_middle_80pct")
    result["received_events_per_sec"] = received.get("events_per_sec")
    scored = sorted(int(parse_rfc3339_ms(r.attributes["scored_at"])) for r in outputs if r.attributes.get("scored_at"))
    if len(scored) >= 2 and scored[-1] > scored[0]:
        # Pipeline-side: predictions stamped with the batch's scoring time (ms), the collectors left out.
        result["scored_at_events_per_sec"] = (len(scored) - 1) / ((scored[-1] - scored[0]) / 1000)
    return result


def parse_rfc3339_ms(value: str) -> float:
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.timestamp() * 1000


def pipeline_latency(outputs: Sequence[Output]) -> dict:
    """Event published -> its output published (the emulator's stamp): latency without the output's consumer."""
    values = [o.pipeline_latency_secs for o in outputs if getattr(o, "pipeline_latency_secs", None) is not None]
    return {
        "count": len(values),
        **{f"p{q}_ms": None if not values else percentile(values, q) * 1000 for q in (50, 90, 99)},
    }


def without_latencies(d: dict) -> dict:
    """A copy without the raw latency lists (kept in the JSON, too long for logs)."""
    return {k: v for k, v in d.items() if k != "latencies_ms"}


def num(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)
