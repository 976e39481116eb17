"""The local Flink cluster (localdev/flink/): it comes up, runs a Beam Python pipeline, refuses a second start,
and stops without leaving processes behind.

No skip: where Java or Maven is missing, the fixture fails with what to install, in CI as anywhere else. The
first run installs Flink and the job server under build/flink (about a minute); later runs reuse them.
"""

from __future__ import annotations

import pytest

from localdev.flink import FlinkError, LocalFlink, group_members, process_alive


@pytest.fixture(scope="module")
def flink():
    cluster = LocalFlink()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_status_reports_every_component_up(flink):
    status = flink.status()
    assert [c.name for c in status.components] == ["jobmanager", "taskmanager", "jobserver", "workerpool"]
    assert all(c.up and c.pid for c in status.components), status.describe()
    assert status.all_up
    assert status.taskmanagers == 1
    assert status.slots_total == flink.slots


def test_batch_pipeline_runs_on_the_cluster(flink, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(flink.pipeline_args(streaming=False))) as pipeline:
        _ = (
            pipeline
            | beam.Create(range(100))
            | beam.Map(lambda x: x * 2)
            | beam.io.WriteToText(str(tmp_path / "doubled"))
        )

    lines = [line for path in sorted(tmp_path.glob("doubled*")) for line in path.read_text().splitlines()]
    assert sorted(int(line) for line in lines) == [x * 2 for x in range(100)]
    # It ran on the real cluster: the JobManager knows the finished job.
    assert any(job["state"] == "FINISHED" for job in flink.jobs())


def test_second_start_fails_clearly_and_leaves_the_cluster_running(flink):
    with pytest.raises(FlinkError, match="already running.*localdev.flink stop"):
        LocalFlink(state_dir=flink.state_dir).start()
    assert flink.status().all_up


def test_stop_leaves_no_processes_and_is_idempotent(flink):
    # Last in this module: it stops the module's cluster (the fixture's own stop is then a no-op).
    pids = [c.pid for c in flink.status().components]
    flink.stop()
    for pid in pids:
        assert not process_alive(pid), f"process {pid} survived stop"
        assert not group_members(pid), f"process group {pid} (e.g. SDK workers) survived stop"
    assert not flink.state_file.exists()
    assert not any(c.up for c in flink.status().components)
    flink.stop()  # nothing running: returns quietly


def test_the_flink_runner_options_the_launcher_accepts_are_the_job_servers_own(tmp_path):
    """pipelines.scopes.FLINK_JAVA_OPTIONS lets Flink's Java options through the unknown-flag check: it must list
    exactly the job server's FlinkPipelineOptions that Beam's Python parser does not declare."""
    import re
    import subprocess
    import zipfile

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.scopes import FLINK_JAVA_OPTIONS

    cluster = LocalFlink()
    cluster.install()
    interfaces = ["FlinkPipelineOptions", "VersionDependentFlinkPipelineOptions"]
    with zipfile.ZipFile(cluster.jobserver_jar) as jar:
        for name in interfaces:
            jar.extract(f"org/apache/beam/runners/flink/{name}.class", tmp_path)
    described = subprocess.run(
        ["javap", "-cp", str(tmp_path), *(f"org.apache.beam.runners.flink.{n}" for n in interfaces)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    getters = set(re.findall(r" (?:get|is)([A-Z]\w*)\(\);", described))
    java = {re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", getter).lower() for getter in getters}
    python = set(PipelineOptions([]).get_all_options())
    assert FLINK_JAVA_OPTIONS == java - python
