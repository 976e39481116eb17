"""Which flag applies to which way of running a job: the one table the options check reads, flag by flag.

A flag given for a path it does not apply to would be accepted and ignored, a silent misconfiguration: every
project flag has a scope here (a test walks the table against the parsers), and `scope_problems` refuses a flag
given outside its scope, or without the flag it needs.

The Flink runner's own options (checkpointing, bundles) are Java's: Beam's Python parser does not know them and
hands them to the job server as they are, which ignores a misspelled one. FLINK_JAVA_OPTIONS lists the ones the job
server takes, so that a flag outside both lists is refused as unknown (pipelines.spec) and these are refused on
other runners.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pipelines.paths import InferencePath, Mode, Runner


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where a flag applies (`why`, where the reason is not plain); `needs`: flags of which one must be given with it
    (`what` they give, in words)."""

    modes: frozenset[Mode] = frozenset(Mode)
    inference: frozenset[InferencePath] = frozenset(InferencePath)
    runners: frozenset[Runner] = frozenset(Runner)
    needs: tuple[str, ...] = ()
    what: str | None = None
    why: str | None = None


EVERYWHERE = Scope()
STREAMING = Scope(modes=frozenset({Mode.STREAMING}))
STREAMING_ON_FLINK = Scope(modes=frozenset({Mode.STREAMING}), runners=frozenset({Runner.FLINK}))
BACKFILL = Scope(modes=frozenset({Mode.BACKFILL}))
IN_PROCESS = Scope(inference=frozenset({InferencePath.IN_PROCESS}))
# In process and tfx-bsl read the model repository and load the model themselves; tfx-bsl keeps one Session per
# process, so it shares nothing across processes.
LOADS_MODEL = Scope(inference=frozenset({InferencePath.IN_PROCESS, InferencePath.TFX_BSL}))
TF_SERVING = Scope(inference=frozenset({InferencePath.TF_SERVING}))
CHALLENGER = Scope(needs=("shadow_label", "shadow_version"), what="a challenger")

# By argparse dest (the flag without its dashes; --no_warmup's dest is warmup).
SCOPES: Mapping[str, Scope] = {
    # streaming
    "input_subscription": STREAMING,
    "output_topic": STREAMING,
    "dead_letter_topic": STREAMING,
    "publish_timeout_secs": STREAMING,
    "pubsub_emulator_host": STREAMING,
    "pubsub_unreachable_secs": STREAMING_ON_FLINK,  # the pipeline's own reader's; Beam's reader retries forever
    "timestamp_attribute": dataclasses.replace(STREAMING, why="files carry no attributes"),
    # backfill
    "input": BACKFILL,
    "output": BACKFILL,
    "dead_letter_output": BACKFILL,
    "input_format": dataclasses.replace(BACKFILL, why="streaming reads and writes JSON messages"),
    "output_format": dataclasses.replace(BACKFILL, why="streaming reads and writes JSON messages"),
    # the model
    "inference": EVERYWHERE,
    "model_dir": LOADS_MODEL,
    "model_version": EVERYWHERE,
    "model_version_label": EVERYWHERE,
    "model_refresh_secs": dataclasses.replace(
        LOADS_MODEL,
        needs=("model_version_label", "canary_percent", "shadow_label"),
        what="a label to follow",
        why="TF Serving resolves a version label on every request",
    ),
    "share_model_across_processes": IN_PROCESS,
    "model_copies": IN_PROCESS,
    "warmup": LOADS_MODEL,
    # lifecycle
    "canary_percent": EVERYWHERE,
    "shadow_label": EVERYWHERE,
    "shadow_version": EVERYWHERE,
    "shadow_percent": CHALLENGER,
    "shadow_max_lag_secs": CHALLENGER,
    "shadow_tf_serving_target": dataclasses.replace(TF_SERVING, needs=CHALLENGER.needs, what=CHALLENGER.what),
    "shadow_output": CHALLENGER,
    # TF Serving
    "tf_serving_target": TF_SERVING,
    "tf_serving_timeout_secs": TF_SERVING,
    "tf_serving_retry_budget_secs": TF_SERVING,
    "tf_serving_max_in_flight": TF_SERVING,
    "tf_serving_api": TF_SERVING,
    "tf_serving_tls": TF_SERVING,
    "tf_serving_root_certificates": dataclasses.replace(TF_SERVING, needs=("tf_serving_tls",)),
    "tf_serving_client_certificate": dataclasses.replace(TF_SERVING, needs=("tf_serving_tls",)),
    "tf_serving_client_key": dataclasses.replace(TF_SERVING, needs=("tf_serving_tls",)),
    # batching and input
    "min_batch_size": EVERYWHERE,
    "max_batch_size": EVERYWHERE,
    "max_batch_duration_secs": EVERYWHERE,
    "max_event_bytes": EVERYWHERE,
    "deduplicate": EVERYWHERE,
    "deduplicate_ttl_secs": Scope(needs=("deduplicate",)),
    # pipelines.fraud_detection
    "fraud_threshold": EVERYWHERE,
}

