"""How long a Pub/Sub message may be in flight, and the subscription's ack deadline that this requires.

On Flink the pipeline acknowledges a message only after what it became (a prediction or a dead letter) has been
published (transforms.pubsub_publish). Until then Pub/Sub holds the message for the subscription's ack deadline;
a message still in flight when the deadline passes is delivered again: a duplicate, never a loss, but with
`--deduplicate` a wasted scoring and elsewhere a second prediction. So the deadline must exceed the longest a
message can take between the pull and the acknowledgement, which the options bound:

- the runner's bundle: elements wait for their bundle (Flink's `--max_bundle_time_mills`, sic: Beam's Java option
  is `maxBundleTimeMills`, and a `--max_bundle_time_millis` never reaches it; default 1 s);
- stateful batching: `--max_batch_duration_secs`;
- inference of one batch: over TF Serving the whole wall time of its requests with their retries,
  `--tf_serving_retry_budget_secs`; in process an allowance, since a SavedModel call cannot be interrupted;
- the publish of its output, with the client's retries: `--publish_timeout_secs`;
- a margin for the acknowledgement itself and the runner's own hand-offs.

The launcher (pipelines.build) checks a real subscription's deadline against this before it submits the job, and
`deploy validate` checks the deployment's subscriptions against the submission arguments with the same function.
"""

from __future__ import annotations

import dataclasses
import math

# A batch of 256 events takes about 5 ms in process on 2 CPU cores; 10 s leaves room for a cold graph, a GC pause
# and a loaded machine.
IN_PROCESS_BATCH_ALLOWANCE_SECS = 10.0
# Beam's Flink runner finishes a bundle after this long unless --max_bundle_time_mills says otherwise.
DEFAULT_BUNDLE_SECS = 1.0
# The acknowledgement RPC and the runner's own hand-offs between steps.
MARGIN_SECS = 5.0
# Pub/Sub's bounds on a subscription's ack deadline.
MIN_ACK_DEADLINE_SECS, MAX_ACK_DEADLINE_SECS = 10, 600


@dataclasses.dataclass(frozen=True)
class InFlightBudget:
    """The parts of the longest time a message can spend between the pull and its acknowledgement, in seconds."""

    bundle: float
    batching: float
    inference: float
    publish: float
    margin: float = MARGIN_SECS

    @property
    def total(self) -> float:
        return self.bundle + self.batching + self.inference + self.publish + self.margin

    def ack_deadline_needed(self) -> int:
        """The smallest whole ack deadline that covers the budget (Pub/Sub takes whole seconds)."""
        return max(MIN_ACK_DEADLINE_SECS, math.ceil(self.total))

    def describe(self) -> str:
        parts = [
            f"bundle {self.bundle:g}",
            f"batching {self.batching:g}",
            f"inference {self.inference:g}",
            f"publish {self.publish:g}",
            f"margin {self.margin:g}",
        ]
        return f"{self.total:g} s ({' + '.join(parts)})"


def in_flight_budget(pipeline_options) -> InFlightBudget:
    """The budget of a streaming pipeline, from its PipelineOptions (Beam's and the project's)."""
    from pipelines.options import InferenceOptions, InferencePath

    options = pipeline_options.view_as(InferenceOptions)
    all_options = pipeline_options.get_all_options(retain_unknown_options=True)
    bundle_millis = all_options.get("max_bundle_time_mills")
    inference = (
        options.tf_serving_retry_budget_secs
        if options.inference == InferencePath.TF_SERVING
        else IN_PROCESS_BATCH_ALLOWANCE_SECS
    )
    return InFlightBudget(
        bundle=float(bundle_millis) / 1000 if bundle_millis else DEFAULT_BUNDLE_SECS,
        batching=float(options.max_batch_duration_secs or 0),
        inference=float(inference),
        publish=float(options.publish_timeout_secs),
    )


def ack_deadline_problem(
    ack_deadline_secs: int, budget: InFlightBudget, subscription: str, fix: str | None = None
) -> str | None:
    """Why a subscription's ack deadline is too short for the budget, with the fix (by default the gcloud command
    that raises it); None when it covers it."""
    if ack_deadline_secs >= budget.total:
        return None
    needed = budget.ack_deadline_needed()
    if needed > MAX_ACK_DEADLINE_SECS:
        fix = f"The budget exceeds Pub/Sub's largest deadline, {MAX_ACK_DEADLINE_SECS} s: lower it"
    elif fix is None:
        fix = f"Raise it (gcloud pubsub subscriptions update {subscription.rsplit('/', 1)[-1]} --ack-deadline={needed})"
    return (
        f"the ack deadline of {subscription} is {ack_deadline_secs} s, shorter than the longest a message can be in "
        f"flight, {budget.describe()}: Pub/Sub would deliver messages again while they are being scored. {fix}, "
        "or shorten --max_bundle_time_mills, --max_batch_duration_secs, --tf_serving_retry_budget_secs or "
        "--publish_timeout_secs"
    )
