"""PublishOutcomes: the streaming sink. Publishes each event's prediction or dead letter, then acknowledges the
message it came from.

The order is the delivery guarantee: a message is acknowledged only after its outcome is published, whatever
runs between the reader and here (on Flink, a keyed shuffle for --deduplicate or --max_batch_duration_secs), so
a crash anywhere leaves unpublished messages unacknowledged and Pub/Sub delivers them again. Acknowledging here,
rather than in the reader when a checkpoint completes, is also what keeps --deduplicate exact: the event ids it
remembers are checkpointed only with bundles that finished, and a bundle finishes only after its publishes
completed, so an event the restored state remembers was published, and an event published after that
checkpoint was acknowledged at once, and is not delivered again.

Publishing goes through the official client: batched by the client (up to 5 ms), so a prediction leaves as soon
as its batch is scored rather than at the end of a bundle; each publish is retried by the client on transient
errors for at most --publish_timeout_secs. A bundle finishes only when all its publishes have completed. Then:

- published: the message is acknowledged (batched, from a background thread, as soon as the publish completes);
- a prediction Pub/Sub refuses (or any failure but a transient one) becomes a dead letter at stage `publish`,
  permanent when the message itself was refused (too large, invalid), else retryable;
- a transient failure past the timeout (Pub/Sub unreachable), or a dead letter that cannot be published: the
  message is left unacknowledged, counted and logged; Pub/Sub delivers it again after the ack deadline, and the
  subscription's own dead-letter policy is the backstop for one that can never be published.

Events dropped by --deduplicate arrive as `duplicates` and are only acknowledged.
On the DirectRunner, Beam's reader has already acknowledged every message (at-most-once), so nothing is acked here.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.dead_letter import dead_letter_message
from transforms.messages import DeadLetter, ErrorType, OutputMessage, RawEvent, Reason, Stage
from transforms.pubsub_clients import is_transient, publisher_client, subscriber_client

_LOGGER = logging.getLogger(__name__)

# The client's batching: a batch leaves after this long, or at this many messages or bytes.
PUBLISH_MAX_LATENCY_SECS = 0.005
PUBLISH_MAX_MESSAGES = 500
PUBLISH_MAX_BYTES = 9_000_000
# Acknowledgements: at most this many ack ids a request (Pub/Sub takes 512 KB of them), sent at least this often.
ACK_BATCH = 1000
ACK_INTERVAL_SECS = 0.01
# Retrying a failed acknowledgement: if it still fails, the message is delivered again (a duplicate, not a loss).
ACK_RETRY_SECS = 5.0


class Destination(NamedTuple):
    """Where outcomes go: the two topics, the subscription whose messages are acknowledged (None: nothing to
    acknowledge), the emulator when there is one, and the model the dead letters are for."""

    output_topic: str
    dead_letter_topic: str
    subscription: str | None
    emulator_host: str | None
    model: str
    publish_timeout_secs: float


class Acknowledger:
    """Acknowledges ack ids in batches from a background thread; `flush` waits until everything added is sent."""

    def __init__(self, subscriber, subscription: str):
        self._subscriber = subscriber
        self._subscription = subscription
        self._pending: list[str] = []
        self._lock = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self.acked = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="pubsub-ack", daemon=True)
        self._thread.start()

    def add(self, ack_ids: Iterable[str]) -> None:
        with self._lock:
            self._pending.extend(ack_ids)
            self._lock.notify_all()

    def flush(self, timeout_secs: float = ACK_RETRY_SECS + 5) -> None:
        deadline = time.monotonic() + timeout_secs
        with self._lock:
            while (self._pending or self._in_flight) and time.monotonic() < deadline:
                self._lock.wait(timeout=0.05)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending[:ACK_BATCH], self._pending[ACK_BATCH:]
                self._in_flight = len(batch)
            sent = self._send(batch)
            with self._lock:
                self._in_flight = 0
                self.acked += len(batch) if sent else 0
                self.failed += 0 if sent else len(batch)
                self._lock.notify_all()
            time.sleep(ACK_INTERVAL_SECS)

    def _send(self, ack_ids: list[str]) -> bool:
        deadline, delay = time.monotonic() + ACK_RETRY_SECS, 0.1
        while True:
            try:
                self._subscriber.acknowledge(
                    request={"subscription": self._subscription, "ack_ids": ack_ids}, timeout=ACK_RETRY_SECS
                )
                return True
            except Exception as error:  # pylint: disable=broad-except
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    _LOGGER.warning(
                        "acknowledging %d messages failed, Pub/Sub will deliver them again: %s", len(ack_ids), error
                    )
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


class _PublishFn(beam.DoFn):
    """OutputMessage -> the output topic; DeadLetter -> the dead-letter topic; with `ack_only`, RawEvent ->
    acknowledged, not published. Each published message's input is acknowledged once the publish completes."""

    def __init__(self, destination: Destination, ack_only: bool = False):
        self._destination = destination
        self._ack_only = ack_only
        namespace = f"marketplace_{destination.model}"
        self._published = Metrics.counter(namespace, "messages_published")
        self._publish_dead_letters = Metrics.counter(namespace, "publish_dead_letters")
        self._unpublished = Metrics.counter(namespace, "messages_left_for_redelivery")
        self._acked = Metrics.counter("pubsub", "messages_acked")
        self._ack_failures = Metrics.counter("pubsub", "ack_failures")

    def setup(self):
        from google.api_core import retry as retries
        from google.cloud import pubsub_v1

        destination = self._destination
        self._publisher = publisher_client(
            destination.emulator_host,
            pubsub_v1.types.BatchSettings(
                max_bytes=PUBLISH_MAX_BYTES, max_latency=PUBLISH_MAX_LATENCY_SECS, max_messages=PUBLISH_MAX_MESSAGES
            ),
        )
        self._retry = retries.Retry(
            predicate=is_transient, initial=0.1, maximum=2.0, multiplier=2.0, timeout=destination.publish_timeout_secs
        )
        self._acknowledger = None
        if destination.subscription:
            self._acknowledger = Acknowledger(subscriber_client(destination.emulator_host), destination.subscription)
        self._reported = (0, 0)
        # An SDK worker whose runner goes away (a TaskManager lost) exits without tearing its DoFns down: what was
        # published by then is still acknowledged on the way out, so that it is not delivered, and scored, again.
        atexit.register(self.teardown)

    def teardown(self):
        publisher, self._publisher = getattr(self, "_publisher", None), None
        if publisher is not None:
            publisher.stop()  # sends what is batched and waits for it, so its acknowledgements are queued
        acknowledger, self._acknowledger = getattr(self, "_acknowledger", None), None
        if acknowledger is not None:
            acknowledger.close()

    def start_bundle(self):
        self._pending = []  # (the publish's future, the element it was for)

    def process(self, element):
        if self._ack_only:
            self._acknowledge(element.ack_id)
        elif isinstance(element, DeadLetter):
            self._publish(self._destination.dead_letter_topic, self._dead_letter(element), element)
        else:
            self._publish(self._destination.output_topic, element, element)

    def finish_bundle(self):
        deadline = time.monotonic() + self._destination.publish_timeout_secs + 5
        failed = self._wait(deadline)
        # A prediction that could not be published becomes a dead letter, unless Pub/Sub itself was the problem.
        self._pending = []
        for element, error in failed:
            if isinstance(element, OutputMessage) and not is_transient(error):
                refused = _message_refused(error)
                letter = DeadLetter(
                    element.raw,
                    Stage.PUBLISH,
                    f"publishing the prediction failed: {type(error).__name__}: {error}",
                    ErrorType.PERMANENT if refused else ErrorType.RETRYABLE,
                    element.attributes.get("event_id"),
                    Reason.PUBLISH_REFUSED,
                )
                self._publish_dead_letters.inc()
                self._publish(self._destination.dead_letter_topic, self._dead_letter(letter), letter)
            else:
                self._left_for_redelivery(element, error)
        for element, error in self._wait(deadline + self._destination.publish_timeout_secs):
            self._left_for_redelivery(element, error)
        self._pending = []
        if self._acknowledger is not None:
            self._acknowledger.flush()
            acked, failed_acks = self._acknowledger.acked, self._acknowledger.failed
            self._acked.inc(acked - self._reported[0])
            self._ack_failures.inc(failed_acks - self._reported[1])
            self._reported = (acked, failed_acks)

    # --- helpers -------------------------------------------------------------------------------------------
    def _dead_letter(self, letter: DeadLetter) -> OutputMessage:
        return dead_letter_message(letter, self._destination.model, self._destination.dead_letter_topic)

    def _publish(self, topic: str, message: OutputMessage, element) -> None:
        try:
            future = self._publisher.publish(
                topic,
                message.data,
                retry=self._retry,
                timeout=self._destination.publish_timeout_secs,
                **message.attributes,
            )
        except Exception as error:  # pylint: disable=broad-except
            # The client refuses some messages before sending them (too large, a bad attribute).
            future = concurrent.futures.Future()
            future.set_exception(error)
        if message.ack_id is not None:
            future.add_done_callback(lambda done, ack_id=message.ack_id: self._acknowledge_published(done, ack_id))
        self._pending.append((future, element))

    def _acknowledge_published(self, future, ack_id: str) -> None:
        # Runs on the client's thread when the publish completes: the message's outcome is out.
        if future.exception() is None:
            self._acknowledge(ack_id)

    def _acknowledge(self, ack_id: str | None) -> None:
        if ack_id is not None and self._acknowledger is not None:
            self._acknowledger.add([ack_id])

    def _wait(self, deadline: float) -> list:
        """Waits for the pending publishes; returns the (element, error) of those that failed."""
        failed = []
        for future, element in self._pending:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                self._published.inc()
            except Exception as error:  # pylint: disable=broad-except
                failed.append((element, error))
        return failed

    def _left_for_redelivery(self, element, error: BaseException) -> None:
        self._unpublished.inc()
        what = "dead letter" if isinstance(element, DeadLetter) else "prediction"
        _LOGGER.error(
            "a %s for %s could not be published (%s: %s); its message is left unacknowledged for Pub/Sub to "
            "deliver again",
            what,
            self._destination.model,
            type(error).__name__,
            error,
        )


