"""The launcher's Pub/Sub checks, before a streaming job is submitted: the subscription and the topics exist (a
shadow's too), and the subscription's ack deadline covers the longest a message can be in flight
(pipelines.delivery).

What fails here fails at once, with the fix, instead of as a job that runs and reads nothing, or one that scores
every message twice because Pub/Sub delivers it again while it is being scored.
"""

from __future__ import annotations

import logging

from model_handlers.errors import UsageError
from pipelines.delivery import ack_deadline_problem, in_flight_budget
from transforms.pubsub_clients import is_transient, publisher_client, subscriber_client

_LOGGER = logging.getLogger(__name__)

TIMEOUT_SECS = 20.0


class PubsubSetupError(UsageError, ValueError):
    """The subscription or a topic is missing or misconfigured, or Pub/Sub cannot be reached: nothing started."""


def check_pubsub(pipeline_options, acknowledged_by_pipeline: bool) -> None:
    """Raises PubsubSetupError listing every problem. `acknowledged_by_pipeline`: the pipeline acknowledges after
    publishing (Flink), so the ack deadline must cover the in-flight budget; Beam's DirectRunner reader
    acknowledges on pull and needs no such deadline."""
    from google.api_core import exceptions

    from pipelines.options import InferenceOptions

    options = pipeline_options.view_as(InferenceOptions)
    endpoint = options.pubsub_emulator_host or "pubsub.googleapis.com"
    subscriber = subscriber_client(options.pubsub_emulator_host)
    publisher = publisher_client(options.pubsub_emulator_host)
    problems = []
    try:
        try:
            subscription = subscriber.get_subscription(
                request={"subscription": options.input_subscription}, timeout=TIMEOUT_SECS
            )
        except exceptions.NotFound:
            problems.append(f"subscription {options.input_subscription} does not exist at {endpoint}")
        except exceptions.PermissionDenied as error:
            _LOGGER.warning(
                "cannot read subscription %s to check its ack deadline: %s", options.input_subscription, error
            )
        else:
            if acknowledged_by_pipeline:
                problem = ack_deadline_problem(
                    subscription.ack_deadline_seconds, in_flight_budget(pipeline_options), options.input_subscription
                )
                if problem:
                    problems.append(problem)
        for flag in ("output_topic", "dead_letter_topic", "shadow_output"):
            topic = getattr(options, flag)
            if topic is None:
                continue
            try:
                publisher.get_topic(request={"topic": topic}, timeout=TIMEOUT_SECS)
            except exceptions.NotFound:
                problems.append(f"--{flag} {topic} does not exist at {endpoint}")
            except exceptions.PermissionDenied as error:
                _LOGGER.warning("cannot check that %s exists: %s", topic, error)
    except Exception as error:  # pylint: disable=broad-except
        if not is_transient(error):
            raise
        problems.append(f"the launcher cannot reach Pub/Sub at {endpoint}: {type(error).__name__}: {error}")
    finally:
        subscriber.close()
        publisher.stop()
    if problems:
        raise PubsubSetupError("Pub/Sub is not ready for this pipeline:\n  - " + "\n  - ".join(problems))