# The Beam Flink runner's Java options (FlinkPipelineOptions of the job server's Beam) that Beam's Python parser does
# not declare, by their Python spelling (Beam turns checkpointing_interval into Java's checkpointingInterval). The
# Flink suite checks the list against the job server jar it builds (tests/test_local_flink.py).
FLINK_JAVA_OPTIONS = frozenset(
    {
        "allow_non_restored_state",
        "attached_mode",
        "auto_balance_write_files_sharding_enabled",
        "auto_watermark_interval",
        "checkpoint_timeout_millis",
        "checkpointing_interval",
        "checkpointing_mode",
        "disable_metrics",
        "enable_stable_input_drain",
        "execution_mode_for_batch",
        "execution_retry_delay",
        "externalized_checkpoints_enabled",
        "fail_on_checkpointing_errors",
        "faster_copy",
        "file_input_split_max_size_mb",
        "finish_bundle_before_checkpointing",
        "flink_conf_dir",
        "force_unaligned_checkpoint_enabled",
        "job_check_interval_in_secs",
        "latency_tracking_interval",
        "max_bundle_size",
        "max_bundle_time_mills",
        "min_pause_between_checkpoints",
        "num_concurrent_checkpoints",
        "number_of_execution_retries",
        "object_reuse",
        "operator_chaining",
        "re_iterable_group_by_key_result",
        "report_checkpoint_duration",
        "retain_externalized_checkpoints_on_cancellation",
        "savepoint_path",
        "shutdown_sources_after_idle_ms",
        "state_backend",
        "state_backend_factory",
        "state_backend_storage_path",
        "unaligned_checkpoint_enabled",
        "use_data_stream_for_batch",
    }
)


def flag_name(dest: str) -> str:
    return "--no_warmup" if dest == "warmup" else f"--{dest}"


def _where(scope: Scope, mode: Mode, runner: Runner, inference: InferencePath) -> str | None:
    """What the flag does not apply to, in the words of the flags that chose it; None when it applies."""
    if mode not in scope.modes:
        return f"applies to {' and '.join(sorted(scope.modes))} only"
    if runner not in scope.runners:
        return "applies to --runner=FlinkRunner only" if scope.runners == {Runner.FLINK} else "does not apply on Flink"
    if inference not in scope.inference:
        return f"does not apply to --inference={inference}"
    return None


def scope_problems(given: Mapping[str, object], mode: Mode, runner: Runner, inference: InferencePath) -> list[str]:
    """Each flag in `given` (dest -> value, defaults left out) outside its scope, or without a flag it needs."""
    problems = []
    for dest, scope in SCOPES.items():
        if dest not in given:
            continue
        where = _where(scope, mode, runner, inference)
        if where:
            problems.append(f"{flag_name(dest)} {where}" + (f": {scope.why}" if scope.why else ""))
        elif scope.needs and not any(given.get(need) for need in scope.needs):
            alternatives = " or ".join(flag_name(n) for n in scope.needs)
            needs = f"{scope.what}: give {alternatives}" if scope.what else alternatives
            problems.append(f"{flag_name(dest)} needs {needs}")
    return problems
