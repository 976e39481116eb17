"""PullFromPubSub: the Pub/Sub reader on Flink. It pulls and hands each message on with its ack id; the publishing
step (transforms.pubsub_publish) acknowledges it once its prediction or dead letter is published.

Beam Python's `ReadFromPubSub` is a native source that only Dataflow and the DirectRunner execute
(apache/beam#27443). Beam's cross-language Java PubsubIO would run on Flink, but its expansion service is not
published for this Beam version where we can fetch it, and a Python splittable DoFn sometimes never starts on
Beam's portable Flink runner (apache/beam#19637; seen here). See the README's "Running on Flink".

So the reader is Flink's own streaming impulse, which ticks in every parallel source subtask, and a plain DoFn
that answers a tick with the messages its puller (one thread per reader, through the official client, pulling a
few thousand messages ahead at most) has brought since the last tick. The pull runs on that thread, not in the
bundle, so that it can wait as long as Pub/Sub takes to answer without holding a bundle or a checkpoint: a pull
its client gives up on loses the messages Pub/Sub is already sending it, until their ack deadline passes. (With a 0.25 s
deadline inside the bundle, a busy 2-core machine delayed about 20 events of a demo by the whole minute of the
ack deadline.) A message is acknowledged by the step that publishes its outcome, whichever stage and worker that
is (an ack id is good from any client of the subscription), so no option can open a window in which a message is
acknowledged before its outcome is out.

Faults are survived in place: a failed pull (Pub/Sub unavailable, a reset connection, an expired token) is
counted, logged and retried with backoff, without failing the bundle, which would restart the job. Only when no
pull has succeeded for --pubsub_unreachable_secs does the reader fail, with PubsubUnreachable naming the endpoint
and the last error, so that a worker that can never reach Pub/Sub (a wrong address, a network policy) shows in the
job's exceptions and at the launcher (pipelines.build) instead of running and reading nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from transforms.messages import RawEvent
from transforms.pubsub_clients import subscriber_client

_LOGGER = logging.getLogger(__name__)

# A tick every TICK_MS per source subtask; each tick hands on what the puller has brought.
TICK_MS = 10
# How long a pull may wait for Pub/Sub's answer. Pub/Sub answers as soon as messages come, and holds an idle pull
# until shortly before this deadline (the emulator: a second before); a pull given up on strands what Pub/Sub was
# sending it until the ack deadline, so the deadline is generous and the wait is the puller thread's, not a bundle's.
PULL_DEADLINE_SECS = 10.0
# A pull that came back empty sooner than this (an unusual server) waits for the rest of it before the next, so an
# idle reader never spins.
IDLE_BACKOFF_SECS = 0.05
MAX_MESSAGES = 1000
# The puller pulls ahead of the reader until this many messages wait: a few pulls' worth, so a burst of ticks finds
# a bundle's worth, and few enough that none waits anywhere near an ack deadline (10 s at least).
PREFETCH_MESSAGES = 5000
# After a failed pull: the first and the longest wait before the next.
ERROR_BACKOFF_SECS, MAX_ERROR_BACKOFF_SECS = 0.5, 5.0
# A reader not ticked for this long (its job cancelled, its bundle processor dropped) has its puller stop pulling
# and hand what it holds back to Pub/Sub for another reader.
ORPHANED_AFTER_SECS = 2.0
# No successful pull for this long: the reader fails, visibly, with the reason.
UNREACHABLE_AFTER_SECS = 60.0
# A marker the launcher looks for in the job's exceptions.
UNREACHABLE_MARKER = "PubsubUnreachable"


class PubsubUnreachable(RuntimeError):
    pass


class _Puller:
    """One reader's pulls, on a thread of its own, a little ahead of the reader: it pulls while fewer than
    PREFETCH_MESSAGES wait and the reader has ticked within ORPHANED_AFTER_SECS; each `take()` (a tick) returns
    everything waiting. Not one pull per tick: the runner may deliver ticks in bursts (with Beam's default data
    plane, a bundle's worth at once), and a burst must find a bundle's worth of messages. Counts live in plain
    fields: Beam's metrics belong to a bundle, so the ticks report them."""

    def __init__(self, subscription: str, max_messages: int, emulator_host: str | None):
        from google.api_core import exceptions

        self._deadline_exceeded = exceptions.DeadlineExceeded
        self._subscription = subscription
        self._max_messages = max_messages
        self.endpoint = emulator_host or "pubsub.googleapis.com"
        self._subscriber = subscriber_client(emulator_host)
        self._lock = threading.Lock()
        self._waiting: list = []  # raw ReceivedMessage protobufs, oldest first
        self._ticked_at = time.monotonic()
        self._ticked = threading.Event()
        self._stopped = threading.Event()
        self.errors = 0  # failed pulls so far
        self.last_error: BaseException | None = None
        self.last_success = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"pull {subscription}", daemon=True)
        self._thread.start()

    def take(self) -> list:
        self._ticked_at = time.monotonic()
        taken = self._drain()
        self._ticked.set()
        return taken

    def _drain(self) -> list:
        with self._lock:
            taken, self._waiting = self._waiting, []
        return taken

    def stop(self) -> None:
        self._stopped.set()
        self._ticked.set()
        self._give_back()
        self._subscriber.close()  # ends a pull in flight

    def _run(self) -> None:
        backoff = ERROR_BACKOFF_SECS
        while not self._stopped.is_set():
            self._ticked.clear()
            if time.monotonic() - self._ticked_at > ORPHANED_AFTER_SECS:
                self._give_back()  # nobody takes them: back to Pub/Sub, for another reader
                self._ticked.wait()
                continue
            if len(self._waiting) >= PREFETCH_MESSAGES:
                self._ticked.wait(ORPHANED_AFTER_SECS)  # the reader is behind: wait for it to take some
                continue
            started = time.monotonic()
            try:
                response = self._subscriber.pull(
                    request={"subscription": self._subscription, "max_messages": self._max_messages},
                    timeout=PULL_DEADLINE_SECS,
                    retry=None,  # the next pull is the retry
                )
                # The raw protobuf: proto-plus wrappers cost microseconds per field read, per message.
                messages = type(response).pb(response).received_messages
            except self._deadline_exceeded:
                messages = []  # no answer in time: like an empty one, not a failure
            except Exception as error:  # pylint: disable=broad-except
                if self._stopped.is_set():
                    return
                self.errors, self.last_error = self.errors + 1, error
                _LOGGER.warning(
                    "pulling from %s at %s failed (%s: %s); retrying in %.1f s",
                    self._subscription,
                    self.endpoint,
                    type(error).__name__,
                    error,
                    backoff,
                )
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, MAX_ERROR_BACKOFF_SECS)
                continue
            self.last_success, backoff = time.monotonic(), ERROR_BACKOFF_SECS
            if messages:
                with self._lock:
                    self._waiting.extend(messages)
                if self._stopped.is_set():  # stopped during the pull: no tick will take them
                    self._give_back()
            else:
                self._stopped.wait(started + IDLE_BACKOFF_SECS - time.monotonic())

    def _give_back(self) -> None:
        """What waits here, and no reader will hand on, back to Pub/Sub now (ack deadline 0), not after the
        subscription's ack deadline."""
        ack_ids = [received.ack_id for received in self._drain()]
        if ack_ids:
            with contextlib.suppress(Exception):  # best effort: the ack deadline returns them anyway
                self._subscriber.modify_ack_deadline(
                    request={"subscription": self._subscription, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
                )


class _PullFn(beam.DoFn):
    def __init__(self, subscription: str, max_messages: int, emulator_host: str | None, unreachable_secs: float):
        self._subscription = subscription
        self._max_messages = max_messages
        self._emulator_host = emulator_host
        self._unreachable_secs = unreachable_secs
        self._pulled = Metrics.counter("pubsub", "messages_pulled")
        self._pull_errors = Metrics.counter("pubsub", "pull_errors")

    def setup(self):
        self._puller = _Puller(self._subscription, self._max_messages, self._emulator_host)
        self._errors_counted = 0

    def teardown(self):
        puller = getattr(self, "_puller", None)
        if puller is not None:
            puller.stop()

    def process(self, _tick) -> Iterator[beam.window.TimestampedValue]:
        puller = self._puller
        messages = puller.take()
        if puller.errors > self._errors_counted:
            self._pull_errors.inc(puller.errors - self._errors_counted)
            self._errors_counted = puller.errors
        if not messages:
            self._fail_if_unreachable(puller)
            return
        self._pulled.inc(len(messages))
        for received in messages:
            message = received.message
            published = message.publish_time
            yield beam.window.TimestampedValue(
                RawEvent(message.data, dict(message.attributes), received.ack_id),
                Timestamp(seconds=published.seconds, micros=published.nanos // 1000),
            )

    def _fail_if_unreachable(self, puller: _Puller) -> None:
        silent_for = time.monotonic() - puller.last_success
        if puller.last_error is not None and silent_for > self._unreachable_secs:
            error = puller.last_error
            raise PubsubUnreachable(
                f"{UNREACHABLE_MARKER}: no pull from {self._subscription} at {puller.endpoint} has succeeded for "
                f"{silent_for:.0f} s; the last error: {type(error).__name__}: {error}"
            )


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
