"""The ways a job runs: streaming or backfill, on Flink or another runner, with the model in process, behind TF
Serving or in tfx-bsl. The options resolve into these once (pipelines.options.Plan); the scope table
(pipelines.scopes) says which flags each of them takes.
"""

from __future__ import annotations

import enum

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions


class Mode(enum.StrEnum):
    STREAMING = "streaming"  # Pub/Sub in, Pub/Sub out
    BACKFILL = "backfill"  # files in, files out, in batch mode


class Runner(enum.StrEnum):
    FLINK = "flink"  # the pipeline pulls from Pub/Sub itself and acknowledges after publishing
    BEAM = "beam"  # any other runner (the DirectRunner here): Beam's own Pub/Sub read, acknowledged on pull


class InferencePath(enum.StrEnum):
    IN_PROCESS = "in_process"
    TF_SERVING = "tf_serving"
    TFX_BSL = "tfx_bsl"


def is_flink(runner) -> bool:
    """Beam names a runner by a string (FlinkRunner, flink, ...) or an instance; the only difference that matters
    here is whether it is Flink's."""
    return runner is not None and "flink" in str(runner).lower()


def runner_of(options: PipelineOptions) -> Runner:
    return Runner.FLINK if is_flink(options.view_as(StandardOptions).runner) else Runner.BEAM
