"""The sink's publisher (transforms.pubsub_publish.BulkPublisher) against the real emulator: every message is
published once, in requests within Pub/Sub's limits; a message Pub/Sub or the client refuses fails alone, and the
rest of its request is still published."""

from __future__ import annotations

import time

import pytest

from transforms.messages import OutputMessage
from transforms.pubsub_clients import subscriber_client
from transforms.pubsub_publish import (
    MESSAGE_MAX_BYTES,
    PUBLISH_MAX_BYTES,
    PUBLISH_MAX_MESSAGES,
    BulkPublisher,
    MessageTooLarge,
)

pytestmark = pytest.mark.integration


class RecordingApi:
    """Passes every Publish request through to the real client, noting its size: a spy, not a stand-in."""

    def __init__(self, api):
        self._api = api
        self.transport = api.transport  # closed with the publisher
        self.requests: list[tuple[int, int]] = []  # (messages, serialized bytes)

    def publish(self, request, **kwargs):
        raw = type(request).pb(request)
        self.requests.append((len(raw.messages), raw.ByteSize()))
        return self._api.publish(request=request, **kwargs)


def pull_everything(emulator, subscription: str, expected: int, timeout_secs: float = 60) -> list:
    subscriber = subscriber_client(emulator.host)
    received, deadline = [], time.monotonic() + timeout_secs
    try:
        while len(received) < expected and time.monotonic() < deadline:
            response = subscriber.pull(request={"subscription": subscription, "max_messages": 1000}, timeout=10)
            received += [m.message for m in response.received_messages]
            if response.received_messages:
                subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
                )
    finally:
        subscriber.close()
    return received


def publisher_with_spy(emulator) -> tuple[BulkPublisher, RecordingApi]:
    publisher = BulkPublisher(emulator.host, timeout_secs=30)
    spy = RecordingApi(publisher._api)  # pylint: disable=protected-access
    publisher._api = spy  # pylint: disable=protected-access
    return publisher, spy


def test_every_message_is_published_once_in_requests_within_pubsub_limits(emulator):
    topic = emulator.create_topic("bulk-limits")
    subscription = emulator.create_subscription("bulk-limits", "bulk-limits-sub")
    # Many small messages (past the count limit of one request) and a few big ones (past its byte limit).
    messages = [OutputMessage(f"small {i}".encode(), {"seq": str(i)}) for i in range(2 * PUBLISH_MAX_MESSAGES + 7)]
    messages += [OutputMessage(bytes([i]) * 3_000_000, {"seq": f"big {i}"}) for i in range(5)]
    publisher, spy = publisher_with_spy(emulator)
    try:
        for i, message in enumerate(messages):
            publisher.add(topic, message, i)
        sent = publisher.wait(time.monotonic() + 60)
    finally:
        publisher.close()
    assert sent.failed == []
    assert sent.published == len(messages)
    assert all(n <= PUBLISH_MAX_MESSAGES and size <= PUBLISH_MAX_BYTES + 1000 for n, size in spy.requests)
    assert len(spy.requests) >= 4  # the count limit split the small ones; the byte limit split the big ones
    received = pull_everything(emulator, subscription, len(messages))
    assert sorted(m.attributes["seq"] for m in received) == sorted(m.attributes["seq"] for m in messages)
    big = {m.attributes["seq"]: m.data for m in received if m.attributes["seq"].startswith("big")}
    assert big == {f"big {i}": bytes([i]) * 3_000_000 for i in range(5)}


def test_a_refused_message_fails_alone_and_the_rest_of_its_request_is_published(emulator):
    topic = emulator.create_topic("bulk-refused")
    subscription = emulator.create_subscription("bulk-refused", "bulk-refused-sub")
    good = [OutputMessage(f"good {i}".encode(), {"seq": str(i)}) for i in range(5)]
    too_large = OutputMessage(b"x" * (MESSAGE_MAX_BYTES + 1), {})
    not_a_string = OutputMessage(b"bad attribute", {"seq": 7})
    empty = OutputMessage(b"", {})  # Pub/Sub refuses a message with neither data nor attributes
    publisher, _spy = publisher_with_spy(emulator)
    try:
        for element, message in [
            ("good 0", good[0]),
            ("too large", too_large),
            ("good 1", good[1]),
            ("not a string", not_a_string),
            ("good 2", good[2]),
            ("empty", empty),
            ("good 3", good[3]),
            ("good 4", good[4]),
        ]:
            publisher.add(topic, message, element)
        sent = publisher.wait(time.monotonic() + 60)
    finally:
        publisher.close()
    failed = {element: type(error) for element, error in sent.failed}
    assert set(failed) == {"too large", "not a string", "empty"}
    assert failed["too large"] is MessageTooLarge
    assert failed["not a string"] is TypeError
    assert sent.published == 5
    received = pull_everything(emulator, subscription, 5)
    assert sorted(m.data for m in received) == sorted(m.data for m in good)
