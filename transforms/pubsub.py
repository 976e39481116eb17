"""The streaming source: ReadEvents from a Pub/Sub subscription, with the reader the pipeline was built for. (The
sink is transforms.pubsub_publish.)

`Reader.BEAM` is Beam's own Pub/Sub read, with attributes; it reaches the emulator through PUBSUB_EMULATOR_HOST and
real Pub/Sub through Application Default Credentials, with the same flags. It acknowledges what it pulls before the
pipeline processes it (at-most-once), which is why the DirectRunner is for local work.
On Flink, Beam's native read does not run (apache/beam#27443): `Reader.PULL` (transforms.pubsub_pull) pulls instead,
and hands each message on with its ack id for the publishing step to acknowledge.
"""

from __future__ import annotations

import enum

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub

from transforms.messages import RawEvent
from transforms.pubsub_pull import UNREACHABLE_AFTER_SECS, PullFromPubSub


class Reader(enum.StrEnum):
    BEAM = "beam"  # Beam's ReadFromPubSub: acknowledged on pull
    PULL = "pull"  # the project's pull, acknowledged once the message's output is published


def _to_raw_event(message: PubsubMessage) -> RawEvent:
    return RawEvent(message.data or b"", dict(message.attributes or {}))


@beam.typehints.with_output_types(RawEvent)
class ReadEvents(beam.PTransform):
    """PBegin -> PCollection[RawEvent] from `projects/<p>/subscriptions/<s>`, timestamped with the publish time.

    Event time from an attribute is not the reader's job here: Beam's reader fails the whole bundle on a message
    whose attribute is missing or malformed. ParseEvents reads it, and dead-letters such a message instead."""

    def __init__(
        self,
        subscription: str,
        reader: Reader,
        emulator_host: str | None = None,
        unreachable_secs: float = UNREACHABLE_AFTER_SECS,
    ):
        super().__init__()
        self._subscription = subscription
        self._reader = Reader(reader)
        self._emulator_host = emulator_host
        self._unreachable_secs = unreachable_secs

    def expand(self, pbegin):
        if self._reader == Reader.PULL:
            return pbegin | "PullFromPubSub" >> PullFromPubSub(
                self._subscription, self._emulator_host, unreachable_secs=self._unreachable_secs
            )
        return (
            pbegin
            | "ReadFromPubSub" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
            | "ToRawEvents" >> beam.Map(_to_raw_event)
        )
