"""The Pub/Sub check: each pipeline's topics and subscription are declared (Config Connector, base/pubsub/), the
subscription gives the pipeline time to finish a message and a dead-letter policy for one it never can, and
nothing that leaves the normal path is published to a topic where no subscription keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy import config_connector
from deploy.manifests import ref
from deploy.validation.submissions import submissions

# Pub/Sub's rules for a subscription: the deadline when none is set, and the bounds of a dead-letter policy.
PUBSUB_DEFAULT_ACK_DEADLINE_SECS = 10
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100


@dataclass
class _Reader:
    """A pipeline as the Pub/Sub check sees it: its options and the subscription it reads, if declared."""

    where: str
    options: object  # PipelineOptions
    inference: object  # their InferenceOptions view
    subscription: dict | None


def check_pubsub(docs: list[dict]) -> list[str]:
    """Each pipeline's Pub/Sub resources are declared (Config Connector, base/pubsub/): its input subscription with
    an ack deadline that covers the pipeline's in-flight budget and a dead-letter policy to a topic of its own,
    which Pub/Sub's service agent may use; and nothing that leaves the normal path is published where no
    subscription keeps it."""
    from pipelines.delivery import in_flight_budget
    from pipelines.options import InferenceOptions

    declared = config_connector.PubSub(docs)
    readers = []
    for submission in submissions(docs):
        try:
            options = submission.options()
        except ImportError:
            continue  # the pipelines check reports it
        inference = options.view_as(InferenceOptions)
        readers.append(
            _Reader(
                f"{ref(submission.job)} ({submission.module})",
                options,
                inference,
                declared.subscriptions.get(inference.input_subscription),
            )
        )
    subscriptions = [r.subscription.get("spec", {}) for r in readers if r.subscription]
    # A subscription's undeliverable messages must not go where a pipeline reads or publishes.
    pipeline_topics = {t for r in readers for t in (r.inference.output_topic, r.inference.dead_letter_topic)}
    pipeline_topics |= {declared.topic(spec.get("topicRef")) for spec in subscriptions}

    problems = []
    for reader in readers:
        for flag in ("output_topic", "dead_letter_topic"):
            if getattr(reader.inference, flag) not in declared.topics:
                problems.append(
                    f"{reader.where}: --{flag}={getattr(reader.inference, flag)} is not declared as a "
                    "PubSubTopic (base/pubsub/)"
                )
        if reader.subscription is None:
            problems.append(
                f"{reader.where}: --input_subscription={reader.inference.input_subscription} is not "
                f"declared as a PubSubSubscription (base/pubsub/); declared: {sorted(declared.subscriptions)}"
            )
            continue
        where = f"{reader.where}: {ref(reader.subscription)}"
        problems += _check_ack_deadline(
            where, reader.subscription, reader.inference.input_subscription, in_flight_budget(reader.options)
        )
        problems += _check_dead_letter_policy(where, reader.subscription, declared, pipeline_topics)
    # What left the normal path (the pipelines' dead letters, the undeliverable messages) must be kept somewhere.
    set_aside = {r.inference.dead_letter_topic for r in readers}
    set_aside |= {declared.topic(spec.get("deadLetterPolicy", {}).get("deadLetterTopicRef")) for spec in subscriptions}
    for topic in sorted(set_aside & set(declared.topics)):
        if not declared.subscribers(topic):
            problems.append(
                f"PubSubTopic {topic}: no subscription keeps what is published to it (Pub/Sub drops a "
                "message published to a topic without subscriptions)"
            )
    for subscription in declared.subscriptions.values():
        if subscription.get("spec", {}).get("expirationPolicy", {}).get("ttl") != "":
            problems.append(
                f'{ref(subscription)}: expirationPolicy.ttl must be "" (never): by default Pub/Sub deletes '
                "a subscription nobody pulls from for 31 days, with its backlog"
            )
    return problems


def _check_ack_deadline(where: str, subscription: dict, path: str, budget) -> list[str]:
    from pipelines.delivery import MAX_ACK_DEADLINE_SECS, MIN_ACK_DEADLINE_SECS, ack_deadline_problem

    deadline = subscription.get("spec", {}).get("ackDeadlineSeconds", PUBSUB_DEFAULT_ACK_DEADLINE_SECS)
    if not isinstance(deadline, int) or not MIN_ACK_DEADLINE_SECS <= deadline <= MAX_ACK_DEADLINE_SECS:
        return [
            f"{where}: ackDeadlineSeconds must be {MIN_ACK_DEADLINE_SECS} to {MAX_ACK_DEADLINE_SECS} (Pub/Sub's "
            f"bounds), got {deadline}"
        ]
    fix = f"Set spec.ackDeadlineSeconds to at least {budget.ack_deadline_needed()}"
    problem = ack_deadline_problem(deadline, budget, path, fix=fix)
    return [f"{where}: {problem}"] if problem else []


def _check_dead_letter_policy(where: str, subscription: dict, declared, pipeline_topics: set) -> list[str]:
    policy = subscription.get("spec", {}).get("deadLetterPolicy")
    if not policy:
        return [
            f"{where}: a deadLetterPolicy is required: without one, a message the pipeline can never acknowledge "
            "(e.g. its dead letter could not be published) is delivered again for as long as it is retained"
        ]
    problems = []
    attempts = policy.get("maxDeliveryAttempts")
    if not isinstance(attempts, int) or not MIN_DELIVERY_ATTEMPTS <= attempts <= MAX_DELIVERY_ATTEMPTS:
        problems.append(
            f"{where}: deadLetterPolicy.maxDeliveryAttempts must be {MIN_DELIVERY_ATTEMPTS} to "
            f"{MAX_DELIVERY_ATTEMPTS} (Pub/Sub's bounds), got {attempts!r}"
        )
    topic = declared.topic(policy.get("deadLetterTopicRef"))
    if topic not in declared.topics:
        return problems + [
            f"{where}: deadLetterPolicy.deadLetterTopicRef must name a PubSubTopic declared in the "
            f"manifests, got {policy.get('deadLetterTopicRef')}"
        ]
    if topic in pipeline_topics:
        problems.append(
            f"{where}: the dead-letter topic {topic} must be the subscription's own, not a topic a "
            "pipeline reads from or publishes to"
        )
    # Pub/Sub's service agent does the dead-lettering: it publishes the message, then acknowledges it here.
    for role, target in (("roles/pubsub.publisher", declared.topics[topic]), ("roles/pubsub.subscriber", subscription)):
        if not declared.agent_granted(role, target):
            problems.append(
                f"{where}: Pub/Sub's service agent needs {role} on {ref(target)} (an IAMPolicyMember "
                "with memberFrom.serviceIdentityRef to the pubsub.googleapis.com ServiceIdentity), or "
                "dead-lettering fails and the message is delivered again"
            )
    return problems
