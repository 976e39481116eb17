"""Runs a model's streaming pipeline as a real process against the Pub/Sub emulator, and watches what comes out.

Shared by the demo, the emulator integration tests and the benchmark, so all three exercise the same path a user
runs: `python -m pipelines.<module> --input_subscription=... --output_topic=... --dead_letter_topic=...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from localdev.pubsub_emulator import PubsubEmulator
from localdev.traffic import Message
from plumbing.polling import PollTimeout, poll_until
from plumbing.process import ManagedProcess

PIPELINE_MODULES = {"fraud": "pipelines.fraud_detection", "price": "pipelines.price_suggestion"}
STOP_GRACE_SECS = 15


class Received(NamedTuple):
    body: dict
    attributes: dict[str, str]
    received_at: float  # time.time()

    @property
    def latency_secs(self) -> float | None:
        published_at = self.attributes.get("published_at")
        return self.received_at - int(published_at) / 1000 if published_at else None


class PipelineDied(RuntimeError):
    pass


def json_body(data: bytes, _attributes: dict[str, str]) -> dict:
    return json.loads(data)


def dead_letter_body(data: bytes, attributes: dict[str, str]) -> dict:
    """A dead letter on Pub/Sub (the original message with the reason in attributes), as the JSON object a
    backfill writes: payload (base64), attributes, stage, error, error_type, event_id, model."""
    from transforms.dead_letter import dead_letter_record

    return dead_letter_record(data, attributes)


class Collector:
    """Streaming-pull subscriber that keeps every message it receives, as `_record` makes it: its body decoded by
    `decode` (JSON, or a dead letter read back as its JSON object form)."""

    def __init__(self, subscription_path: str, decode: Callable[[bytes, dict], dict] = json_body):
        from google.cloud import pubsub_v1

        from transforms.pubsub_clients import subscriber_client

        self._decode = decode
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        # The project's client: the official one's emulator channel cannot receive a message over 4 MiB.
        self._subscriber = subscriber_client(os.environ.get("PUBSUB_EMULATOR_HOST"))
        self._future = self._subscriber.subscribe(
            subscription_path, self._on_message, flow_control=pubsub_v1.types.FlowControl(max_messages=2000)
        )

    def _record(self, message):
        attributes = dict(message.attributes)
        return Received(self._decode(message.data, attributes), attributes, time.time())

    def _on_message(self, message) -> None:
        received = self._record(message)
        with self._lock:
            self.messages.append(received)
        message.ack()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._future.cancel()
        with contextlib.suppress(Exception):
            self._future.result(timeout=10)
        self._subscriber.close()


class StreamingRun(contextlib.AbstractContextManager):
    """One model's topics, subscriptions, pipeline process and output collectors."""

    def __init__(
        self,
        emulator: PubsubEmulator,
        model: str,
        model_dir: str | Path | None,
        log_dir: str | Path,
        extra_args: Sequence[str] = (),
        prefix: str = "",
        ack_deadline_secs: int = 60,
        comparisons: bool = False,
    ):
        self.emulator = emulator
        self.model = model
        self.model_dir = str(model_dir) if model_dir is not None else None  # None: the args say where the model is
        self.log_path = Path(log_dir) / f"{prefix}{model}-pipeline.log"
        self.extra_args = list(extra_args)
        self.ack_deadline_secs = ack_deadline_secs
        name = f"{prefix}{model}"
        self.events_topic, self.predictions_topic, self.dead_letters_topic = (
            f"{name}-events",
            f"{name}-predictions",
            f"{name}-dead-letters",
        )
        self.input_subscription = f"{name}-events-pipeline"
        # With a shadow: the topic its comparison records go to (--shadow_output), observed like the others.
        self.comparisons_topic = f"{name}-comparisons" if comparisons else None
        self._process: ManagedProcess | None = None
        self._collectors: list[Collector] = []
        self._publisher = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> StreamingRun:
        from google.cloud import pubsub_v1

        em = self.emulator
        for topic in (self.events_topic, self.predictions_topic, self.dead_letters_topic):
            em.create_topic(topic)
        em.create_subscription(self.events_topic, self.input_subscription, self.ack_deadline_secs)
        # Observer subscriptions exist before the pipeline starts, so nothing it publishes can be missed.
        em.create_subscription(self.predictions_topic, f"{self.predictions_topic}-observer")
        em.create_subscription(self.dead_letters_topic, f"{self.dead_letters_topic}-observer")
        if self.comparisons_topic:
            em.create_topic(self.comparisons_topic)
            em.create_subscription(self.comparisons_topic, f"{self.comparisons_topic}-observer")
        self._process = ManagedProcess(
            self.command(),
            self.log_path,
            name=f"the {self.model} pipeline",
            error=PipelineDied,
            env={**os.environ, "PUBSUB_EMULATOR_HOST": em.host},
        ).start()
        self._collectors = [
            Collector(em.subscription_path(f"{self.predictions_topic}-observer")),
            Collector(em.subscription_path(f"{self.dead_letters_topic}-observer"), decode=dead_letter_body),
        ]
        if self.comparisons_topic:
            self._collectors.append(Collector(em.subscription_path(f"{self.comparisons_topic}-observer")))
        self._publisher = pubsub_v1.PublisherClient()
        return self

    def command(self) -> list[str]:
        """The process that reads the events subscription and publishes to the two topics: the pipeline."""
        em = self.emulator
        return [
            sys.executable,
            "-m",
            PIPELINE_MODULES[self.model],
            f"--input_subscription={em.subscription_path(self.input_subscription)}",
            f"--output_topic={em.topic_path(self.predictions_topic)}",
            f"--dead_letter_topic={em.topic_path(self.dead_letters_topic)}",
            *([f"--model_dir={self.model_dir}"] if self.model_dir else []),
            *([f"--shadow_output={em.topic_path(self.comparisons_topic)}"] if self.comparisons_topic else []),
            *self.extra_args,
        ]

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=STOP_GRACE_SECS)
        for collector in self._collectors:
            collector.close()
        self._collectors = []

    def __enter__(self) -> StreamingRun:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- traffic ---------------------------------------------------------------------------------------
    def publish(self, messages: Sequence[Message], rate_per_sec: float | None = None) -> int:
        """Publishes in order, paced at `rate_per_sec` when given; stamps `published_at` (ms) on each."""
        topic = self.emulator.topic_path(self.events_topic)
        start, futures = time.monotonic(), []
        for i, message in enumerate(messages):
            if rate_per_sec:
                delay = start + i / rate_per_sec - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            attributes = {**message.attributes, "published_at": str(int(time.time() * 1000))}
            futures.append(self._publisher.publish(topic, message.payload, **attributes))
        for future in futures:
            future.result(timeout=60)
        return len(futures)

    def publish_and_collect(
        self, messages: Sequence[Message], timeout_secs: float, settle_secs: float = 3
    ) -> tuple[bool, list[Received], list[Received]]:
        """Publishes, waits for as many outputs as messages, then `settle_secs` more so that repeats show up too.
        Returns (whether all arrived in time, predictions, dead letters)."""
        self.publish(messages)
        arrived = self.wait_for_outputs(len(messages), timeout_secs=timeout_secs)
        time.sleep(settle_secs)
        return arrived, self.predictions, self.dead_letters

    def redelivered(self, timeout_secs: float = 5) -> int:
        """How many input messages Pub/Sub hands out again, pulled (and not acknowledged) by one pull of our own.
        With the pipeline stopped and an ack deadline past, these are the messages it never acknowledged."""
        from google.api_core.exceptions import DeadlineExceeded

        from transforms.pubsub_clients import subscriber_client

        subscriber = subscriber_client(self.emulator.host)
        try:
            response = subscriber.pull(
                request={
                    "subscription": self.emulator.subscription_path(self.input_subscription),
                    "max_messages": 1000,
                },
                timeout=timeout_secs,
            )
            return len(response.received_messages)
        except DeadlineExceeded:
            return 0
        finally:
            subscriber.close()

    @property
    def predictions(self) -> list[Received]:
        return self._collectors[0].snapshot()

    @property
    def dead_letters(self) -> list[Received]:
        return self._collectors[1].snapshot()

    @property
    def comparisons(self) -> list[Received]:
        """The shadow's comparison records (with `comparisons=True`)."""
        return self._collectors[2].snapshot()

    def outputs(self) -> int:
        return len(self._collectors[0].messages) + len(self._collectors[1].messages)

    def check_alive(self) -> None:
        if self._process is not None:
            self._process.raise_if_exited()

    def wait_for_outputs(
        self, expected: int, timeout_secs: float, on_progress: Callable[[], None] | None = None, every_secs: float = 5
    ) -> bool:
        """Waits until `expected` predictions plus dead letters have arrived; False on timeout."""

        def arrived() -> bool | None:
            if self.outputs() >= expected:
                return True
            self.check_alive()
            return None

        try:
            return poll_until(
                arrived,
                timeout=timeout_secs,
                interval=0.2,
                what=f"{expected} outputs",
                report=on_progress,
                report_every=every_secs,
            )
        except PollTimeout:
            return self.outputs() >= expected
