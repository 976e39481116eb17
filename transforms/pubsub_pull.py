"""PullFromPubSub: the Pub/Sub reader on Flink, acknowledging only what the runner has committed.

Beam Python's `ReadFromPubSub` is a native source that only Dataflow and the DirectRunner execute
(apache/beam#27443). Beam's cross-language Java PubsubIO would run on Flink, but its expansion service is not
published for this Beam version where we can fetch it, and a Python splittable DoFn sometimes never starts on
Beam's portable Flink runner (apache/beam#19637; seen here). See the README's "Running on Flink".

So the reader is Flink's own streaming impulse, which ticks in every parallel source subtask, and a plain DoFn
that answers a tick with one synchronous pull through the official client:

- the pulled messages are acknowledged by a *bundle finalizer*. Beam's Flink runner calls it only when a
  checkpoint has completed (ExecutableStageDoFnOperator.notifyCheckpointComplete), after the bundle it belongs to
  has finished. Without a shuffle between the read and the publish (the default pipeline: no --deduplicate,
  no --max_batch_duration_secs, both of which need keyed state) the whole path
  (pull, parse, infer, format, publish and wait for the publish) is one fused stage, so a finished bundle means
  the predictions are already published;
- a crash before that leaves the messages unacknowledged and Pub/Sub redelivers them after the subscription's
  ack deadline. At-least-once; `--deduplicate` drops the repeats it can see.

The subscription's ack deadline must exceed a checkpoint interval plus a bundle's duration, or messages are
redelivered while still in flight: duplicates, not losses.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from transforms.events import RawEvent

_LOGGER = logging.getLogger(__name__)

# A tick every TICK_MS per source subtask; each tick that finds the reader ready pulls once.
TICK_MS = 10
# How long a pull may wait for messages. Short: a pull blocks the bundle, and a checkpoint waits for the bundle.
PULL_TIMEOUT_SECS = 0.25
# After an empty pull, ticks are let pass without pulling for this long, so an idle reader neither spins nor
# queues up blocked pulls in front of a checkpoint.
IDLE_BACKOFF_SECS = 0.1
MAX_MESSAGES = 1000


class _PullFn(beam.DoFn):
    def __init__(self, subscription: str, max_messages: int):
        self._subscription = subscription
        self._max_messages = max_messages
        self._pulled = Metrics.counter("pubsub", "messages_pulled")
        self._acked = Metrics.counter("pubsub", "messages_acked")
        self._ack_failures = Metrics.counter("pubsub", "ack_failures")

    def setup(self):
        # Imported here, not at module level: the launcher never pulls, and the client's import is slow.
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        self._deadline_exceeded = exceptions.DeadlineExceeded
        self._subscriber = pubsub_v1.SubscriberClient()
        self._idle_until = 0.0

    def teardown(self):
        subscriber = getattr(self, "_subscriber", None)
        if subscriber is not None:
            subscriber.close()

    def process(self, _tick, finalizer=beam.DoFn.BundleFinalizerParam) -> Iterator[beam.window.TimestampedValue]:
        if time.monotonic() < self._idle_until:
            return
        try:
            response = self._subscriber.pull(
                request={"subscription": self._subscription, "max_messages": self._max_messages},
                timeout=PULL_TIMEOUT_SECS,
                retry=None,  # the next tick is the retry
            )
            messages = response.received_messages
        except self._deadline_exceeded:
            messages = []
        if not messages:
            self._idle_until = time.monotonic() + IDLE_BACKOFF_SECS
            return
        ack_ids = [received.ack_id for received in messages]
        finalizer.register(lambda: self._acknowledge(ack_ids))
        self._pulled.inc(len(messages))
        for received in messages:
            message = received.message
            yield beam.window.TimestampedValue(
                RawEvent(bytes(message.data), dict(message.attributes)),
                Timestamp.from_utc_datetime(message.publish_time),
            )

    def _acknowledge(self, ack_ids: list[str]) -> None:
        try:
            self._subscriber.acknowledge(request={"subscription": self._subscription, "ack_ids": ack_ids})
        except Exception as error:  # pylint: disable=broad-except
            # Not retried: an unacknowledged message comes back after its deadline, a duplicate and not a loss.
            self._ack_failures.inc(len(ack_ids))
            _LOGGER.warning("acknowledging %d messages failed, Pub/Sub will redeliver them: %s", len(ack_ids), error)
            return
        self._acked.inc(len(ack_ids))


class PullFromPubSub(beam.PTransform):
    """PBegin -> PCollection[RawEvent] from `projects/<p>/subscriptions/<s>`, timestamped with the publish time.
    Flink only (its streaming impulse drives the pulls); one reader per source subtask (`--parallelism`)."""

    def __init__(self, subscription: str, tick_ms: int = TICK_MS, max_messages: int = MAX_MESSAGES):
        super().__init__()
        self._subscription = subscription
        self._tick_ms = tick_ms
        self._max_messages = max_messages

    def expand(self, pbegin):
        # Imported here: the module registers a URN with Beam, which is only wanted when the transform is used.
        from apache_beam.io.flink.flink_streaming_impulse_source import FlinkStreamingImpulseSource

        ticks = pbegin | "Ticks" >> FlinkStreamingImpulseSource().set_interval_ms(self._tick_ms)
        return ticks | "Pull" >> beam.ParDo(_PullFn(self._subscription, self._max_messages))
