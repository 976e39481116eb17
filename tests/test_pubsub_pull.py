"""The Flink reader's puller (transforms.pubsub_pull._Puller) against the real emulator: a pull stalled in a real
network delivers every message once when the network is back, and what a reader no longer ticked holds goes back
to Pub/Sub at once, not after the ack deadline. (What made the puller, a pull given up on by its client within a
bundle, shows in the demo on Flink: tests/test_demo.py bounds its p99 well under the ack deadline.)"""

from __future__ import annotations

import time

import pytest
from google.cloud import pubsub_v1

from localdev.fault_proxy import FaultProxy
from transforms.pubsub_clients import subscriber_client
from transforms.pubsub_pull import ORPHANED_AFTER_SECS, _Puller

pytestmark = pytest.mark.integration

# Longer than any wait below: a message seen within it was not stranded until its ack deadline.
ACK_DEADLINE_SECS = 60


def publish(emulator, topic: str, n: int, tag: str) -> list[str]:
    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(topic, f"{tag} {i}".encode()) for i in range(n)]
    return [future.result(timeout=30) for future in futures]


def take_until(puller: _Puller, expected: int, timeout_secs: float) -> list:
    """Ticks like the reader's impulse (every 10 ms) until `expected` messages came, or the time is up."""
    taken, deadline = [], time.monotonic() + timeout_secs
    while len(taken) < expected and time.monotonic() < deadline:
        taken += puller.take()
        time.sleep(0.01)
    return taken


def test_a_pull_stalled_on_the_network_delivers_every_message_once_when_it_is_back(emulator):
    topic = emulator.create_topic("pull-stall")
    subscription = emulator.create_subscription("pull-stall", "pull-stall-sub", ACK_DEADLINE_SECS)
    with FaultProxy(emulator.host) as proxy:
        puller = _Puller(subscription, 1000, proxy.address)
        try:
            assert take_until(puller, 1, 2) == []  # pulls going, answered empty
            proxy.stall()  # the pull in flight, and its answer, wait in the network
            ids = publish(emulator, topic, 50, "stalled")
            time.sleep(1.5)
            proxy.forward()
            taken = take_until(puller, 50, 15)
        finally:
            puller.stop()
    assert sorted(received.message.message_id for received in taken) == sorted(ids)
    assert puller.errors == 0


def test_what_a_reader_no_longer_ticked_holds_goes_back_to_pubsub_at_once(emulator):
    topic = emulator.create_topic("pull-orphan")
    subscription = emulator.create_subscription("pull-orphan", "pull-orphan-sub", ACK_DEADLINE_SECS)
    puller = _Puller(subscription, 1000, emulator.host)
    other = subscriber_client(emulator.host)
    try:
        puller.take()  # one tick, then none: the puller pulls on for ORPHANED_AFTER_SECS, then gives back
        ids = publish(emulator, topic, 20, "orphaned")
        time.sleep(0.5)
        given_back_by = time.monotonic() + ORPHANED_AFTER_SECS + 10
        received = []
        while len(received) < len(ids) and time.monotonic() < given_back_by:
            response = other.pull(request={"subscription": subscription, "max_messages": 100}, timeout=5)
            received += [m.message.message_id for m in response.received_messages]
    finally:
        puller.stop()
        other.close()
    assert sorted(received) == sorted(ids)  # well before the 60 s ack deadline
