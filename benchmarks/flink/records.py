"""Typed records of the Flink section: what the summary reads from flink.json's raw runs, and the summary itself
(figures, ratios, per setting, targets, where the time goes), written as flink-summary.json's `summary`."""

from __future__ import annotations

import dataclasses

from benchmarks.records import dump, dump_present, empty
from benchmarks.sections import BackfillFigures, Latency, StreamingSystem, Throughput

field = dataclasses.field


# --- read from the raw runs --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Cpu:
    """`cpu_during_drain` (benchmarks.flink.cpu.CpuMeter.stop)."""

    cpu_secs: dict[str, float] = field(default_factory=dict)
    cores_busy_total: float | None = None
    wall_secs: float | None = None


@dataclasses.dataclass(frozen=True)
class Drain:
    outputs: int | None = None
    events_per_sec: float | None = None
    events_per_sec_middle_80pct: float | None = None
    scored_at_events_per_sec: float | None = None
    cpu_during_drain: Cpu | None = None  # the plain consumer's drain keeps it here, a Flink run beside its drain


@dataclasses.dataclass(frozen=True)
class WorkerProfile:
    share: dict[str, float] | None = None  # category -> share of the bundle thread's wall time


@dataclasses.dataclass(frozen=True)
class JobRun:
    """One streaming job of one setting (benchmarks.flink.streaming.run_flink_config)."""

    drain: Drain = empty(Drain)
    latency: Latency = empty(Latency)
    light_load: Latency = empty(Latency)
    cpu_during_drain: Cpu | None = None
    cpu_during_light_load: Cpu | None = None
    pyspy: dict[str, WorkerProfile] = field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PlainConsumer:
    as_streaming_section: StreamingSystem = empty(StreamingSystem)
    drain: Drain = empty(Drain)
    latency: Latency = empty(Latency)
    light_load: Latency = empty(Latency)


@dataclasses.dataclass(frozen=True)
class Pull:
    messages: int = 0
    calls: int = 0
    events_per_sec: float | None = None


@dataclasses.dataclass(frozen=True)
class PiecesAlone:
    pull: Pull | None = None
    publish_bulk: Throughput = empty(Throughput)
    publish_free_running: Throughput = empty(Throughput)
    model_us_per_event: dict[str, float] | None = None  # benchmarks.ceiling's stage costs


@dataclasses.dataclass(frozen=True)
class FlinkBackfill:
    n_big: int | None = None
    direct_runner: BackfillFigures = empty(BackfillFigures)
    flink: BackfillFigures = empty(BackfillFigures)
    flink_parallelism_2: BackfillFigures = empty(BackfillFigures)
    flink_over_direct_runner_end_to_end: float | None = None
    flink_over_direct_runner_steady: float | None = None


@dataclasses.dataclass(frozen=True)
class FlinkSection:
    """The raw section (flink.json's `flink`), as far as the summary reads it."""

    streaming: dict[str, list[JobRun]] = field(default_factory=dict)
    plain_consumer: PlainConsumer = empty(PlainConsumer)
    pieces_alone: PiecesAlone = empty(PiecesAlone)
    pyspy_run: JobRun = empty(JobRun)
    backfill: FlinkBackfill = empty(FlinkBackfill)
    scale_out: dict[str, JobRun] = field(default_factory=dict)  # parallelism -> its drain
    light_load_rate: float | None = None


@dataclasses.dataclass(frozen=True)
class DirectRunnerStreaming:
    """The DirectRunner's streaming figures, quoted for scale, and which run they come from."""

    events_per_sec: float
    p50_ms: float | None
    p99_ms: float | None
    latency_rate_per_sec: float | None
    source: str  # "this run", or the results.json and the date of the run it comes from


# --- the summary -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SettingFigures:
    """One setting's medians over its runs."""

    runs: int | None = None
    drain_events_per_sec: float | None = None
    drain_events_per_sec_samples: list | None = None
    drain_middle_80pct_events_per_sec: float | None = None
    drain_scored_at_events_per_sec: float | None = None
    latency_rate_per_sec: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p50_ms_to_output_publish: float | None = None
    p99_ms_to_output_publish: float | None = None
    cores_busy_during_drain: float | None = None
    # CPU per event in the SDK workers and the TaskManager(s) together over the drain: the runner's cost.
    sdk_and_taskmanager_us_per_event: float | None = None


@dataclasses.dataclass(frozen=True)
class ScaleOutRow:
    """One parallelism's drain on two TaskManagers."""

    parallelism: int | None = None
    drain_events_per_sec: float | None = None
    sdk_and_taskmanager_us_per_event: float | None = None
    cores_busy_during_drain: float | None = None


