"""One parse of a pipeline's command line into a frozen `JobSpec`: what the build reads, and nothing else.

`parse` reads argv once. Every flag that Beam or the project declares is known, and on Flink so are the Flink
runner's Java options (pipelines.scopes); any other flag exits 2 naming the nearest known one, where Beam alone
would drop it with a warning and run with the default. The project's options are validated
(pipelines.options), including which flags apply to the chosen path. Then the launcher's own additions are made, each
logged: Flink's streaming defaults (flink_streaming_defaults), --streaming for a Pub/Sub job, the
emulator's address for the workers, and a job name to watch a Flink job by. The result is frozen: Beam's runner gets
its PipelineOptions from the spec's argv, and the build reads the spec's settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from pipelines.options import DerivedOptions, InferenceOptions, Plan
from pipelines.paths import Mode, Runner, is_flink
from pipelines.scopes import FLINK_JAVA_OPTIONS
from plumbing import cli
from transforms.predictions import Decorate

_LOGGER = logging.getLogger(__name__)

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


class Settings(DerivedOptions):
    """Every option of the job (Beam's, the project's, the Flink runner's), read once from the parsed flags and
    frozen: `settings.max_batch_size`. Nothing downstream can change what was validated."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", types.MappingProxyType(dict(values)))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no option {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"the job's settings are frozen: cannot set {name}")

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A pipeline's job, resolved once from its command line."""

    plan: Plan
    settings: Settings
    argv: tuple[str, ...]  # Beam's flags: the user's, then the launcher's additions
    decorate: Decorate | None = None
    watch: tuple[str, str] | None = None  # (flink_master, job_name) of a streaming job on a Flink cluster

    def pipeline_options(self) -> PipelineOptions:
        return PipelineOptions(list(self.argv))


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


class _Parser(cli.ArgumentParser, _BeamArgumentParser):
    """The project's parser (one `error:` line, nearest flag, --version) that also takes Beam's value-provider
    arguments, so that every PipelineOptions class Beam registers can declare its flags on it."""


def add_project_flags(parser, extra_options: Sequence[type] = ()) -> None:
    """Declares the project's flags, and a pipeline's own, on `parser`. Beam offers no public way to get one options
    class's parser: this is what PipelineOptions.get_all_options does with each registered class."""
    for options_class in (InferenceOptions, *extra_options):
        options_class._add_argparse_args(parser)  # pylint: disable=protected-access


def _known_flags_parser(prog: str, extra_options: Sequence[type]) -> _Parser:
    """Every flag the job takes: Beam's registered options, the project's and this pipeline's (another pipeline's
    options class, registered by an import in the same process, is left out)."""
    parser = _Parser(prog=prog, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        if cls.__module__.startswith("pipelines.") and cls not in (InferenceOptions, *extra_options):
            continue
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    for options_class in extra_options:
        if str(options_class) not in classes:
            options_class._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _unknown(parser: _Parser, extras: list[str], runner) -> list[str]:
    """What is wrong with each flag neither Beam nor the project knows. The Flink runner's Java options pass on
    Flink: Beam hands them to the job server as they are; on another runner they would be ignored."""
    java = FLINK_JAVA_OPTIONS if is_flink(runner) else frozenset()
    known = [*parser.option_strings(), *(f"--{n}" for n in java)]
    problems = []
    i = 0
    while i < len(extras):
        arg = extras[i]
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name[2:] in java:
            # A value given as the next argument belongs to the flag.
            has_value = "=" not in arg and i + 1 < len(extras) and not extras[i + 1].startswith("-")
            i += 2 if has_value else 1
            continue
        if name.startswith("--") and name[2:] in FLINK_JAVA_OPTIONS:
            problems.append(f"{name} applies to --runner=FlinkRunner only: another runner would ignore it")
        else:
            problems.append(cli.unknown_flag_message(arg, known))
        i += 1
    return problems


def unknown_flag_problems(argv: Sequence[str], extra_options: Sequence[type] = ()) -> list[str]:
    """The flags in `argv` that the job would not take, each with what is wrong (deploy validate reads the
    submissions' arguments with this)."""
    parser = _known_flags_parser("check", extra_options)
    namespace, extras = parser.parse_known_args(list(argv))
    return _unknown(parser, extras, namespace.runner)


def _print_help(prog: str, description: str | None, extra_options: Sequence[type]) -> None:
    parser = cli.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Beam's own flags (--runner, --streaming, --direct_num_workers, ...) are accepted too, and on Flink "
        "the Flink runner's (--checkpointing_interval, --max_bundle_time_mills, ...).",
    )
    add_project_flags(parser, extra_options)
    parser.parse_args(["--help"])


def parse(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None = None,
    extra_options: Sequence[type] = (),
    decorate_from: Callable[[Settings], Decorate | None] | None = None,
) -> JobSpec:
    """The job `argv` asks for (None: the process's arguments), validated; a usage error raises UsageError or exits
    2 (argparse), `--help` and `--version` print and exit 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_help(prog, description, extra_options)
    parser = _known_flags_parser(prog, extra_options)
    namespace, extras = parser.parse_known_args(argv)
    unknown = _unknown(parser, extras, namespace.runner)
    if unknown:
        parser.error(unknown[0])

    pipeline_options = PipelineOptions(argv)
    pipeline_options.view_as(InferenceOptions).validate()
    plan = Plan.of(pipeline_options)
    added = flink_streaming_defaults(pipeline_options, plan)
    if added:
        _LOGGER.info("streaming on Flink: with %s", " ".join(added))
    watch = None
    if plan.mode == Mode.STREAMING:
        if not pipeline_options.view_as(StandardOptions).streaming:
            _LOGGER.info("reading Pub/Sub needs streaming mode: running with --streaming")
            added.append("--streaming")
        if not pipeline_options.view_as(InferenceOptions).pubsub_emulator_host and os.environ.get(EMULATOR_ENV):
            # The emulator's address travels with the options, so that every worker finds it.
            added.append(f"--pubsub_emulator_host={os.environ[EMULATOR_ENV]}")
        watch = _flink_watch(prog, pipeline_options, plan, added)
    argv = (*argv, *added)
    settings = Settings(PipelineOptions(list(argv)).get_all_options(retain_unknown_options=True))
    decorate = decorate_from(settings) if decorate_from else None
    return JobSpec(plan, settings, argv, decorate, watch)


def _flink_watch(prog: str, pipeline_options: PipelineOptions, plan: Plan, added: list[str]):
    """For a streaming job on a Flink cluster: where to watch it, and the job name to find it by (one is made up, and
    logged, when --job_name is not given)."""
    flink_master = pipeline_options.get_all_options(retain_unknown_options=True).get("flink_master")
    if not (plan.runner == Runner.FLINK and flink_master and ":" in flink_master):
        return None
    job_name = pipeline_options.view_as(GoogleCloudOptions).job_name
    if not job_name:
        job_name = f"{prog.rsplit('.', 1)[-1].replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        added.append(f"--job_name={job_name}")
        _LOGGER.info("the job is named %s on Flink (--job_name)", job_name)
    return flink_master, job_name
