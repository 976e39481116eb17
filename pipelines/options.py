"""The project's pipeline options, beside Beam's own flags (--runner, --streaming, --direct_num_workers, ...).

Combinations are checked once, in `validate`, before anything starts, with messages that say what to change.
What the options decide (streaming or backfill, which runner, where the model runs) is resolved once, into a
`Plan` of enums, and every later decision reads the plan.
"""

from __future__ import annotations

import dataclasses
import re

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from model_handlers.errors import UsageError
from model_handlers.tf_serving_protocol import APIS as TF_SERVING_APIS
from pipelines.paths import InferencePath, Mode, Runner, runner_of
from pipelines.scopes import scope_problems
from transforms.events import DEFAULT_MAX_EVENT_BYTES
from transforms.messages import Format
from transforms.pubsub_pull import UNREACHABLE_AFTER_SECS
from transforms.shadow import DEFAULT_MAX_LAG_SECS as DEFAULT_SHADOW_MAX_LAG_SECS

# A Google Cloud project id as Beam's Pub/Sub transforms accept one (apache_beam.io.gcp.pubsub.PROJECT_ID_REGEXP):
# checked here, so that a short one is a usage error before anything starts, not Beam's ValueError mid-build.
PROJECT_ID = r"[a-z][-a-z0-9:.]{4,61}[a-z0-9]"
SUBSCRIPTION_RE = re.compile(rf"^projects/{PROJECT_ID}/subscriptions/[^/]{{3,255}}$")
TOPIC_RE = re.compile(rf"^projects/{PROJECT_ID}/topics/[^/]{{3,255}}$")
RESOURCE_FORM = "(a project id is 6 to 63 characters: lowercase letters, digits and dashes, starting with a letter)"


DEFAULT_MODEL_DIR = "models"
# How often a pipeline scoring in process checks the labels it follows: a rollout takes effect within this long.
DEFAULT_MODEL_REFRESH_SECS = 30.0
# Publishing an output, with the client's retries, before the message is left for Pub/Sub to deliver again.
DEFAULT_PUBLISH_TIMEOUT_SECS = 10.0
# Longer than Pub/Sub's default ack deadline (10 s) many times over, and than a restart: a redelivery comes within it.
DEFAULT_DEDUPLICATE_TTL_SECS = 600
TARGET_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")
STREAMING_FLAGS = ("input_subscription", "output_topic", "dead_letter_topic")
BACKFILL_FLAGS = ("input", "output", "dead_letter_output")


class InvalidOptions(UsageError, ValueError):
    """A flag, or a combination of flags, that cannot work: reported before anything starts."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the options decide, resolved once when the pipeline is built."""

    mode: Mode
    runner: Runner
    inference: InferencePath

    @classmethod
    def of(cls, options: PipelineOptions) -> Plan:
        inference = options.view_as(InferenceOptions)
        return cls(inference.mode(), runner_of(options), InferencePath(inference.inference))

    @property
    def pipeline_acknowledges(self) -> bool:
        """Whether the pipeline acknowledges its Pub/Sub messages itself, after publishing what each became
        (transforms.pubsub_pull): on Flink. Beam's own reader acknowledges on pull."""
        return self.mode == Mode.STREAMING and self.runner == Runner.FLINK


class DerivedOptions:
    """What the project's flags mean together, read the same from the parser's view (InferenceOptions) and from the
    frozen settings the build reads (pipelines.spec.Settings)."""

    def model_repository(self) -> str:
        return self.model_dir or DEFAULT_MODEL_DIR

    def follows_labels(self) -> bool:
        return bool(self.champion_label() or self.shadow_label)

    def champion_label(self) -> str | None:
        """The label the predictions follow: --model_version_label, or stable when a canary takes a share."""
        return self.model_version_label or ("stable" if self.canary_percent else None)

    def refresh_secs(self) -> float:
        """How often a pipeline scoring in process checks its labels (0: never); TF Serving needs no checks."""
        if self.inference == InferencePath.TF_SERVING:
            return 0
        return DEFAULT_MODEL_REFRESH_SECS if self.model_refresh_secs is None else self.model_refresh_secs

    def mode(self) -> Mode:
        return Mode.STREAMING if self.input_subscription else Mode.BACKFILL


