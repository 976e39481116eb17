"""Options: conflicting or missing flags are rejected with a clear message before anything starts."""

import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import InferenceOptions

STREAMING = [
    "--input_subscription=projects/demo-project/subscriptions/events",
    "--output_topic=projects/demo-project/topics/predictions",
    "--dead_letter_topic=projects/demo-project/topics/dead-letters",
]
BACKFILL = ["--input=in.jsonl", "--output=out/pred", "--dead_letter_output=out/dead"]


def problems(argv) -> str:
    with pytest.raises(ValueError) as info:
        PipelineOptions(argv).view_as(InferenceOptions).validate()
    return str(info.value)


def test_complete_streaming_and_backfill_options_are_accepted():
    for argv, mode in ((STREAMING, "streaming"), (BACKFILL, "backfill")):
        options = PipelineOptions(argv).view_as(InferenceOptions)
        options.validate()
        assert options.mode() == mode


def test_no_source_at_all_says_what_to_give():
    assert "nothing to read: give --input_subscription" in problems([])


def test_streaming_and_backfill_flags_together_are_rejected():
    assert "choose streaming or backfill, not both" in problems(STREAMING + BACKFILL[:1])


def test_missing_streaming_and_backfill_partners_are_named():
    assert "streaming needs --dead_letter_topic" in problems(STREAMING[:2])
    assert "backfill needs --output" in problems(BACKFILL[:1] + BACKFILL[2:])


def test_malformed_resource_paths_are_rejected_with_the_expected_form():
    text = problems(["--input_subscription=events", *STREAMING[1:]])
    assert "--input_subscription must look like projects/<project>/subscriptions/<id> (a project id" in text
    assert text.endswith("got 'events'")


def test_a_project_id_shorter_than_pubsub_accepts_is_a_usage_error_not_beams_value_error():
    text = problems(["--input_subscription=projects/p/subscriptions/events", *STREAMING[1:]])
    assert "a project id is 6 to 63 characters" in text and "got 'projects/p/subscriptions/events'" in text


def test_backfill_rejects_streaming_only_settings():
    text = problems(BACKFILL + ["--streaming", "--timestamp_attribute=ts"])
    assert "backfill runs in batch mode" in text
    assert "--timestamp_attribute applies to streaming only" in text


def test_bad_numbers_are_all_reported_together():
    text = problems(BACKFILL + ["--min_batch_size=10", "--max_batch_size=5", "--model_copies=0", "--max_event_bytes=0"])
    assert "need 1 <= --min_batch_size <= --max_batch_size, got 10 and 5" in text
    assert "--model_copies must be at least 1, got 0" in text
    assert "--max_event_bytes must be positive, got 0" in text


def test_deduplicate_on_flink_without_checkpoints_is_rejected_because_its_memory_would_not_survive_a_restart():
    flink = ["--runner=FlinkRunner", "--flink_master=localhost:8081"]
    assert "--deduplicate on Flink needs --checkpointing_interval=MS" in problems(STREAMING + flink + ["--deduplicate"])
    PipelineOptions(STREAMING + flink).view_as(InferenceOptions).validate()
    PipelineOptions(STREAMING + flink + ["--deduplicate", "--checkpointing_interval=2000"]).view_as(
        InferenceOptions
    ).validate()


def test_publish_timeout_must_be_positive():
    assert "--publish_timeout_secs must be positive, got 0.0" in problems(STREAMING + ["--publish_timeout_secs=0"])


def test_deduplicate_ttl_must_be_positive():
    assert "--deduplicate_ttl_secs must be at least 1, got 0" in problems(
        BACKFILL + ["--deduplicate", "--deduplicate_ttl_secs=0"]
    )


def test_the_command_line_exits_2_with_the_reason_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.fraud_detection", *BACKFILL, f"--model_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: no versions of model 'fraud'" in result.stderr
    assert "Traceback" not in result.stderr


