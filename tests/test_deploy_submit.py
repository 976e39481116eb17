"""deploy.submit, the submission Jobs' step: builds the job with the pipeline's own entry point, upgrades a
running job by savepoint, starts the new one through Flink's REST API and waits until it runs.

The pipeline entry point is a real subprocess (a stand-in module that writes a "jar"); Flink's REST API is
tests/deploy_fakes.FakeFlink, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os

import pytest
from deploy_fakes import FAKE_PIPELINE, FakeFlink

from deploy import submit

ARGS_FILE = """\
# the pipeline's options
--job_name=fraud-detection

--input_subscription=projects/demo-project/subscriptions/fraud-events
--output_topic=projects/demo-project/topics/fraud-predictions
"""


@pytest.fixture
def fake_pipeline(tmp_path, monkeypatch):
    """A module `fake_pipeline` importable by the child process; returns the file where it logs its arguments."""
    (tmp_path / "fake_pipeline.py").write_text(FAKE_PIPELINE)
    log = tmp_path / "pipeline-args.log"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("FAKE_PIPELINE_LOG", str(log))
    return log


def run_submit(flink: FakeFlink, tmp_path, *, restore_from=None, args_file=ARGS_FILE):
    plan = submit.make_plan("fake_pipeline", args_file, ["--runner=FlinkRunner", f"--flink_master={flink.address}"])
    return submit.submit(
        plan,
        submit.FlinkRest(plan.rest, timeout=10),
        restore_from=restore_from,
        build=lambda p, jar: submit.build_job_jar(p, jar, timeout_s=60),
        workdir=str(tmp_path),
        savepoint_timeout_s=5,
        start_timeout_s=5,
        interval_s=0.01,
    )


def test_args_file_is_one_argument_per_line_without_shell_quoting():
    text = "# comment\n--a=1\n\n  --b=two words  \n#--c=3\n--d=$(NOT_EXPANDED)\n"
    assert submit.read_args_file(text) == ["--a=1", "--b=two words", "--d=$(NOT_EXPANDED)"]


def test_plan_puts_runner_flags_before_the_file_and_finds_the_rest_api():
    plan = submit.make_plan("m", ARGS_FILE, ["--flink_master=inference-rest:8081"])
    assert plan.argv[0] == "--flink_master=inference-rest:8081"
    assert plan.argv[1:] == submit.read_args_file(ARGS_FILE)
    assert (plan.job_name, plan.rest) == ("fraud-detection", "http://inference-rest:8081")


@pytest.mark.parametrize(
    "runner_args, file_text, reason",
    [
        (["--flink_master=h:8081"], "--model_dir=/models\n", "--job_name is required"),
        ([], ARGS_FILE, "--flink_master"),
        (["--flink_master=h:8081", "--output_executable_path=/x.jar"], ARGS_FILE, "set by deploy.submit"),
        (["--flink_master=h:8081"], ARGS_FILE + "--savepoint_path=gs://b/s\n", "chosen by deploy.submit"),
    ],
)
def test_plan_refuses_arguments_it_cannot_work_with(runner_args, file_text, reason):
    with pytest.raises(submit.SubmitError, match=reason):
        submit.make_plan("m", file_text, runner_args)


def test_first_submission_builds_with_the_pipelines_entry_point_and_starts_fresh(fake_pipeline, tmp_path):
    with FakeFlink() as flink:
        job_id = run_submit(flink, tmp_path)
        assert flink.jobs[job_id] == {"name": "fraud-detection", "state": "RUNNING", "savepoint_from": None}
        # The upload is removed once the job runs; nothing was stopped.
        assert flink.jars == {}
        assert not any(path.endswith("/stop") for path in flink.paths())
    built_with = json.loads(fake_pipeline.read_text().splitlines()[0])
    assert built_with[:2] == ["--runner=FlinkRunner", f"--flink_master={flink.address}"]
    assert built_with[2:-1] == submit.read_args_file(ARGS_FILE)
    assert built_with[-1].startswith("--output_executable_path=") and built_with[-1].endswith("fraud-detection.jar")
    run_request = next(body for method, path, body in flink.requests if path.endswith("/run"))
    assert run_request == {"entryClass": "org.apache.beam.runners.flink.FlinkPipelineRunner"}


def test_running_pipeline_is_upgraded_from_its_own_savepoint(fake_pipeline, tmp_path):
    with FakeFlink(savepoint_polls=3) as flink:
        old = flink.add_job("fraud-detection")
        other = flink.add_job("price-suggestion")
        new = run_submit(flink, tmp_path)
        assert flink.requests[flink.paths().index(f"/jobs/{old}/stop")][2] == {"drain": False}
        assert flink.jobs[old]["state"] == "FINISHED"
        assert flink.jobs[other]["state"] == "RUNNING"  # another pipeline's job is never touched
        savepoint = f"gs://state/savepoints/savepoint-{old[:6]}"
        assert flink.jobs[new]["savepoint_from"] == savepoint
        run_request = next(body for method, path, body in flink.requests if path.endswith("/run"))
        assert run_request["savepointPath"] == savepoint and run_request["allowNonRestoredState"] is False


def test_pipeline_that_does_not_build_leaves_the_running_job_alone(fake_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_PIPELINE_FAIL", "1")
    with FakeFlink() as flink:
        old = flink.add_job("fraud-detection")
        with pytest.raises(submit.SubmitError, match="building the job failed: python -m fake_pipeline exited with 3"):
            run_submit(flink, tmp_path)
        assert flink.paths() == []
        assert flink.jobs[old]["state"] == "RUNNING"


def test_failed_savepoint_keeps_the_old_job_and_starts_nothing(fake_pipeline, tmp_path):
    with FakeFlink(savepoint_fails=True) as flink:
        flink.add_job("fraud-detection")
        with pytest.raises(submit.SubmitError, match="the savepoint of job .* failed; the job keeps running"):
            run_submit(flink, tmp_path)
        assert not any(path.endswith("/run") for path in flink.paths())


def test_two_jobs_of_one_name_are_an_error_not_a_guess(fake_pipeline, tmp_path):
    with FakeFlink() as flink:
        flink.add_job("fraud-detection")
        flink.add_job("fraud-detection")
        with pytest.raises(submit.SubmitError, match="2 jobs are named 'fraud-detection'"):
            run_submit(flink, tmp_path)


def test_unhealthy_job_cannot_be_savepointed_and_says_how_to_recover(fake_pipeline, tmp_path):
    with FakeFlink() as flink:
        flink.add_job("fraud-detection", state="RESTARTING")
        with pytest.raises(submit.SubmitError, match="is RESTARTING.*--restore-from"):
            run_submit(flink, tmp_path)


def test_finished_jobs_of_the_same_name_do_not_count_and_restore_from_is_used(fake_pipeline, tmp_path):
    with FakeFlink() as flink:
        flink.add_job("fraud-detection", state="CANCELED")
        job_id = run_submit(flink, tmp_path, restore_from="gs://state/savepoints/savepoint-manual")
        assert flink.jobs[job_id]["savepoint_from"] == "gs://state/savepoints/savepoint-manual"


def test_new_job_that_fails_to_start_is_reported(fake_pipeline, tmp_path):
    with FakeFlink(new_job_state="FAILED") as flink:
        with pytest.raises(submit.SubmitError, match="is FAILED instead of starting"):
            run_submit(flink, tmp_path)
        assert flink.jars == {}


def test_waits_for_the_rest_api_while_the_jobmanager_starts(tmp_path):
    class StartingJobManager:
        def __init__(self):
            self.calls = 0

        def jobs(self):
            self.calls += 1
            if self.calls < 3:
                raise submit.Unreachable("connection refused")
            return []

        upload_jar = staticmethod(lambda path: "jar-1")
        run_jar = staticmethod(lambda jar_id, savepoint: "job-1")
        job = staticmethod(
            lambda job_id: {"name": "fraud-detection", "state": "RUNNING", "vertices": [{"status": "RUNNING"}]}
        )
        delete_jar = staticmethod(lambda jar_id: None)

    flink = StartingJobManager()
    plan = submit.make_plan("m", ARGS_FILE, ["--flink_master=h:8081"])
    sleeps = []
    job_id = submit.submit(
        plan, flink, build=lambda p, jar: None, workdir=str(tmp_path), interval_s=1, sleep=sleeps.append
    )
    assert (job_id, flink.calls, sleeps) == ("job-1", 3, [1, 1])


def test_main_reads_the_mounted_args_file_and_exits_zero_when_running(fake_pipeline, tmp_path):
    args_file = tmp_path / "pipeline.args"
    args_file.write_text(ARGS_FILE)
    with FakeFlink() as flink:
        code = submit.main(
            [
                "--module=fake_pipeline",
                f"--args-file={args_file}",
                "--start-timeout=5",
                "--",
                "--runner=FlinkRunner",
                f"--flink_master={flink.address}",
            ]
        )
        assert code == 0
        assert [job["name"] for job in flink.jobs.values()] == ["fraud-detection"]


def test_main_reports_errors_without_a_traceback(tmp_path, capsys):
    args_file = tmp_path / "pipeline.args"
    args_file.write_text("--model_dir=/models\n")
    assert submit.main(["--module=m", f"--args-file={args_file}", "--", "--flink_master=h:1"]) == 1
    assert "error: cannot submit:\n  - --job_name is required" in capsys.readouterr().err


def test_restore_from_comes_from_the_environment_the_job_sets(fake_pipeline, tmp_path, monkeypatch):
    args_file = tmp_path / "pipeline.args"
    args_file.write_text(ARGS_FILE)
    monkeypatch.setenv("RESTORE_FROM", "gs://state/savepoints/savepoint-before-cluster-upgrade")
    with FakeFlink() as flink:
        assert (
            submit.main(
                [
                    "--module=fake_pipeline",
                    f"--args-file={args_file}",
                    "--start-timeout=5",
                    "--",
                    f"--flink_master={flink.address}",
                ]
            )
            == 0
        )
        [job] = flink.jobs.values()
        assert job["savepoint_from"] == "gs://state/savepoints/savepoint-before-cluster-upgrade"


def test_upgrade_that_fails_to_start_names_the_savepoint_to_restore_from(fake_pipeline, tmp_path):
    with FakeFlink(new_job_state="FAILED") as flink:
        old = flink.add_job("fraud-detection")
        with pytest.raises(
            submit.SubmitError,
            match=rf"is FAILED instead of starting.*RESTORE_FROM=gs://state/savepoints/savepoint-{old[:6]}",
        ):
            run_submit(flink, tmp_path)
