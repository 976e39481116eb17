"""The scope table (pipelines/scopes.py): every project flag has a scope, and each is refused on every path it does
not apply to and accepted on every path it does, walked flag by flag over every mode, runner and inference path.
The README's options table is generated from the same parsers and table, and kept in step here.
"""

from __future__ import annotations

import argparse
import itertools

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import options_table
from pipelines.fraud_detection import FraudOptions
from pipelines.options import InferenceOptions, InvalidOptions
from pipelines.paths import InferencePath, Mode, Runner
from pipelines.scopes import SCOPES, flag_name
from pipelines.spec import add_project_flags

MODES = {
    Mode.STREAMING: [
        "--input_subscription=projects/demo-project/subscriptions/events",
        "--output_topic=projects/demo-project/topics/predictions",
        "--dead_letter_topic=projects/demo-project/topics/dead-letters",
    ],
    Mode.BACKFILL: ["--input=in.jsonl", "--output=out/p", "--dead_letter_output=out/d"],
}
RUNNERS = {
    Runner.FLINK: ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--checkpointing_interval=1000"],
    Runner.BEAM: [],
}
INFERENCE = {
    InferencePath.IN_PROCESS: [],
    InferencePath.TF_SERVING: ["--inference=tf_serving", "--tf_serving_target=localhost:8500"],
    InferencePath.TFX_BSL: ["--inference=tfx_bsl"],
}
MODE_FLAGS = {"input_subscription", "output_topic", "dead_letter_topic", "input", "output", "dead_letter_output"}


def actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_project_flags(parser, [FraudOptions])
    return {a.dest: a for a in parser._actions}  # pylint: disable=protected-access


def given(action: argparse.Action) -> list[str]:
    """The flag with a value other than its default."""
    flag = action.option_strings[0]
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [f"{flag}={[c for c in action.choices if c != action.default][-1]}"]
    if action.type in (int, float):
        return [f"{flag}=2"]
    return [f"{flag}=projects/demo-project/topics/extra"]


def problems(argv: list[str]) -> str:
    try:
        PipelineOptions(argv).view_as(InferenceOptions).validate()
    except InvalidOptions as error:
        return str(error)
    return ""


def test_every_project_flag_has_a_scope_and_every_scope_a_flag():
    assert set(actions()) == set(SCOPES)


PATHS = list(itertools.product(Mode, Runner, InferencePath))


@pytest.mark.parametrize("dest", sorted(set(SCOPES) - MODE_FLAGS))
def test_each_flag_is_refused_exactly_where_it_does_not_apply(dest):
    action, scope = actions()[dest], SCOPES[dest]
    flag = flag_name(dest)
    needs = [f"--{scope.needs[0]}" + ("=stable" if scope.needs[0].endswith("label") else "")] if scope.needs else []
    for mode, runner, inference in PATHS:
        argv = [*MODES[mode], *RUNNERS[runner], *INFERENCE[inference], *needs, *given(action)]
        text = problems(argv)
        outside = mode not in scope.modes or runner not in scope.runners or inference not in scope.inference
        refused = f"{flag} applies to" in text or f"{flag} does not apply" in text
        assert refused == outside, f"{flag} on {mode}, {runner}, {inference}: {text or 'accepted'}"
        if outside:
            continue
        assert f"{flag} needs" not in text, text
        if scope.needs:
            alone = [*MODES[mode], *RUNNERS[runner], *INFERENCE[inference], *given(action)]
            assert f"{flag} needs" in problems(alone), f"{flag} without {scope.needs} on {mode}, {inference}"


def test_the_issues_case_no_warmup_over_tf_serving_is_refused():
    text = problems([*MODES[Mode.BACKFILL], *INFERENCE[InferencePath.TF_SERVING], "--no_warmup"])
    assert "--no_warmup does not apply to --inference=tf_serving" in text
    assert problems([*MODES[Mode.BACKFILL], *INFERENCE[InferencePath.TFX_BSL], "--no_warmup", "--model_dir=m"]) == ""


def test_the_readmes_options_table_is_what_the_parsers_say():
    text = options_table.README.read_text(encoding="utf-8")
    assert options_table.render(text) == text, "the README's options table is stale: python -m pipelines.options_table"
    for dest in SCOPES:
        assert f"| `{flag_name(dest)}" in text