@dataclasses.dataclass(frozen=True)
class Figures:
    flink_drain_events_per_sec: float | None = None
    flink_drain_events_per_sec_samples: list | None = None
    flink_latency_rate_per_sec: float | None = None
    flink_p50_ms: float | None = None
    flink_p99_ms: float | None = None
    flink_p50_ms_to_output_publish: float | None = None
    flink_p99_ms_to_output_publish: float | None = None
    flink_sdk_and_taskmanager_us_per_event: float | None = None
    light_load_rate_per_sec: float | None = None
    flink_light_p50_ms: float | None = None
    flink_light_p99_ms: float | None = None
    flink_light_p99_ms_to_output_publish: float | None = None
    # Cores the SDK workers and TaskManager keep busy at light load: mostly the fixed cost of a running job.
    flink_light_load_runner_cores: float | None = None
    plain_light_p50_ms: float | None = None
    plain_light_p99_ms: float | None = None
    plain_light_p99_ms_to_output_publish: float | None = None
    plain_consumer_us_per_event: float | None = None
    plain_drain_events_per_sec: float | None = None
    plain_sustained_events_per_sec: float | None = None
    plain_latency_rate_per_sec: float | None = None
    plain_p50_ms: float | None = None
    plain_p99_ms: float | None = None
    plain_p50_ms_to_output_publish: float | None = None
    plain_p99_ms_to_output_publish: float | None = None
    plain_as_streaming_section_latency_rate_per_sec: float | None = None
    plain_as_streaming_section_p50_ms: float | None = None
    plain_as_streaming_section_p99_ms: float | None = None
    direct_runner_streaming_events_per_sec: float | None = None
    direct_runner_streaming_p50_ms: float | None = None
    direct_runner_streaming_p99_ms: float | None = None
    direct_runner_streaming_from: str | None = None
    backfill_n: int | None = None
    backfill_flink_end_to_end_events_per_sec: float | None = None
    backfill_direct_end_to_end_events_per_sec: float | None = None
    backfill_flink_steady_events_per_sec: float | None = None
    backfill_direct_steady_events_per_sec: float | None = None
    backfill_flink_fixed_secs: float | None = None
    backfill_direct_fixed_secs: float | None = None
    backfill_flink_parallelism_2_end_to_end_events_per_sec: float | None = None


@dataclasses.dataclass(frozen=True)
class Ratios:
    flink_over_plain_drain: float | None = None
    flink_over_plain_as_streaming_section: float | None = None
    flink_over_direct_runner_streaming: float | None = None
    flink_over_plain_light_load_p99: float | None = None
    backfill_flink_over_direct_end_to_end: float | None = None
    backfill_flink_over_direct_steady: float | None = None


@dataclasses.dataclass(frozen=True)
class Target:
    what: str | None = None
    drain_2_5x_plain_met: bool | None = None
    p99_under_500ms_at_half_drain_met: bool | None = None  # to the prediction's publish (see Target.what)
    cpu_200us_per_event_met: bool | None = None
    light_load_p99_within_1_5x_plain_met: bool | None = None
    best_throughput_setting: str | None = None
    best_throughput_setting_events_per_sec: float | None = None
    best_throughput_setting_p99_ms: float | None = None
    best_setting_with_p99_under_500ms: str | None = None


@dataclasses.dataclass(frozen=True)
class Alone:
    emulator_pull_events_per_sec: float | None = None
    emulator_messages_per_pull: float | None = None
    publish_bulk_events_per_sec: float | None = None
    publish_free_running_events_per_sec: float | None = None
    project_work_us_per_event: float | None = None
    serial_sum_us_per_event: float | None = None


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Where the time goes; each part only where it was measured (the JSON names only those)."""

    note: list[str] = field(default_factory=list)
    flink_cpu_us_per_event: dict[str, float] | None = None
    flink_cpu_us_per_event_total: float | None = None
    flink_cores_busy: float | None = None
    flink_cpu_us_per_event_system_under_test: float | None = None
    plain_cpu_us_per_event: dict[str, float] | None = None
    plain_cpu_us_per_event_total: float | None = None
    alone: Alone | None = None
    sdk_worker_bundle_thread_share: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Summary:
    figures: Figures = empty(Figures)
    ratios: Ratios = empty(Ratios)
    per_config: dict[str, SettingFigures] = field(default_factory=dict)
    scale_out: list[ScaleOutRow] = field(default_factory=list)
    target: Target = empty(Target)
    breakdown: Breakdown = empty(Breakdown)

    def to_json(self) -> dict:
        return {**dump(self), "breakdown": dump_present(self.breakdown)}
