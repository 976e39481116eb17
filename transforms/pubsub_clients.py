"""The official Pub/Sub clients, made the same way by the reader, the publisher and the launcher's checks.

With an emulator address (the pipeline's `--pubsub_emulator_host`, which travels with the options to every
worker, so a worker needs no environment of its own) the clients talk plaintext to the emulator on a channel
that takes messages of any size: the official client's emulator channel keeps gRPC's 4 MiB receive limit, so a
pull that returns one 5 MB message would fail, forever, on every retry. Without one they reach Google Cloud
Pub/Sub with Application Default Credentials, on the client's own channel (which has no such limit).
"""

from __future__ import annotations

import grpc

# Any size: Pub/Sub bounds a message at 10 MB and a pull response by its own rules.
_EMULATOR_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def subscriber_client(emulator_host: str | None):
    from google.cloud import pubsub_v1

    if not emulator_host:
        return pubsub_v1.SubscriberClient()
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    channel = grpc.insecure_channel(emulator_host, options=_EMULATOR_CHANNEL_OPTIONS)
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def publisher_client(emulator_host: str | None):
    from google.cloud import pubsub_v1

    if not emulator_host:
        return pubsub_v1.PublisherClient()
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

    channel = grpc.insecure_channel(emulator_host, options=_EMULATOR_CHANNEL_OPTIONS)
    return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def publisher_api(emulator_host: str | None):
    """The official client's generated Publisher API (google.pubsub_v1), without its per-message batching layer:
    the sink sends whole Publish requests of raw protobuf messages itself (transforms.pubsub_publish)."""
    from google.pubsub_v1 import PublisherClient

    if not emulator_host:
        return PublisherClient()
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

    channel = grpc.insecure_channel(emulator_host, options=_EMULATOR_CHANNEL_OPTIONS)
    return PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def is_transient(error: BaseException) -> bool:
    """Whether a Pub/Sub call's failure may pass on its own: the service or the network, not the request."""
    import concurrent.futures

    from google.api_core import exceptions

    return isinstance(
        error,
        (
            exceptions.DeadlineExceeded,
            exceptions.ServiceUnavailable,
            exceptions.InternalServerError,
            exceptions.Aborted,
            exceptions.Unknown,
            exceptions.Cancelled,
            exceptions.TooManyRequests,
            exceptions.RetryError,
            concurrent.futures.TimeoutError,
            TimeoutError,
            ConnectionError,
        ),
    )