def test_fraud_threshold_outside_zero_to_one_is_rejected(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.fraud_detection", *BACKFILL, "--fraud_threshold=1.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--fraud_threshold must be within [0, 1], got 1.5" in result.stderr


def test_model_refresh_needs_a_label_in_process_and_is_refused_for_tf_serving():
    assert "--model_refresh_secs needs a label to follow" in problems(STREAMING + ["--model_refresh_secs=5"])
    assert "must be 0 (never) or positive, got -1.0" in problems(
        STREAMING + ["--model_version_label=stable", "--model_refresh_secs=-1"]
    )
    serving = ["--inference=tf_serving", "--tf_serving_target=localhost:8500", "--model_version_label=stable"]
    assert "TF Serving resolves a version label on every request" in problems(
        STREAMING + serving + ["--model_refresh_secs=5"]
    )
    following = PipelineOptions(STREAMING + ["--model_version_label=stable"]).view_as(InferenceOptions)
    following.validate()
    assert following.refresh_secs() == 30
    assert PipelineOptions(STREAMING + serving).view_as(InferenceOptions).refresh_secs() == 0


def test_a_canary_shares_between_labels_so_pins_and_other_labels_are_refused():
    assert "--canary_percent must be above 0 and at most 100, got 0.0" in problems(STREAMING + ["--canary_percent=0"])
    assert "drop --model_version" in problems(STREAMING + ["--canary_percent=10", "--model_version=1"])
    assert "not --model_version_label=previous" in problems(
        STREAMING + ["--canary_percent=10", "--model_version_label=previous"]
    )
    canary = PipelineOptions(STREAMING + ["--canary_percent=10", "--model_refresh_secs=2"]).view_as(InferenceOptions)
    canary.validate()
    assert (canary.champion_label(), canary.refresh_secs()) == ("stable", 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shadow_label=canary", "--shadow_version=2"], "--shadow_label or --shadow_version, not both"),
        (["--shadow_percent=0", "--shadow_version=1"], "--shadow_percent must be above 0 and at most 100, got 0.0"),
        (["--shadow_label=canary"], "a shadow needs --shadow_output"),
        (["--shadow_output=projects/demo-project/topics/shadow"], "--shadow_output needs a challenger"),
        (
            ["--shadow_label=canary", "--shadow_output=shadow"],
            "--shadow_output must look like projects/<project>/topics",
        ),
        (
            ["--shadow_label=canary", "--shadow_output=projects/demo-project/topics/predictions"],
            "--shadow_output must differ from --output_topic",
        ),
    ],
)
def test_shadow_options_that_cannot_work_are_refused_with_the_reason(args, message):
    assert message in problems(STREAMING + args)


def test_a_backfill_shadow_writes_files_apart_from_the_predictions():
    assert "--shadow_output must differ from --output" in problems(
        BACKFILL + ["--shadow_version=1", "--shadow_output=out/pred"]
    )
    PipelineOptions(BACKFILL + ["--shadow_version=1", "--shadow_output=out/shadow"]).view_as(
        InferenceOptions
    ).validate()


def test_the_challengers_own_tf_serving_and_its_lag_are_checked():
    serving = ["--inference=tf_serving", "--tf_serving_target=localhost:8500"]
    shadow = ["--shadow_version=2", "--shadow_output=projects/demo-project/topics/shadow"]
    assert "--shadow_tf_serving_target does not apply to --inference=in_process" in problems(
        STREAMING + shadow + ["--shadow_tf_serving_target=localhost:8501"]
    )
    assert "--shadow_tf_serving_target needs a challenger" in problems(
        STREAMING + serving + ["--shadow_tf_serving_target=localhost:8501"]
    )
    assert "--shadow_max_lag_secs must be positive, got 0.0" in problems(
        STREAMING + shadow + ["--shadow_max_lag_secs=0"]
    )
    PipelineOptions(STREAMING + serving + shadow + ["--shadow_tf_serving_target=localhost:8501"]).view_as(
        InferenceOptions
    ).validate()