def _message_refused(error: BaseException) -> bool:
    """Whether Pub/Sub (or the client, before sending) refused the message itself, so that it would again."""
    from google.api_core import exceptions
    from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError

    return isinstance(error, (exceptions.InvalidArgument, MessageTooLargeError, ValueError, TypeError))


@beam.typehints.with_input_types(OutputMessage, DeadLetter)
class PublishOutcomes(beam.PTransform):
    """(predictions, dead_letters) -> Pub/Sub: predictions (OutputMessage) to the output topic, dead letters
    (DeadLetter) to the dead-letter topic; each input message acknowledged once its outcome is published."""

    def __init__(self, destination: Destination):
        super().__init__()
        self._destination = destination

    def expand(self, outcomes):
        predictions, dead_letters = outcomes
        predictions | "PublishPredictions" >> beam.ParDo(_PublishFn(self._destination))
        dead_letters | "PublishDeadLetters" >> beam.ParDo(_PublishFn(self._destination))
        return beam.pvalue.PDone(predictions.pipeline)


@beam.typehints.with_input_types(RawEvent)
class AcknowledgeDuplicates(beam.PTransform):
    """PCollection[RawEvent] (repeats dropped by --deduplicate) -> acknowledged, nothing published."""

    def __init__(self, destination: Destination):
        super().__init__()
        self._destination = destination

    def expand(self, duplicates):
        duplicates | "Acknowledge" >> beam.ParDo(_PublishFn(self._destination, ack_only=True))
        return beam.pvalue.PDone(duplicates.pipeline)


