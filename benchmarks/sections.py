"""Typed views of the figures that summaries read from results.json's sections (ceiling, backfill, streaming),
shared by the report (benchmarks.report) and the Flink section, which quotes the same kinds of figures.

Each record declares only what is read back; the JSON keeps every sample (benchmarks.records says how missing
figures read).
"""

from __future__ import annotations

import dataclasses

from benchmarks.records import empty


@dataclasses.dataclass(frozen=True)
class BatchRate:
    """The signature at one batch size (benchmarks.ceiling)."""

    events_per_sec: float | None = None
    median_latency_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class Stages:
    us_per_event: dict[str, float] | None = None  # stage -> microseconds per event, total_outside_beam among them


@dataclasses.dataclass(frozen=True)
class CeilingModel:
    """One model's entry in the `ceiling` section."""

    by_batch: dict[str, BatchRate] = dataclasses.field(default_factory=dict)
    stages: Stages = empty(Stages)

    def batch(self, size: str) -> BatchRate:
        return self.by_batch.get(size, BatchRate())

    @property
    def outside_beam_us(self) -> float | None:
        """The project's own work per event outside Beam (parse, predict, format), in microseconds."""
        return (self.stages.us_per_event or {}).get("total_outside_beam")


@dataclasses.dataclass(frozen=True)
class BackfillFigures:
    """A backfill's figures, as each kind of run names them: a suite on one runner (end to end at N_big, steady
    state and fixed cost from two sizes), a `--direct_num_workers=2` variant, or the large backfill (n_events)."""

    n_big: int | None = None
    n_events: int | None = None
    end_to_end_events_per_sec: float | None = None
    events_per_sec: float | None = None
    steady_events_per_sec: float | None = None
    fixed_secs: float | None = None


@dataclasses.dataclass(frozen=True)
class BackfillSection:
    fraud: BackfillFigures = empty(BackfillFigures)
    price: BackfillFigures = empty(BackfillFigures)
    variants: dict[str, BackfillFigures] = dataclasses.field(default_factory=dict)
    large: BackfillFigures = empty(BackfillFigures)

    def suite(self, model: str) -> BackfillFigures:
        return getattr(self, model)

    def variant(self, name: str) -> BackfillFigures:
        return self.variants.get(name, BackfillFigures())


@dataclasses.dataclass(frozen=True)
class Percentiles:
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class Latency:
    """A latency phase (benchmarks.streaming.latency_phase): the rate it ran at and publish -> prediction received;
    on Flink's runs also to the prediction's publish."""

    rate_per_sec: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    to_output_publish: Percentiles = empty(Percentiles)


@dataclasses.dataclass(frozen=True)
class Throughput:
    events_per_sec: float | None = None


@dataclasses.dataclass(frozen=True)
class StreamingSystem:
    """One system of the `streaming` section (benchmarks.streaming.measure)."""

    sustained: Throughput = empty(Throughput)
    latency: Latency = empty(Latency)
    latency_at_other_rate: Latency = empty(Latency)


@dataclasses.dataclass(frozen=True)
class StreamingSection:
    beam_direct_runner: StreamingSystem = empty(StreamingSystem)
    plain_consumer: StreamingSystem = empty(StreamingSystem)

    def system(self, name: str) -> StreamingSystem:
        return getattr(self, name)


@dataclasses.dataclass(frozen=True)
class Results:
    """The sections of results.json that its summary is made from."""

    ceiling: dict[str, CeilingModel] = dataclasses.field(default_factory=dict)
    backfill: BackfillSection = empty(BackfillSection)
    streaming: StreamingSection = empty(StreamingSection)

    def ceiling_of(self, model: str) -> CeilingModel:
        return self.ceiling.get(model, CeilingModel())
