"""Submits one pipeline to the Flink session cluster, upgrading a running one by savepoint.

Run by the submission Jobs (deploy/flink-on-k8s/base/pipelines/) in the launcher image:

    python -m deploy.submit --module=pipelines.fraud_detection --args-file=/etc/pipeline/pipeline.args \
        -- --runner=FlinkRunner --flink_master=inference-rest:8081 ...

1. Build: runs the pipeline's own entry point with `--output_executable_path`, so that Beam's Flink job server
   translates it (options, resolved model version, Python artifacts) into a self-contained Flink job jar.
2. Upgrade: if a job with the same `--job_name` is running, stops it with a savepoint (Flink REST
   `POST /jobs/<id>/stop`). A session cluster's jobs are not the operator's, so this is where its
   `upgradeMode: savepoint` lives.
3. Start: uploads the jar and runs it from that savepoint (`POST /jars/upload`, `POST /jars/<id>/run`).
4. Waits until every task of the new job runs, then exits 0; the streaming job goes on without this process.

Nothing is started twice: a second run finds the job and upgrades it in place. Only the standard library,
`requests` and this project's `plumbing` (the Flink REST client, the wait loop) are used: the launcher image has
the first two and installs the third with the project's wheel.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plumbing import cli
from plumbing.flink_rest import TERMINAL_STATES, FlinkRest, FlinkRestError, Unreachable, active_jobs, rest_url
from plumbing.polling import PollTimeout, poll_until

# The REST client's failures are a submission's: whatever Flink refuses, or a step of its own that cannot go on,
# ends the submission the same way, so callers (main, the deploy CLI's savepoint command) catch one class.
SubmitError = FlinkRestError


def read_args_file(text: str) -> list[str]:
    """One command-line argument per line, verbatim (no shell quoting); blank lines and `#` lines are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in argv (the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


@dataclass(frozen=True)
class Plan:
    module: str
    argv: list[str]  # the pipeline's arguments: runner flags first, then the options file
    job_name: str
    rest: str


def make_plan(module: str, args_file_text: str, runner_args: Sequence[str]) -> Plan:
    argv = [*runner_args, *read_args_file(args_file_text)]
    problems = []
    job_name = flag_value(argv, "job_name")
    if not job_name:
        problems.append("--job_name is required: it is how a running pipeline is found again for an upgrade")
    flink_master = flag_value(argv, "flink_master")
    if not flink_master:
        problems.append("--flink_master=<host>:<port> of the Flink REST API is required")
    if flag_value(argv, "output_executable_path") is not None:
        problems.append("--output_executable_path is set by deploy.submit itself; remove it from the arguments")
    if flag_value(argv, "savepoint_path") is not None:
        problems.append("--savepoint_path is chosen by deploy.submit (the running job's savepoint, or --restore-from)")
    if problems:
        raise SubmitError("cannot submit:\n  - " + "\n  - ".join(problems))
    return Plan(module=module, argv=argv, job_name=job_name, rest=rest_url(flink_master))


def wait_for(what: str, poll: Callable[[], object | None], timeout_s: float, interval_s: float, sleep=time.sleep):
    """Calls poll() until it returns something other than None; SubmitError after timeout_s."""
    try:
        return poll_until(poll, timeout=timeout_s, interval=interval_s, what=what, sleep=sleep)
    except PollTimeout as error:
        raise SubmitError(str(error)) from None


def build_job_jar(plan: Plan, jar_path: str, timeout_s: float) -> None:
    """Runs the pipeline's entry point, which exits once Beam's job server has written the job jar."""
    command = [sys.executable, "-m", plan.module, *plan.argv, f"--output_executable_path={jar_path}"]
    print(f"[build] python -m {plan.module} ... --output_executable_path={jar_path}", flush=True)
    completed = subprocess.run(command, timeout=timeout_s, check=False)
    if completed.returncode != 0:
        raise SubmitError(f"building the job failed: python -m {plan.module} exited with {completed.returncode}")
    if not os.path.isfile(jar_path):
        raise SubmitError(f"python -m {plan.module} exited 0 but wrote no job jar at {jar_path}")


def take_savepoint(flink: FlinkRest, job: dict, timeout_s: float, interval_s: float, sleep=time.sleep) -> str:
    job_id = job["jid"]
    if job["state"] != "RUNNING":
        raise SubmitError(
            f"job {job['name']!r} ({job_id}) is {job['state']}, not RUNNING, so no savepoint can be taken. Cancel it "
            "and re-run with --restore-from=<its latest checkpoint or savepoint>, or wait until it runs again"
        )
    print(f"[upgrade] stopping job {job['name']!r} ({job_id}) with a savepoint", flush=True)
    trigger = flink.stop_with_savepoint(job_id)

    def poll():
        status = flink.savepoint_status(job_id, trigger)
        if status["status"]["id"] != "COMPLETED":
            return None
        operation = status.get("operation", {})
        if "failure-cause" in operation:
            cause = operation["failure-cause"].get("stack-trace", "")[:1000]
            raise SubmitError(f"the savepoint of job {job_id} failed; the job keeps running unchanged:\n{cause}")
        return operation["location"]

    location = wait_for(f"the savepoint of job {job_id}", poll, timeout_s, interval_s, sleep)
    print(f"[upgrade] job {job_id} stopped at savepoint {location}", flush=True)
    return location


def wait_until_running(flink: FlinkRest, job_id: str, timeout_s: float, interval_s: float, sleep=time.sleep) -> dict:
    """The job once it and all of its tasks run (TaskManagers may first have to be scheduled onto new nodes)."""

    def poll():
        job = flink.job(job_id)
        if job["state"] in TERMINAL_STATES or job["state"] == "FAILING":
            raise SubmitError(f"job {job_id} is {job['state']} instead of starting; see the JobManager's log")
        vertices = job.get("vertices", [])
        if job["state"] == "RUNNING" and vertices and all(v["status"] == "RUNNING" for v in vertices):
            return job
        return None

    return wait_for(f"every task of job {job_id} to run", poll, timeout_s, interval_s, sleep)


def submit(
    plan: Plan,
    flink: FlinkRest,
    *,
    restore_from: str | None = None,
    build: Callable[[Plan, str], None],
    workdir: str,
    savepoint_timeout_s: float = 900,
    start_timeout_s: float = 900,
    interval_s: float = 5,
    sleep=time.sleep,
) -> str:
    """Builds, savepoints the running job of the same name (if any), starts the new one; returns its job id."""
    jar_path = os.path.join(workdir, f"{plan.job_name}.jar")
    # Build first: a pipeline that does not build leaves the running job untouched.
    build(plan, jar_path)

    def list_jobs():
        try:
            return flink.jobs()
        except Unreachable as error:
            print(f"[wait] Flink REST API not answering yet: {error}", flush=True)
            return None

    running = active_jobs(
        wait_for(f"the Flink REST API at {plan.rest}", list_jobs, start_timeout_s, interval_s, sleep), plan.job_name
    )
    if len(running) > 1:
        ids = ", ".join(job["jid"] for job in running)
        raise SubmitError(f"{len(running)} jobs are named {plan.job_name!r} ({ids}); cancel all but one, then re-run")
    savepoint = restore_from
    if running:
        if restore_from:
            raise SubmitError(f"--restore-from was given but job {plan.job_name!r} is running; it would be lost")
        savepoint = take_savepoint(flink, running[0], savepoint_timeout_s, interval_s, sleep)

    # From here on a failure must say where the state is: the old job is gone.
    hint = (
        (
            f" The previous job stopped at savepoint {savepoint}: set RESTORE_FROM={savepoint} (restore.env) and apply "
            "again, or start the previous version from it."
        )
        if running
        else ""
    )
    jar_id = flink.upload_jar(jar_path)
    try:
        job_id = flink.run_jar(jar_id, savepoint)
        print(
            f"[start] job {plan.job_name!r} started as {job_id}" + (f" from {savepoint}" if savepoint else ""),
            flush=True,
        )
        job = wait_until_running(flink, job_id, start_timeout_s, interval_s, sleep)
    except SubmitError as error:
        raise SubmitError(f"{error}.{hint}") from error
    finally:
        # A started job no longer needs its upload (its classes are in the blob store and the HA metadata).
        flink.delete_jar(jar_id)
    if job["name"] != plan.job_name:
        raise SubmitError(
            f"job {job_id} runs as {job['name']!r}, not {plan.job_name!r}: the next submission would not find it"
        )
    print(f"[done] job {plan.job_name!r} ({job_id}) is running", flush=True)
    return job_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m deploy.submit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", required=True, help="the pipeline's entry point, e.g. pipelines.fraud_detection")
    parser.add_argument("--args-file", required=True, help="the pipeline's options, one argument per line")
    parser.add_argument(
        "--restore-from",
        default=os.environ.get("RESTORE_FROM") or None,
        help="start from this savepoint or checkpoint when no job of the name runs (default: $RESTORE_FROM)",
    )
    parser.add_argument("--build-timeout", type=float, default=900, help="seconds for building the job jar")
    parser.add_argument("--savepoint-timeout", type=float, default=900, help="seconds for the upgrade savepoint")
    parser.add_argument("--start-timeout", type=float, default=900, help="seconds until every task must run")
    parser.add_argument("runner_args", nargs="*", help="after --: Beam's runner flags, placed before the file's")
    args = parser.parse_args(argv)
    try:
        with open(args.args_file, encoding="utf-8") as handle:
            plan = make_plan(args.module, handle.read(), args.runner_args)
        with tempfile.TemporaryDirectory(prefix="submit-") as workdir:
            submit(
                plan,
                FlinkRest(plan.rest),
                restore_from=args.restore_from,
                build=lambda p, jar: build_job_jar(p, jar, args.build_timeout),
                workdir=workdir,
                savepoint_timeout_s=args.savepoint_timeout,
                start_timeout_s=args.start_timeout,
            )
    except SubmitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
