"""PullFromPubSub: the Pub/Sub reader on Flink. It pulls and hands each message on with its ack id; the publishing
step (transforms.pubsub_publish) acknowledges it once its prediction or dead letter is published.

Beam Python's `ReadFromPubSub` is a native source that only Dataflow and the DirectRunner execute
(apache/beam#27443). Beam's cross-language Java PubsubIO would run on Flink, but its expansion service is not
published for this Beam version where we can fetch it, and a Python splittable DoFn sometimes never starts on
Beam's portable Flink runner (apache/beam#19637; seen here). See the README's "Running on Flink".

So the reader is Flink's own streaming impulse, which ticks in every parallel source subtask, and a plain DoFn
that answers a tick with one synchronous pull through the official client. A message is acknowledged by the step
that publishes its outcome, whichever stage and worker that is (an ack id is good from any client of the
subscription), so no option can open a window in which a message is acknowledged before its outcome is out.

Faults are survived in place: a failed pull (Pub/Sub unavailable, a reset connection, an expired token) is
counted, logged and retried with backoff on the next ticks, without failing the bundle, which would restart the
job. Only when no pull has succeeded for --pubsub_unreachable_secs does the reader fail, with PubsubUnreachable naming
the endpoint and the last error, so that a worker that can never reach Pub/Sub (a wrong address, a network policy)
shows in the job's exceptions and at the launcher (pipelines.build) instead of running and reading nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from transforms.messages import RawEvent
from transforms.pubsub_clients import subscriber_client

_LOGGER = logging.getLogger(__name__)

# A tick every TICK_MS per source subtask; each tick that finds the reader ready pulls once.
TICK_MS = 10
# How long a pull may wait for messages. Short: a pull blocks the bundle, and a checkpoint waits for the bundle.
PULL_TIMEOUT_SECS = 0.25
# Pub/Sub holds a pull open until messages arrive or a short while passes (the emulator: about 50 ms), so an idle
# reader waits in the pull itself; only a pull that came back empty sooner than this lets the ticks pass without
# pulling for the rest of it, so that an idle reader never spins.
IDLE_BACKOFF_SECS = 0.05
MAX_MESSAGES = 1000
# After a failed pull: the first and the longest wait before the next.
ERROR_BACKOFF_SECS, MAX_ERROR_BACKOFF_SECS = 0.5, 5.0
# No successful pull for this long: the reader fails, visibly, with the reason.
UNREACHABLE_AFTER_SECS = 60.0
# A marker the launcher looks for in the job's exceptions.
UNREACHABLE_MARKER = "PubsubUnreachable"


class PubsubUnreachable(RuntimeError):
    pass


class _PullFn(beam.DoFn):
    def __init__(self, subscription: str, max_messages: int, emulator_host: str | None, unreachable_secs: float):
        self._subscription = subscription
        self._max_messages = max_messages
        self._emulator_host = emulator_host
        self._unreachable_secs = unreachable_secs
        self._pulled = Metrics.counter("pubsub", "messages_pulled")
        self._pull_errors = Metrics.counter("pubsub", "pull_errors")

    def setup(self):
        from google.api_core import exceptions

        self._deadline_exceeded = exceptions.DeadlineExceeded
        self._subscriber = subscriber_client(self._emulator_host)
        self._idle_until = 0.0
        self._backoff = ERROR_BACKOFF_SECS
        self._last_success = time.monotonic()

    def teardown(self):
        subscriber = getattr(self, "_subscriber", None)
        if subscriber is not None:
            subscriber.close()

    def process(self, _tick) -> Iterator[beam.window.TimestampedValue]:
        started = time.monotonic()
        if started < self._idle_until:
            return
        try:
            response = self._subscriber.pull(
                request={"subscription": self._subscription, "max_messages": self._max_messages},
                timeout=PULL_TIMEOUT_SECS,
                retry=None,  # the next tick is the retry
            )
            # The raw protobuf: proto-plus wrappers cost microseconds per field read, per message.
            messages = type(response).pb(response).received_messages
        except self._deadline_exceeded:
            messages = []  # nothing arrived within the pull's timeout
        except Exception as error:  # pylint: disable=broad-except
            self._failed(error)
            return
        self._last_success, self._backoff = time.monotonic(), ERROR_BACKOFF_SECS
        if not messages:
            self._idle_until = started + IDLE_BACKOFF_SECS
            return
        self._pulled.inc(len(messages))
        for received in messages:
            message = received.message
            published = message.publish_time
            yield beam.window.TimestampedValue(
                RawEvent(message.data, dict(message.attributes), received.ack_id),
                Timestamp(seconds=published.seconds, micros=published.nanos // 1000),
            )

    def _failed(self, error: BaseException) -> None:
        self._pull_errors.inc()
        silent_for = time.monotonic() - self._last_success
        endpoint = self._emulator_host or "pubsub.googleapis.com"
        if silent_for > self._unreachable_secs:
            raise PubsubUnreachable(
                f"{UNREACHABLE_MARKER}: no pull from {self._subscription} at {endpoint} has succeeded for "
                f"{silent_for:.0f} s; the last error: {type(error).__name__}: {error}"
            )
        _LOGGER.warning(
            "pulling from %s at %s failed (%s: %s); retrying in %.1f s",
            self._subscription,
            endpoint,
            type(error).__name__,
            error,
            self._backoff,
        )
        self._idle_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_ERROR_BACKOFF_SECS)


@beam.typehints.with_output_types(RawEvent)
class PullFromPubSub(beam.PTransform):
    """PBegin -> PCollection[RawEvent] from `projects/<p>/subscriptions/<s>`, timestamped with the publish time and
    carrying their ack ids. Flink only (its streaming impulse drives the pulls); one reader per source subtask
    (`--parallelism`)."""

    def __init__(
        self,
        subscription: str,
        emulator_host: str | None = None,
        tick_ms: int = TICK_MS,
        max_messages: int = MAX_MESSAGES,
        unreachable_secs: float = UNREACHABLE_AFTER_SECS,
    ):
        super().__init__()
        self._subscription = subscription
        self._emulator_host = emulator_host
        self._unreachable_secs = unreachable_secs
        self._tick_ms = tick_ms
        self._max_messages = max_messages

    def expand(self, pbegin):
        # Imported here: the module registers a URN with Beam, which is only wanted when the transform is used.
        from apache_beam.io.flink.flink_streaming_impulse_source import FlinkStreamingImpulseSource

        ticks = pbegin | "Ticks" >> FlinkStreamingImpulseSource().set_interval_ms(self._tick_ms)
        return ticks | "Pull" >> beam.ParDo(
            _PullFn(self._subscription, self._max_messages, self._emulator_host, self._unreachable_secs)
        )
