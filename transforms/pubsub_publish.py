"""PublishOutcomes: the streaming sink. Publishes each event's prediction or dead letter, then acknowledges the
message it came from.

The order is the delivery guarantee: a message is acknowledged only after its outcome is published, whatever
runs between the reader and here (on Flink, a keyed shuffle for --deduplicate or --max_batch_duration_secs), so
a crash anywhere leaves unpublished messages unacknowledged and Pub/Sub delivers them again. Acknowledging here,
rather than in the reader when a checkpoint completes, is also what keeps --deduplicate exact: the event ids it
remembers are checkpointed only with bundles that finished, and a bundle finishes only after its publishes
completed, so an event the restored state remembers was published, and an event published after that
checkpoint was acknowledged at once, and is not delivered again.

Publishing sends whole Publish requests through the official client's generated API (google.pubsub_v1), built
from raw protobuf messages: up to 1,000 messages or 9 MB a request, sent from a few threads, so the bundle thread
goes on scoring while Pub/Sub answers. (The client's own batching layer costs a future, a lock and a proto-plus
message per message: measured, it took a third of the SDK worker's bundle thread.) A chunk
leaves when it is full and when the bundle ends, so a prediction leaves as soon as its bundle is scored; each
request is retried on transient errors for at most --publish_timeout_secs. A bundle finishes only when all its
publishes have completed. Then:

- published: the chunk's input messages are acknowledged at once, in one request, by the thread that published it;
- a prediction Pub/Sub refuses (or any failure but a transient one) becomes a dead letter at stage `publish`,
  permanent when the message itself was refused (too large, invalid), else retryable; a refused request is sent
  again message by message, so that only the refused ones become dead letters;
- a transient failure past the timeout (Pub/Sub unreachable), or a dead letter that cannot be published: the
  message is left unacknowledged, counted and logged; Pub/Sub delivers it again after the ack deadline, and the
  subscription's own dead-letter policy is the backstop for one that can never be published.

Events dropped by --deduplicate arrive as `duplicates` and are only acknowledged.
On the DirectRunner, Beam's reader has already acknowledged every message (at-most-once), so nothing is acked here.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import logging
import time
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.dead_letter import dead_letter_message
from transforms.messages import DeadLetter, ErrorType, OutputMessage, RawEvent, Reason, Stage
from transforms.pubsub_clients import is_transient, publisher_api, subscriber_client

_LOGGER = logging.getLogger(__name__)

# One Publish request: at most this many messages and bytes (Pub/Sub takes 1,000 and 10 MB).
PUBLISH_MAX_MESSAGES = 1000
PUBLISH_MAX_BYTES = 9_000_000
# Pub/Sub's limit on one message (data and attributes).
MESSAGE_MAX_BYTES = 10_000_000
# Requests in flight at once, per DoFn instance: enough to overlap Pub/Sub's round trips with scoring.
PUBLISH_THREADS = 4
# Acknowledgements: at most this many ack ids a request (Pub/Sub takes 512 KB of them).
ACK_BATCH = 1000
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


class MessageTooLarge(ValueError):
    """A message past Pub/Sub's 10 MB limit, refused before sending."""


def acknowledge(subscriber, subscription: str, ack_ids: list[str]) -> int:
    """Acknowledges `ack_ids`, retrying transient failures for ACK_RETRY_SECS; returns how many were not
    acknowledged (Pub/Sub delivers those again: a duplicate, never a loss)."""
    failed = 0
    for start in range(0, len(ack_ids), ACK_BATCH):
        batch = ack_ids[start : start + ACK_BATCH]
        deadline, delay = time.monotonic() + ACK_RETRY_SECS, 0.1
        while True:
            try:
                subscriber.acknowledge(request={"subscription": subscription, "ack_ids": batch}, timeout=ACK_RETRY_SECS)
                break
            except Exception as error:  # pylint: disable=broad-except
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    _LOGGER.warning(
                        "acknowledging %d messages failed, Pub/Sub will deliver them again: %s", len(batch), error
                    )
                    failed += len(batch)
                    break
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
    return failed


@dataclasses.dataclass
class _Chunk:
    """Messages for one topic that leave in one Publish request, with the elements they stand for and the ack ids
    to acknowledge once they are out."""

    topic: str
    messages: list = dataclasses.field(default_factory=list)  # raw google.pubsub.v1.PubsubMessage
    elements: list = dataclasses.field(default_factory=list)
    ack_ids: list[str] = dataclasses.field(default_factory=list)
    size: int = 0


@dataclasses.dataclass
class _Sent:
    """What became of a chunk: the (element, error) pairs that were not published, and acknowledgement counts."""

    published: int = 0
    failed: list = dataclasses.field(default_factory=list)
    acked: int = 0
    ack_failures: int = 0


