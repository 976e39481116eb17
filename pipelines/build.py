"""Wires a model's pipeline: a source, the shared Score transform, and sinks. Both entry points use it.

Streaming reads a Pub/Sub subscription and publishes to topics; backfill reads JSON Lines or TFRecord files and
writes JSON Lines or PredictionLog files (dead letters always JSON Lines).
Nothing between the ends knows which mode it is in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import NoReturn

import apache_beam as beam

from model_handlers.base import IsolatingModelHandler
from model_handlers.interface import ModelInterface
from model_handlers.saved_model import SavedModelHandler
from model_handlers.tf_serving import PREDICT, TFServingHandler
from model_handlers.tfx_bsl_inference import TfxBslHandler
from pipelines.flink_watch import PubsubWatch
from pipelines.options import DerivedOptions, InferencePath, Mode
from pipelines.pubsub_checks import check_pubsub
from pipelines.spec import EMULATOR_ENV, JobSpec, Settings, parse
from plumbing import cli
from transforms.files import ReadEventFiles, WriteDeadLetters, WriteMessageBodies
from transforms.predictions import Decorate
from transforms.pubsub import Reader, ReadEvents
from transforms.pubsub_publish import AcknowledgeDuplicates, Destination, PublishOutcomes, PublishRecords
from transforms.scoring import Canary, Handlers, Score
from transforms.shadow import Shadow

_LOGGER = logging.getLogger(__name__)


def make_handler(
    interface: ModelInterface,
    options: DerivedOptions,
    inference: InferencePath,
    *,
    version: int | None = None,
    label: str | None = None,
    fallback_label: str | None = None,
    target: str | None = None,
) -> IsolatingModelHandler:
    """A handler scoring with `version`, or the version `label` names (else `fallback_label`'s), or the newest;
    over TF Serving, at `target` (default: --tf_serving_target)."""
    batching = dict(
        min_batch_size=options.min_batch_size,
        max_batch_size=options.max_batch_size,
        max_batch_duration_secs=options.max_batch_duration_secs,
    )
    if inference == InferencePath.TF_SERVING:
        return TFServingHandler(
            interface,
            target or options.tf_serving_target,
            model_version=version,
            version_label=label,
            fallback_label=fallback_label,
            timeout_secs=options.tf_serving_timeout_secs,
            retry_budget_secs=options.tf_serving_retry_budget_secs,
            max_in_flight=options.tf_serving_max_in_flight,
            api=options.tf_serving_api or PREDICT,
            tls=options.tf_serving_tls,
            root_certificates_file=options.tf_serving_root_certificates,
            client_certificate_file=options.tf_serving_client_certificate,
            client_key_file=options.tf_serving_client_key,
            **batching,
        )
    following = dict(
        model_version=version,
        version_label=label,
        fallback_label=fallback_label,
        refresh_secs=options.refresh_secs(),
        warmup=options.warmup,
    )
    if inference == InferencePath.TFX_BSL:
        return TfxBslHandler(interface, options.model_repository(), **following, **batching)
    return SavedModelHandler(
        interface,
        options.model_repository(),
        share_across_processes=options.share_model_across_processes,
        model_copies=options.model_copies,
        **following,
        **batching,
    )


def make_handlers(interface: ModelInterface, options: DerivedOptions, inference: InferencePath) -> Handlers:
    """The handler whose predictions go out, the canary's if a canary takes a share, the shadow's if one scores
    beside them."""
    handler = make_handler(interface, options, inference, version=options.model_version, label=options.champion_label())
    canary = shadow = None
    if options.canary_percent:
        canary_handler = make_handler(interface, options, inference, label="canary", fallback_label="stable")
        canary = Canary(canary_handler, options.canary_percent)
    if options.shadow_label or options.shadow_version:
        challenger = make_handler(
            interface,
            options,
            inference,
            version=options.shadow_version,
            label=options.shadow_label,
            target=options.shadow_tf_serving_target,
        )
        shadow = Shadow(challenger, options.shadow_percent, options.shadow_max_lag_secs)
    return Handlers(handler, canary, shadow)


def build(pipeline: beam.Pipeline, interface: ModelInterface, spec: JobSpec) -> None:
    """Wires the job into `pipeline`, reading the spec alone."""
    options, plan, decorate = spec.settings, spec.plan, spec.decorate
    handlers = make_handlers(interface, options, plan.inference)
    for handler in handlers.all():
        # From the launcher: an absent server or a mismatched signature stops the job before it starts.
        handler.preflight()
    _LOGGER.info("%s: %s on %s, scoring with %s", interface.name, plan.mode, plan.runner, handlers.describe())
    if plan.mode == Mode.STREAMING:
        reader = Reader.PULL if plan.pipeline_acknowledges else Reader.BEAM
        events = pipeline | "ReadEvents" >> ReadEvents(
            options.input_subscription, reader, options.pubsub_emulator_host, options.pubsub_unreachable_secs
        )
    else:
        events = pipeline | "ReadEvents" >> ReadEventFiles(options.input, options.input_format)
    scored = events | "Score" >> Score(
        handlers.predictions,
        canary=handlers.canary,
        shadow=handlers.shadow,
        max_event_bytes=options.max_event_bytes,
        decorate=decorate,
        input_format=options.input_format,
        output_format=options.output_format,
        timestamp_attribute=options.timestamp_attribute,
        deduplicate_ttl_secs=options.deduplicate_ttl_secs if options.deduplicate else None,
    )
    if plan.mode == Mode.STREAMING:
        destination = Destination(
            output_topic=options.output_topic,
            dead_letter_topic=options.dead_letter_topic,
            # Only the pipeline's own reader leaves acknowledging to the sink; Beam's acks on pull.
            subscription=options.input_subscription if plan.pipeline_acknowledges else None,
            emulator_host=options.pubsub_emulator_host,
            model=interface.name,
            publish_timeout_secs=options.publish_timeout_secs,
        )
        _ = (scored.predictions, scored.dead_letters) | "PublishOutcomes" >> PublishOutcomes(destination)
        if scored.duplicates is not None:
            _ = scored.duplicates | "AcknowledgeDuplicates" >> AcknowledgeDuplicates(destination)
        if scored.comparisons is not None:
            _ = scored.comparisons | "PublishComparisons" >> PublishRecords(
                options.shadow_output,
                options.pubsub_emulator_host,
                handlers.predictions.get_metrics_namespace(),
                options.publish_timeout_secs,
            )
    else:
        scored.predictions | "WritePredictions" >> WriteMessageBodies(options.output, options.output_format)
        scored.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(options.dead_letter_output, interface.name)
        if scored.comparisons is not None:
            scored.comparisons | "WriteComparisons" >> WriteMessageBodies(options.shadow_output)


def launch(interface: ModelInterface, spec: JobSpec, test_pipeline: beam.Pipeline | None = None):
    """Checks what the job needs outside (Pub/Sub), builds the pipeline from the spec and starts it; returns Beam's
    PipelineResult. `test_pipeline`: a pipeline to build into instead of a new one (its own options pick the runner)."""
    if spec.plan.mode == Mode.STREAMING:
        if spec.settings.pubsub_emulator_host:
            # Beam's own DirectRunner reader finds the emulator through the environment only.
            os.environ[EMULATOR_ENV] = spec.settings.pubsub_emulator_host
            _LOGGER.info("Pub/Sub: the emulator at %s", spec.settings.pubsub_emulator_host)
        check_pubsub(spec.pipeline_options(), acknowledged_by_pipeline=spec.plan.pipeline_acknowledges)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=spec.pipeline_options())
    build(pipeline, interface, spec)
    return pipeline.run()


def run(
    interface: ModelInterface,
    argv: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    extra_options: Sequence[type] = (),
    decorate_from: Callable[[Settings], Decorate | None] | None = None,
) -> beam.runners.runner.PipelineResult:
    """Parses `argv` (None: the process's arguments) into the job's spec, then launches it."""
    spec = parse(argv, prog=interface.name, extra_options=extra_options, decorate_from=decorate_from)
    return launch(interface, spec, test_pipeline)


def main(
    interface: ModelInterface,
    prog: str,
    description: str,
    extra_options: Sequence[type] = (),
    decorate_from: Callable[[Settings], Decorate | None] | None = None,
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """The command line (`argv`, by default the process's): one parse into a spec, then the job. A usage error (bad flags; a missing model, topic or
    server) exits 2 with the reason, no traceback (plumbing.cli).
    A streaming job on Flink is watched while the launcher waits on it: workers that cannot reach Pub/Sub cancel
    it, and the launcher exits 1 with the reason (pipelines.flink_watch)."""

    def job(argv: list[str]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        spec = parse(argv, prog=prog, description=description, extra_options=extra_options, decorate_from=decorate_from)
        result = launch(interface, spec)
        watch = PubsubWatch(*spec.watch).start() if spec.watch else None
        try:
            result.wait_until_finish()
        except Exception:  # pylint: disable=broad-except
            if watch is None or not watch.reason:
                raise  # a failure of its own: Beam's message says what
        if watch is not None and watch.reason:
            raise cli.EnvironmentProblem(f"the job's workers cannot reach Pub/Sub, so it was cancelled: {watch.reason}")

    cli.run(job, argv)
