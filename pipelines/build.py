"""Wires a model's pipeline: a source, the shared Score transform, and sinks. Both entry points use it.

Streaming reads a Pub/Sub subscription and publishes to topics; backfill reads JSON Lines or TFRecord files and
writes JSON Lines or PredictionLog files (dead letters always JSON Lines).
Nothing between the ends knows which mode it is in.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, PipelineOptions, StandardOptions

from model_handlers.base import IsolatingModelHandler
from model_handlers.errors import UsageError
from model_handlers.interface import ModelInterface
from model_handlers.saved_model import SavedModelHandler
from model_handlers.tf_serving import PREDICT, TFServingHandler
from model_handlers.tfx_bsl_inference import TfxBslHandler
from pipelines.flink_watch import PubsubWatch
from pipelines.options import InferenceOptions, InferencePath, Mode, Plan, Runner
from pipelines.pubsub_checks import check_pubsub
from transforms.files import ReadEventFiles, WriteDeadLetters, WriteMessageBodies
from transforms.predictions import Decorate
from transforms.pubsub import Reader, ReadEvents
from transforms.pubsub_publish import AcknowledgeDuplicates, Destination, PublishOutcomes, PublishRecords
from transforms.scoring import Canary, Handlers, Score
from transforms.shadow import Shadow

_LOGGER = logging.getLogger(__name__)

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


def make_handler(
    interface: ModelInterface,
    options: InferenceOptions,
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


def make_handlers(interface: ModelInterface, options: InferenceOptions, inference: InferencePath) -> Handlers:
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


def build(
    pipeline: beam.Pipeline,
    interface: ModelInterface,
    options: InferenceOptions,
    plan: Plan,
    decorate: Decorate | None = None,
) -> None:
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


# Beam's Flink runner defaults suit throughput in batch, not a stream's latency (benchmarks/README.md, "flink"):
# a bundle closes after 1 s, and the runner sends the reader's ticks to the SDK worker only when 1 MB has piled
# up or the bundle ends, so a message waited for the end of its bundle to be pulled, and again to be scored.
STREAMING_BUNDLE_MILLIS = 50
DATA_BUFFER_TIME_LIMIT_MS = 5


def flink_streaming_defaults(pipeline_options: PipelineOptions, plan: Plan) -> list[str]:
    """The flags the launcher adds to a streaming job on Flink, each only where the user gave none:

    - `--finish_bundle_before_checkpointing`: by default Beam's Flink runner lets a bundle run across a checkpoint
      and keeps its pending output in the checkpoint, to emit again after a restore: outputs already published
      would be scored and published again, past --deduplicate, whose state was snapshotted before them. Finishing
      the bundle first keeps "in the checkpoint" meaning "published and acknowledged".
    - `--max_bundle_time_mills` (sic, Beam's Java spelling): a bundle's scored events leave when it ends.
    - `--experiments=data_buffer_time_limit_ms`: the reader's ticks reach the SDK worker within this long."""
    if not (plan.mode == Mode.STREAMING and plan.runner == Runner.FLINK):
        return []
    given = pipeline_options.get_all_options(retain_unknown_options=True)
    experiments = pipeline_options.view_as(DebugOptions).experiments or []
    added = []
    if given.get("finish_bundle_before_checkpointing") is None:
        added.append("--finish_bundle_before_checkpointing")
    if given.get("max_bundle_time_mills") is None:
        added.append(f"--max_bundle_time_mills={STREAMING_BUNDLE_MILLIS}")
    if not any(e.startswith("data_buffer_time_limit_ms=") for e in experiments):
        added.append(f"--experiments=data_buffer_time_limit_ms={DATA_BUFFER_TIME_LIMIT_MS}")
    return added


def _pubsub_emulator(options: InferenceOptions) -> None:
    """The emulator's address travels with the options, so that every worker finds it without an environment of
    its own; the launcher's PUBSUB_EMULATOR_HOST is the default, and Beam's own DirectRunner reader reads that."""
    if not options.pubsub_emulator_host and os.environ.get(EMULATOR_ENV):
        options.pubsub_emulator_host = os.environ[EMULATOR_ENV]
    if options.pubsub_emulator_host:
        os.environ[EMULATOR_ENV] = options.pubsub_emulator_host
        _LOGGER.info("Pub/Sub: the emulator at %s", options.pubsub_emulator_host)


def run(
    interface: ModelInterface,
    argv: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    decorate_from_options: Callable[[PipelineOptions], Decorate | None] | None = None,
) -> beam.runners.runner.PipelineResult:
    """Validates the options, builds the pipeline and starts it; returns Beam's PipelineResult."""
    pipeline_options = test_pipeline.options if test_pipeline is not None else PipelineOptions(argv)
    plan = Plan.of(pipeline_options)
    added = flink_streaming_defaults(pipeline_options, plan) if test_pipeline is None else []
    if added:
        _LOGGER.info("streaming on Flink: with %s", " ".join(added))
        pipeline_options = PipelineOptions([*(argv or []), *added])
    options = pipeline_options.view_as(InferenceOptions)
    options.validate()
    decorate = decorate_from_options(pipeline_options) if decorate_from_options else None
    if plan.mode == Mode.STREAMING:
        if not pipeline_options.view_as(StandardOptions).streaming:
            _LOGGER.info("reading Pub/Sub needs streaming mode: running with --streaming")
            pipeline_options.view_as(StandardOptions).streaming = True
        _pubsub_emulator(options)
        check_pubsub(pipeline_options, acknowledged_by_pipeline=plan.pipeline_acknowledges)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=pipeline_options)
    build(pipeline, interface, options, plan, decorate)
    return pipeline.run()