class BulkPublisher:
    """Whole Publish requests from a few threads; each published chunk's ack ids acknowledged right after.

    Not thread-safe: one bundle thread adds and waits; the pool's threads only publish and acknowledge."""

    def __init__(self, emulator_host: str | None, timeout_secs: float, subscription: str | None = None):
        from google.api_core import retry as retries
        from google.pubsub_v1.types import PublishRequest, PubsubMessage

        self._api = publisher_api(emulator_host)
        self._request_type, self._raw_request = PublishRequest, PublishRequest.pb()
        self._raw_message = PubsubMessage.pb()
        self._timeout_secs = timeout_secs
        self._retry = retries.Retry(
            predicate=is_transient, initial=0.1, maximum=2.0, multiplier=2.0, timeout=timeout_secs
        )
        self._subscription = subscription
        self._subscriber = subscriber_client(emulator_host) if subscription else None
        self._pool = concurrent.futures.ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="pubsub-publish")
        self._open: dict[str, _Chunk] = {}
        self._sending: list[tuple[concurrent.futures.Future, list]] = []  # (a request's future, its elements)
        self._refused: list = []  # (element, error) refused before sending

    def add(self, topic: str, message: OutputMessage, element: Any) -> None:
        """Queues `message` for `topic`; `element` is what a failure is reported for."""
        try:
            raw = self._raw_message(data=message.data, attributes=message.attributes)
            size = raw.ByteSize()
            if size > MESSAGE_MAX_BYTES:
                raise MessageTooLarge(f"the message is {size:,} bytes, past Pub/Sub's {MESSAGE_MAX_BYTES:,}")
        except Exception as error:  # pylint: disable=broad-except
            # A bad attribute (not a string) or a message too large: Pub/Sub would refuse it whole.
            self._refused.append((element, error))
            return
        chunk = self._open.get(topic)
        if chunk is not None and (len(chunk.messages) >= PUBLISH_MAX_MESSAGES or chunk.size + size > PUBLISH_MAX_BYTES):
            self._send(chunk)
            chunk = None
        if chunk is None:
            chunk = self._open[topic] = _Chunk(topic)
        chunk.messages.append(raw)
        chunk.elements.append(element)
        chunk.size += size
        if message.ack_id is not None:
            chunk.ack_ids.append(message.ack_id)

    def acknowledge_later(self, ack_ids: list[str]) -> None:
        """Acknowledges messages that need nothing published, from the pool."""
        if ack_ids and self._subscriber is not None:
            self._sending.append((self._pool.submit(self._acknowledge, ack_ids), []))

    def flush(self) -> None:
        """Sends every open chunk."""
        for chunk in list(self._open.values()):
            self._send(chunk)

    def wait(self, deadline: float) -> _Sent:
        """Sends what is open, then waits for everything sent; the totals of what became of it."""
        self.flush()
        total = _Sent(failed=self._refused)
        self._refused = []
        for future, elements in self._sending:
            try:
                sent = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError as error:
                # Still in flight: its messages are neither published nor acknowledged as far as this bundle knows.
                sent = _Sent(failed=[(element, error) for element in elements])
            total.published += sent.published
            total.failed += sent.failed
            total.acked += sent.acked
            total.ack_failures += sent.ack_failures
        self._sending = []
        return total

    def close(self) -> None:
        """Waits for what was sent (so that what is published is acknowledged), then stops the pool and closes the
        clients' connections."""
        self._pool.shutdown(wait=True)
        self._api.transport.close()
        if self._subscriber is not None:
            self._subscriber.close()

    # --- on the pool's threads -------------------------------------------------------------------------------
    def _send(self, chunk: _Chunk) -> None:
        del self._open[chunk.topic]
        self._sending.append((self._pool.submit(self._publish, chunk), chunk.elements))

    def _publish(self, chunk: _Chunk) -> _Sent:
        try:
            self._publish_request(chunk.topic, chunk.messages)
        except Exception as error:  # pylint: disable=broad-except
            if is_transient(error) or len(chunk.messages) == 1:
                return _Sent(failed=[(element, error) for element in chunk.elements])
            return self._publish_one_by_one(chunk)
        sent = _Sent(published=len(chunk.messages))
        sent.ack_failures = self._acknowledge(chunk.ack_ids).ack_failures if chunk.ack_ids else 0
        sent.acked = len(chunk.ack_ids) - sent.ack_failures
        return sent

    def _publish_one_by_one(self, chunk: _Chunk) -> _Sent:
        """A request Pub/Sub refused: each message alone, so that only the refused ones fail."""
        sent, ack_ids = _Sent(), []
        for raw, element in zip(chunk.messages, chunk.elements):
            try:
                self._publish_request(chunk.topic, [raw])
            except Exception as error:  # pylint: disable=broad-except
                sent.failed.append((element, error))
                continue
            sent.published += 1
            ack_id = _ack_id_of(element)
            if ack_id is not None:
                ack_ids.append(ack_id)
        acks = self._acknowledge(ack_ids)
        sent.acked, sent.ack_failures = len(ack_ids) - acks.ack_failures, acks.ack_failures
        return sent

    def _publish_request(self, topic: str, messages: list) -> None:
        request = self._request_type.wrap(self._raw_request(topic=topic, messages=messages))
        self._api.publish(request=request, retry=self._retry, timeout=self._timeout_secs)

    def _acknowledge(self, ack_ids: list[str]) -> _Sent:
        if not ack_ids or self._subscriber is None:
            return _Sent()
        failures = acknowledge(self._subscriber, self._subscription, ack_ids)
        return _Sent(acked=len(ack_ids) - failures, ack_failures=failures)


