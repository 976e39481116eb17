"""The in-flight budget and the launcher's Pub/Sub checks: a subscription whose ack deadline would let Pub/Sub
deliver messages again while they are being scored, or a missing topic, stops the launch with the fix."""

from __future__ import annotations

import subprocess
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.delivery import ack_deadline_problem, in_flight_budget

STREAMING = [
    "--input_subscription=projects/demo-project/subscriptions/events",
    "--output_topic=projects/demo-project/topics/predictions",
    "--dead_letter_topic=projects/demo-project/topics/dead-letters",
]


def test_the_budget_adds_bundle_batching_inference_publish_and_a_margin():
    assert in_flight_budget(PipelineOptions(STREAMING)).total == 1 + 0 + 10 + 10 + 5
    budget = in_flight_budget(
        PipelineOptions(
            STREAMING
            + [
                "--max_bundle_time_mills=200",
                "--max_batch_duration_secs=3",
                "--inference=tf_serving",
                "--tf_serving_target=h:1",
                "--tf_serving_retry_budget_secs=20",
                "--publish_timeout_secs=4",
            ]
        )
    )
    assert (budget.bundle, budget.batching, budget.inference, budget.publish) == (0.2, 3, 20, 4)
    assert budget.ack_deadline_needed() == 33


def test_a_streaming_job_on_flink_gets_the_latency_defaults_where_none_was_given():
    from pipelines.options import Plan
    from pipelines.spec import DATA_BUFFER_TIME_LIMIT_MS, STREAMING_BUNDLE_MILLIS, flink_streaming_defaults

    def added(args):
        options = PipelineOptions(args)
        return flink_streaming_defaults(options, Plan.of(options))

    flink = ["--runner=FlinkRunner", *STREAMING]
    assert added(flink) == [
        "--finish_bundle_before_checkpointing",
        f"--max_bundle_time_mills={STREAMING_BUNDLE_MILLIS}",
        f"--experiments=data_buffer_time_limit_ms={DATA_BUFFER_TIME_LIMIT_MS}",
    ]
    given = ["--finish_bundle_before_checkpointing", "--max_bundle_time_mills=500"]
    given += ["--experiments=use_runner_v2", "--experiments=data_buffer_time_limit_ms=0"]
    assert added(flink + given) == []
    assert added(STREAMING) == []  # the DirectRunner
    assert added(["--runner=FlinkRunner", "--input=a.jsonl", "--output=b", "--dead_letter_output=c"]) == []
    # The budget counts the bundle the launcher gives.
    bundle = f"--max_bundle_time_mills={STREAMING_BUNDLE_MILLIS}"
    assert in_flight_budget(PipelineOptions([*flink, bundle])).bundle == STREAMING_BUNDLE_MILLIS / 1000


def test_a_deadline_below_the_budget_is_a_problem_that_names_the_fix():
    budget = in_flight_budget(PipelineOptions(STREAMING))
    assert ack_deadline_problem(26, budget, "projects/demo-project/subscriptions/events") is None
    problem = ack_deadline_problem(10, budget, "projects/demo-project/subscriptions/events")
    assert "is 10 s, shorter than the longest a message can be in flight, 26 s" in problem
    assert "gcloud pubsub subscriptions update events --ack-deadline=26" in problem


def launch(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.fraud_detection", *args], capture_output=True, text=True, timeout=120
    )


def test_the_launcher_refuses_a_short_ack_deadline_and_a_missing_topic_before_submitting(emulator, model_dir):
    emulator.create_topic("chk-events")
    emulator.create_topic("chk-predictions")
    emulator.create_subscription("chk-events", "chk-events-pipeline", ack_deadline_secs=10)
    result = launch(
        [
            f"--input_subscription={emulator.subscription_path('chk-events-pipeline')}",
            f"--output_topic={emulator.topic_path('chk-predictions')}",
            f"--dead_letter_topic={emulator.topic_path('chk-missing')}",
            f"--model_dir={model_dir}",
            # Flink acknowledges after publishing, so the deadline matters; no cluster is reached before the checks.
            "--runner=FlinkRunner",
            "--flink_master=localhost:1",
            "--job_endpoint=localhost:1",
        ]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    # 25.05 s: the launcher gives streaming on Flink 50 ms bundles (pipelines.spec.flink_streaming_defaults).
    assert "is 10 s, shorter than the longest a message can be in flight, 25.05 s" in result.stderr
    assert f"--dead_letter_topic {emulator.topic_path('chk-missing')} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