class InferenceOptions(DerivedOptions, PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        streaming = parser.add_argument_group("streaming (Pub/Sub in, Pub/Sub out)")
        streaming.add_argument("--input_subscription", help="projects/<project>/subscriptions/<id> to read events from")
        streaming.add_argument("--output_topic", help="projects/<project>/topics/<id> for predictions")
        streaming.add_argument("--dead_letter_topic", help="projects/<project>/topics/<id> for dead letters")
        streaming.add_argument(
            "--publish_timeout_secs",
            type=float,
            default=DEFAULT_PUBLISH_TIMEOUT_SECS,
            help="how long publishing one output may take, with the client's retries; past it the input message is "
            "left unacknowledged for Pub/Sub to deliver again",
        )
        streaming.add_argument(
            "--pubsub_emulator_host",
            help="host:port of a Pub/Sub emulator, for the launcher and every worker (default: the launcher's "
            "PUBSUB_EMULATOR_HOST); without it, Google Cloud Pub/Sub",
        )
        streaming.add_argument(
            "--pubsub_unreachable_secs",
            type=float,
            default=UNREACHABLE_AFTER_SECS,
            help="on Flink: a worker whose pulls have all failed for this long fails, with the reason, so that the "
            "job does not run reading nothing (transient errors are retried in place until then)",
        )
        streaming.add_argument(
            "--timestamp_attribute",
            help="message attribute holding the event time (RFC 3339 or ms since epoch); a message without a "
            "readable one is dead-lettered; default: the publish time",
        )
        backfill = parser.add_argument_group("backfill (files in and out)")
        backfill.add_argument("--input", help="events: a local path or gs:// glob")
        backfill.add_argument("--output", help="path prefix for prediction files (<prefix>-SSSSS-of-NNNNN.<format>)")
        backfill.add_argument("--dead_letter_output", help="path prefix for dead-letter files (JSON Lines)")
        backfill.add_argument(
            "--input_format",
            type=Format,
            default=Format.JSONL,
            choices=[Format.JSONL, Format.TFRECORD],
            help="jsonl (one JSON event a line) or tfrecord (tf.train.Examples with an event_id bytes feature; "
            "gzip or deflate by extension)",
        )
        backfill.add_argument(
            "--output_format",
            type=Format,
            default=Format.JSONL,
            choices=[Format.JSONL, Format.PREDICTION_LOG],
            help="jsonl (one JSON prediction a line) or prediction_log (TFRecord of TF Serving PredictionLogs, as "
            "TFX's BulkInferrer writes)",
        )

        model = parser.add_argument_group("model")
        model.add_argument(
            "--inference",
            type=InferencePath,
            default=InferencePath.IN_PROCESS,
            choices=list(InferencePath),
            help="where the model runs: in_process (the SavedModel inside each Beam worker), tf_serving (gRPC) or "
            "tfx_bsl (in-process, tfx-bsl's model handler on the classify/regress signature)",
        )
        model.add_argument(
            "--model_dir",
            help=f"in_process, tfx_bsl: model repository, <model_dir>/<name>/<version>/ (default: {DEFAULT_MODEL_DIR})",
        )
        model.add_argument("--model_version", type=int, help="pin a model version (default: the newest)")
        model.add_argument(
            "--model_version_label",
            help="score with the version this label names, e.g. stable: TF Serving's version_labels, or in process "
            "the repository's <model_dir>/<name>/labels.json (python -m deploy rollout-model --model_dir), "
            "followed while the pipeline runs",
        )
        model.add_argument(
            "--model_refresh_secs",
            type=float,
            help=f"in_process, tfx_bsl: check the labels followed this often; a moved label's version is loaded, "
            f"checked and warmed up beside the serving one, then swapped in between batches (default: "
            f"{DEFAULT_MODEL_REFRESH_SECS:g}; 0: resolve once, at start). TF Serving resolves labels per request",
        )
        lifecycle = parser.add_argument_group("model lifecycle (version labels: stable, canary, previous)")
        lifecycle.add_argument(
            "--canary_percent",
            type=float,
            help="score this share of events (0 < P <= 100, by a stable hash of event_id) with the version labelled "
            "canary, the rest with stable; while no canary is labelled, every event goes to stable",
        )
        lifecycle.add_argument(
            "--shadow_label",
            choices=["stable", "canary", "previous"],
            help="score events with this label's version too (the challenger) and compare: its answers go to "
            "--shadow_output, never to the output topic",
        )
        lifecycle.add_argument("--shadow_version", type=int, help="as --shadow_label, with a pinned version")
        lifecycle.add_argument(
            "--shadow_percent",
            type=float,
            default=100.0,
            help="the share of events the challenger scores (by a stable hash of event_id; default: all)",
        )
        lifecycle.add_argument(
            "--shadow_max_lag_secs",
            type=float,
            default=DEFAULT_SHADOW_MAX_LAG_SECS,
            help="an event the challenger reaches this long after the champion scored it is shed (recorded as "
            "such, not scored), so that a slow challenger never holds the predictions back",
        )
        lifecycle.add_argument(
            "--shadow_tf_serving_target",
            help="tf_serving: the challenger's own TF Serving, host:port (default: --tf_serving_target), so that "
            "shadow traffic does not load the server the predictions come from",
        )
        lifecycle.add_argument(
            "--shadow_output",
            help="where comparison records go: projects/<project>/topics/<id> when streaming, a path prefix for "
            "JSON Lines files in a backfill",
        )
        model.add_argument(
            "--share_model_across_processes",
            action="store_true",
            help="one model copy per machine, shared by all SDK worker processes (default: one per process)",
        )
        model.add_argument(
            "--model_copies", type=int, help="model copies per machine; implies sharing across processes"
        )
        model.add_argument("--no_warmup", dest="warmup", action="store_false", help="skip the warm-up requests on load")

        serving = parser.add_argument_group("tf_serving")
        serving.add_argument("--tf_serving_target", help="TF Serving's gRPC address, host:port")
        serving.add_argument(
            "--tf_serving_timeout_secs",
            type=float,
            default=5.0,
            help="deadline of each request, cut to what is left of --tf_serving_retry_budget_secs",
        )
        serving.add_argument(
            "--tf_serving_retry_budget_secs",
            type=float,
            default=30.0,
            help="the longest one batch's scoring may take, wall time: its requests, their retries and backoff, and "
            "the element-by-element rescoring of a batch that failed permanently; past it the rest of the batch is "
            "dead-lettered as retryable. The subscription's ack deadline must cover it",
        )
        serving.add_argument(
            "--tf_serving_max_in_flight", type=int, default=4, help="requests in flight at once per worker process"
        )
        serving.add_argument(
            "--tf_serving_api",
            choices=list(TF_SERVING_APIS),
            help="predict (raw features to serving_default; the default) or classify_regress (tf.Examples to the "
            "classify/regress signature through Classify or Regress)",
        )
        serving.add_argument("--tf_serving_tls", action="store_true", help="connect over TLS")
        serving.add_argument("--tf_serving_root_certificates", help="PEM file of roots to verify the server (with TLS)")
        serving.add_argument(
            "--tf_serving_client_certificate",
            help="PEM file of the certificate (chain) the client presents: mutual TLS (with TLS and "
            "--tf_serving_client_key)",
        )
        serving.add_argument(
            "--tf_serving_client_key", help="PEM file of the private key of --tf_serving_client_certificate"
        )

        batching = parser.add_argument_group("batching")
        batching.add_argument(
            "--min_batch_size", type=int, default=1, help="the fewest events RunInference batches together"
        )
        batching.add_argument(
            "--max_batch_size", type=int, default=256, help="the most events in one batch: one model call or request"
        )
        batching.add_argument(
            "--max_batch_duration_secs",
            type=int,
            help="streaming: hold a batch at most this long across bundles (stateful batching); default: batch "
            "within a bundle",
        )
        parser.add_argument(
            "--max_event_bytes",
            type=int,
            default=DEFAULT_MAX_EVENT_BYTES,
            help="payloads larger than this are dead-lettered unread",
        )
        parser.add_argument(
            "--deduplicate",
            action="store_true",
            help="at most one prediction per event_id: a repeat of an event predicted within "
            "--deduplicate_ttl_secs is dropped after inference (keyed state; a failed event is never remembered, so "
            "its replay is scored)",
        )
        parser.add_argument(
            "--deduplicate_ttl_secs",
            type=int,
            default=DEFAULT_DEDUPLICATE_TTL_SECS,
            help="how long (processing time) an event_id is remembered with --deduplicate",
        )

    def validate(self) -> None:
        """Raises ValueError listing every problem with the combination of options."""
        problems = []
        given = lambda names: [f"--{n}" for n in names if getattr(self, n)]  # noqa: E731
        streaming_given, backfill_given = given(STREAMING_FLAGS), given(BACKFILL_FLAGS)
        if streaming_given and backfill_given:
            problems.append(
                f"choose streaming or backfill, not both: got {', '.join(streaming_given)} and {', '.join(backfill_given)}"
            )
        elif not streaming_given and not backfill_given:
            problems.append(
                "nothing to read: give --input_subscription, --output_topic and --dead_letter_topic (streaming), "
                "or --input, --output and --dead_letter_output (backfill)"
            )
        elif streaming_given:
            problems += [f"streaming needs --{n}" for n in STREAMING_FLAGS if not getattr(self, n)]
            if self.input_subscription and not SUBSCRIPTION_RE.match(self.input_subscription):
                problems.append(
                    f"--input_subscription must look like projects/<project>/subscriptions/<id> {RESOURCE_FORM}, got "
                    f"{self.input_subscription!r}"
                )
            for name in ("output_topic", "dead_letter_topic"):
                value = getattr(self, name)
                if value and not TOPIC_RE.match(value):
                    problems.append(
                        f"--{name} must look like projects/<project>/topics/<id> {RESOURCE_FORM}, got {value!r}"
                    )
            if self.output_topic and self.output_topic == self.dead_letter_topic:
                problems.append("--output_topic and --dead_letter_topic must differ")
            checkpoints = self.get_all_options(retain_unknown_options=True).get("checkpointing_interval")
            if runner_of(self) == Runner.FLINK and self.deduplicate and not checkpoints:
                problems.append(
                    "--deduplicate on Flink needs --checkpointing_interval=MS: the event ids it remembers survive a "
                    "restart only in checkpoints"
                )
            if self.pubsub_unreachable_secs <= 0:
                problems.append(f"--pubsub_unreachable_secs must be positive, got {self.pubsub_unreachable_secs}")
            if self.publish_timeout_secs <= 0:
                problems.append(f"--publish_timeout_secs must be positive, got {self.publish_timeout_secs}")
        else:
            problems += [f"backfill needs --{n}" for n in BACKFILL_FLAGS if not getattr(self, n)]
            if self.view_as(StandardOptions).streaming:
                problems.append("backfill runs in batch mode: drop --streaming, or read from --input_subscription")
            if self.output and self.output == self.dead_letter_output:
                problems.append("--output and --dead_letter_output must differ")
        if streaming_given or backfill_given:
            given_flags = self.get_all_options(drop_default=True, retain_unknown_options=True)
            problems += scope_problems(given_flags, self.mode(), runner_of(self), InferencePath(self.inference))
        problems += self._inference_problems()
        if self.min_batch_size < 1 or self.max_batch_size < self.min_batch_size:
            problems.append(
                f"need 1 <= --min_batch_size <= --max_batch_size, got {self.min_batch_size} and {self.max_batch_size}"
            )
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs < 1:
            problems.append(f"--max_batch_duration_secs must be at least 1, got {self.max_batch_duration_secs}")
        if self.model_copies is not None and self.model_copies < 1:
            problems.append(f"--model_copies must be at least 1, got {self.model_copies}")
        if self.model_version is not None and self.model_version < 1:
            problems.append(f"--model_version must be a positive integer, got {self.model_version}")
        if self.deduplicate_ttl_secs < 1:
            problems.append(f"--deduplicate_ttl_secs must be at least 1, got {self.deduplicate_ttl_secs}")
        if self.max_event_bytes < 1:
            problems.append(f"--max_event_bytes must be positive, got {self.max_event_bytes}")
        if problems:
            raise InvalidOptions("invalid options:\n  - " + "\n  - ".join(problems))

    def _shadow_problems(self) -> list[str]:
        problems = []
        shadowed = self.shadow_label or self.shadow_version is not None
        if self.shadow_label and self.shadow_version is not None:
            problems.append("shadow --shadow_label or --shadow_version, not both")
        if self.shadow_version is not None and self.shadow_version < 1:
            problems.append(f"--shadow_version must be a positive integer, got {self.shadow_version}")
        if not 0 < self.shadow_percent <= 100:
            problems.append(f"--shadow_percent must be above 0 and at most 100, got {self.shadow_percent}")
        if self.shadow_max_lag_secs <= 0:
            problems.append(f"--shadow_max_lag_secs must be positive, got {self.shadow_max_lag_secs}")
        if self.shadow_tf_serving_target and not TARGET_RE.match(self.shadow_tf_serving_target):
            problems.append(
                f"--shadow_tf_serving_target must look like host:port, got {self.shadow_tf_serving_target!r}"
            )
        if shadowed and not self.shadow_output:
            problems.append("a shadow needs --shadow_output, where its comparison records go")
        if self.shadow_output and self.mode() == Mode.STREAMING:
            if not TOPIC_RE.match(self.shadow_output):
                problems.append(
                    f"--shadow_output must look like projects/<project>/topics/<id>, got {self.shadow_output!r}"
                )
            elif self.shadow_output in (self.output_topic, self.dead_letter_topic):
                problems.append("--shadow_output must differ from --output_topic and --dead_letter_topic")
        elif self.shadow_output and self.shadow_output in (self.output, self.dead_letter_output):
            problems.append("--shadow_output must differ from --output and --dead_letter_output")
        return problems

    def _inference_problems(self) -> list[str]:
        problems = []
        if self.model_version is not None and self.model_version_label:
            problems.append("pin --model_version or --model_version_label, not both")
        if self.canary_percent is not None:
            if not 0 < self.canary_percent <= 100:
                problems.append(f"--canary_percent must be above 0 and at most 100, got {self.canary_percent}")
            if self.model_version is not None:
                problems.append("--canary_percent splits traffic between labels: drop --model_version")
            if self.model_version_label not in (None, "stable"):
                problems.append(
                    f"--canary_percent shares traffic between stable and canary, so the rest follows stable, "
                    f"not --model_version_label={self.model_version_label}"
                )
        problems += self._shadow_problems()
        if self.model_refresh_secs is not None and self.model_refresh_secs < 0:
            problems.append(f"--model_refresh_secs must be 0 (never) or positive, got {self.model_refresh_secs}")
        if self.inference == InferencePath.TF_SERVING:
            if not self.tf_serving_target:
                problems.append("--inference=tf_serving needs --tf_serving_target=host:port")
            elif not TARGET_RE.match(self.tf_serving_target):
                problems.append(f"--tf_serving_target must look like host:port, got {self.tf_serving_target!r}")
            if bool(self.tf_serving_client_certificate) != bool(self.tf_serving_client_key):
                problems.append(
                    "--tf_serving_client_certificate and --tf_serving_client_key go together: a certificate is "
                    "presented with its key"
                )
            if self.tf_serving_timeout_secs <= 0:
                problems.append(f"--tf_serving_timeout_secs must be positive, got {self.tf_serving_timeout_secs}")
            if self.tf_serving_retry_budget_secs <= 0:
                problems.append(
                    f"--tf_serving_retry_budget_secs must be positive (it bounds the wall time of one batch), got "
                    f"{self.tf_serving_retry_budget_secs}"
                )
            if self.tf_serving_max_in_flight < 1:
                problems.append(f"--tf_serving_max_in_flight must be at least 1, got {self.tf_serving_max_in_flight}")
        return problems