def _ack_id_of(element) -> str | None:
    raw = element.raw if isinstance(element, (OutputMessage, DeadLetter)) else element
    return raw.ack_id if isinstance(raw, RawEvent) else None


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
        destination = self._destination
        self._publisher = BulkPublisher(
            destination.emulator_host, destination.publish_timeout_secs, destination.subscription
        )
        # An SDK worker whose runner goes away (a TaskManager lost) exits without tearing its DoFns down: what was
        # published by then is still acknowledged on the way out, so that it is not delivered, and scored, again.
        atexit.register(self.teardown)

    def teardown(self):
        publisher, self._publisher = getattr(self, "_publisher", None), None
        if publisher is not None:
            publisher.close()

    def start_bundle(self):
        self._ack_ids = []  # ack_only: the duplicates' messages

    def process(self, element):
        if self._ack_only:
            if element.ack_id is not None:
                self._ack_ids.append(element.ack_id)
        elif isinstance(element, DeadLetter):
            self._publisher.add(self._destination.dead_letter_topic, self._dead_letter(element), element)
        else:
            self._publisher.add(self._destination.output_topic, element, element)

    def finish_bundle(self):
        self._publisher.acknowledge_later(self._ack_ids)
        deadline = time.monotonic() + self._destination.publish_timeout_secs + 5
        sent = self._publisher.wait(deadline)
        self._count(sent)
        if not sent.failed:
            return
        # A prediction that could not be published becomes a dead letter, unless Pub/Sub itself was the problem.
        for element, error in sent.failed:
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
                self._publisher.add(self._destination.dead_letter_topic, self._dead_letter(letter), letter)
            else:
                self._left_for_redelivery(element, error)
        retried = self._publisher.wait(deadline + self._destination.publish_timeout_secs)
        self._count(retried)
        for element, error in retried.failed:
            self._left_for_redelivery(element, error)

    # --- helpers -------------------------------------------------------------------------------------------
    def _count(self, sent: _Sent) -> None:
        self._published.inc(sent.published)
        self._acked.inc(sent.acked)
        self._ack_failures.inc(sent.ack_failures)

    def _dead_letter(self, letter: DeadLetter) -> OutputMessage:
        return dead_letter_message(letter, self._destination.model, self._destination.dead_letter_topic)

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

    # ValueError: MessageTooLarge; TypeError: an attribute that is not a string.
    return isinstance(error, (exceptions.InvalidArgument, ValueError, TypeError))


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
        self._publisher = BulkPublisher(self._emulator_host, self._timeout_secs)

    def teardown(self):
        publisher, self._publisher = getattr(self, "_publisher", None), None
        if publisher is not None:
            publisher.close()

    def process(self, message: OutputMessage):
        self._publisher.add(self._topic, message, message)

    def finish_bundle(self):
        sent = self._publisher.wait(time.monotonic() + self._timeout_secs + 5)
        self._published.inc(sent.published)
        if sent.failed:
            self._dropped.inc(len(sent.failed))
            _LOGGER.warning("dropped %d records for %s: %s", len(sent.failed), self._topic, sent.failed[0][1])


@beam.typehints.with_input_types(OutputMessage)
class PublishRecords(beam.PTransform):
    """PCollection[OutputMessage] -> `topic`, best effort (shadow comparisons: losing one loses no prediction)."""

    def __init__(self, topic: str, emulator_host: str | None, namespace: str, timeout_secs: float):
        super().__init__()
        self._fn = _PublishRecordsFn(topic, emulator_host, namespace, timeout_secs)

    def expand(self, records):
        return records | "Publish" >> beam.ParDo(self._fn)