class _PublishRecordsFn(beam.DoFn):
    """OutputMessage -> `topic`, best effort: one that is not published within the timeout is counted and dropped.
    Nothing is acknowledged: the records go beside the predictions, whose publishing acknowledges the input."""

    def __init__(self, topic: str, emulator_host: str | None, namespace: str, timeout_secs: float):
        self._topic = topic
        self._emulator_host = emulator_host
        self._timeout_secs = timeout_secs
        self._published = Metrics.counter(namespace, "records_published")
        self._dropped = Metrics.counter(namespace, "records_dropped")

    def setup(self):
        self._publisher = publisher_client(self._emulator_host)

    def teardown(self):
        publisher, self._publisher = getattr(self, "_publisher", None), None
        if publisher is not None:
            publisher.stop()

    def start_bundle(self):
        self._pending = []

    def process(self, message: OutputMessage):
        try:
            future = self._publisher.publish(
                self._topic, message.data, timeout=self._timeout_secs, **message.attributes
            )
        except Exception as error:  # pylint: disable=broad-except
            future = concurrent.futures.Future()
            future.set_exception(error)
        self._pending.append(future)

    def finish_bundle(self):
        deadline, errors = time.monotonic() + self._timeout_secs + 5, []
        for future in self._pending:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                self._published.inc()
            except Exception as error:  # pylint: disable=broad-except
                self._dropped.inc()
                errors.append(error)
        if errors:
            _LOGGER.warning("dropped %d records for %s: %s", len(errors), self._topic, errors[0])
        self._pending = []


@beam.typehints.with_input_types(OutputMessage)
class PublishRecords(beam.PTransform):
    """PCollection[OutputMessage] -> `topic`, best effort (shadow comparisons: losing one loses no prediction)."""

    def __init__(self, topic: str, emulator_host: str | None, namespace: str, timeout_secs: float):
        super().__init__()
        self._fn = _PublishRecordsFn(topic, emulator_host, namespace, timeout_secs)

    def expand(self, records):
        return records | "Publish" >> beam.ParDo(self._fn)
