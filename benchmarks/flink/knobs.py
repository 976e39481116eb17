"""The runner settings the Flink benchmark measures (CONFIGS) and the pipeline flags each one becomes."""

from __future__ import annotations

MODEL = "fraud"
# Light load: the main job's rate per model (`make demo`), where latency is the batching's and the bundles' floor.
LIGHT_LOAD_RATE = 40
# Scale-out rows: drains at these parallelisms on a cluster of two TaskManagers (two slots each).
SCALE_OUT = (1, 2, 4)

# The knobs. Beam's and Flink's defaults: checkpoints as LocalFlink.pipeline_args sets them (5 s); bundles of at
# most 1,000 elements or 1,000 ms (the FlinkRunner's defaults; the source's elements are the streaming impulse's
# ticks, 10 ms apart, so a bundle is closed by time); parallelism 1 (the cluster's default); RunInference batches
# of at most 256; and the runner's data plane sends elements to the SDK worker only when 1 MB has piled up or the
# bundle ends (Beam Java's BeamFnDataOutboundAggregator: no time limit unless the experiment
# data_buffer_time_limit_ms sets one), so a tick waits for the end of its bundle before the SDK worker pulls.
BEAM_DEFAULTS = {
    "checkpointing_interval": 5000,
    "max_bundle_time_millis": 1000,
    "max_bundle_size": 1000,
    "parallelism": 1,
    "max_batch_size": 256,
    "data_buffer_time_limit_ms": None,
}
# The default this benchmark picked from the sweep below (benchmarks/README.md, "flink"), which the launcher also
# applies to a streaming job on Flink (pipelines.spec.flink_streaming_defaults): ticks reach the SDK worker within
# 5 ms, bundles of 50 ms (a bundle's predictions leave when it ends), and two source subtasks with an SDK worker
# process each (the cluster's two slots).
DEFAULT = {**BEAM_DEFAULTS, "max_bundle_time_millis": 50, "parallelism": 2, "data_buffer_time_limit_ms": 5}
# Each a change from DEFAULT, one knob at a time (beam_defaults: all of Beam's and Flink's defaults at once).
CONFIGS = {
    "default": {},
    "beam_defaults": BEAM_DEFAULTS,
    "no_flush_limit": {"data_buffer_time_limit_ms": None},
    "flush_1ms": {"data_buffer_time_limit_ms": 1},
    "parallelism_1": {"parallelism": 1},
    "bundle_200ms": {"max_bundle_time_millis": 200},
    "bundle_1000ms": {"max_bundle_time_millis": 1000},
    "checkpoint_1s": {"checkpointing_interval": 1000},
    "checkpoint_30s": {"checkpointing_interval": 30000},
    "batch_1000": {"max_batch_size": 1000},
}


def settings(name: str) -> dict:
    """Every knob's value in the named setting."""
    return {**DEFAULT, **CONFIGS[name]}


def changed_knobs(name: str) -> dict:
    """The knobs where the named setting (known or not) differs from DEFAULT."""
    return {k: v for k, v in {**DEFAULT, **CONFIGS.get(name, {})}.items() if DEFAULT.get(k) != v}


def config_args(flink, config: dict) -> list[str]:
    """Pipeline flags for a knob setting on this cluster (SDK worker processes follow --parallelism)."""
    c = {**DEFAULT, **config}
    return [
        *flink.pipeline_args(streaming=True, checkpointing_interval_ms=c["checkpointing_interval"]),
        # Beam's Java option is maxBundleTimeMills (sic): a --max_bundle_time_millis never reaches the runner.
        f"--max_bundle_time_mills={c['max_bundle_time_millis']}",
        f"--max_bundle_size={c['max_bundle_size']}",
        f"--parallelism={c['parallelism']}",
        f"--sdk_worker_parallelism={c['parallelism']}",
        f"--max_batch_size={c['max_batch_size']}",
        # 0: no time limit, Beam's default (the launcher would otherwise add its own, pipelines.build).
        f"--experiments=data_buffer_time_limit_ms={c['data_buffer_time_limit_ms'] or 0}",
    ]
