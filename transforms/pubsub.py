"""The streaming ends: ReadEvents from a Pub/Sub subscription, PublishMessages to a topic.

Beam's own Pub/Sub IO, with attributes. It reaches the emulator through PUBSUB_EMULATOR_HOST and real Pub/Sub
through Application Default Credentials, with the same flags. On Flink, Beam's native read does not run
(apache/beam#27443): ReadEvents picks transforms.pubsub_pull there, by runner, and nothing else changes.
Beam's WriteToPubSub is a DoFn with the official client on every runner but Dataflow, so publishing is the same
everywhere; it waits for its publishes when a bundle finishes.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import StandardOptions

from transforms.dead_letter import OutputMessage
from transforms.events import RawEvent
from transforms.pubsub_pull import PullFromPubSub


def _to_raw_event(message: PubsubMessage) -> RawEvent:
    return RawEvent(message.data or b"", dict(message.attributes or {}))


def _to_pubsub_message(message: OutputMessage) -> PubsubMessage:
    return PubsubMessage(message.data, message.attributes)


def is_flink(options) -> bool:
    runner = options.view_as(StandardOptions).runner if options is not None else None
    return runner is not None and "flink" in str(runner).lower()


class ReadEvents(beam.PTransform):
    """PBegin -> PCollection[RawEvent] from `projects/<p>/subscriptions/<s>`, timestamped with the publish time.

    Event time from an attribute is not the reader's job here: Beam's reader fails the whole bundle on a message
    whose attribute is missing or malformed. ParseEvents reads it, and dead-letters such a message instead."""

    def __init__(self, subscription: str):
        super().__init__()
        self._subscription = subscription

    def expand(self, pbegin):
        if is_flink(pbegin.pipeline.options):
            return pbegin | "PullFromPubSub" >> PullFromPubSub(self._subscription)
        return (
            pbegin
            | "ReadFromPubSub" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
            | "ToRawEvents" >> beam.Map(_to_raw_event)
        )


class PublishMessages(beam.PTransform):
    """PCollection[OutputMessage] -> `projects/<p>/topics/<t>`, body and attributes."""

    def __init__(self, topic: str):
        super().__init__()
        self._topic = topic

    def expand(self, messages):
        return (
            messages
            | "ToPubsubMessages" >> beam.Map(_to_pubsub_message)
            | "WriteToPubSub" >> WriteToPubSub(self._topic, with_attributes=True)
        )