def main(prog: str, run_fn: Callable, description: str, extra_options: type | None = None) -> None:
    """Command-line front: `--help` lists the project's options; a UsageError (bad options, a missing model, topic
    or server) exits 2 with the reason, no traceback.
    A streaming job on Flink is watched while the launcher waits on it: workers that cannot reach Pub/Sub cancel
    it, and the launcher exits 1 with the reason (pipelines.flink_watch)."""
    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        parser = argparse.ArgumentParser(
            prog=prog,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Beam's own flags (--runner, --streaming, --direct_num_workers, ...) are accepted too.",
        )
        for options_class in filter(None, (InferenceOptions, extra_options)):
            options_class._add_argparse_args(parser)  # pylint: disable=protected-access
        parser.print_help()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv, watch = _watch_on_flink(prog, argv)
    try:
        result = run_fn(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if watch is not None:
        watch.start()
    try:
        result.wait_until_finish()
    except Exception:  # pylint: disable=broad-except
        if watch is None or not watch.reason:
            raise  # a failure of its own: Beam's message says what
    if watch is not None and watch.reason:
        print(f"error: the job's workers cannot reach Pub/Sub, so it was cancelled: {watch.reason}", file=sys.stderr)
        sys.exit(1)


def _watch_on_flink(prog: str, argv: list[str]) -> tuple[list[str], PubsubWatch | None]:
    """For a streaming job on a Flink cluster: a watch on it, and a job name to find it by (one is made up, and
    logged, when --job_name is not given)."""
    pipeline_options = PipelineOptions(argv)
    flink_master = pipeline_options.get_all_options(retain_unknown_options=True).get("flink_master")
    plan = Plan.of(pipeline_options)
    if not (plan.mode == Mode.STREAMING and plan.runner == Runner.FLINK and flink_master and ":" in flink_master):
        return argv, None
    job_name = pipeline_options.view_as(GoogleCloudOptions).job_name
    if not job_name:
        job_name = f"{prog.rsplit('.', 1)[-1].replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        argv = [*argv, f"--job_name={job_name}"]
        _LOGGER.info("the job is named %s on Flink (--job_name)", job_name)
    return argv, PubsubWatch(flink_master, job_name)
