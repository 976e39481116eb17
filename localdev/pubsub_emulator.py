"""Launcher for the real Google Cloud Pub/Sub emulator, used by the demo, the tests and the benchmarks.

It starts the emulator installed with the Google Cloud CLI on a free loopback port, waits until it accepts
requests, creates topics and subscriptions through the official client, and stops the process (and its JVM
children) on exit. Clients find it through `PUBSUB_EMULATOR_HOST`, exactly as they would in production tooling.

    with PubsubEmulator(project="local-project") as emulator:
        emulator.create_topic("events")
        emulator.create_subscription("events", "events-sub")
        ...

Run `python -m localdev.pubsub_emulator` to keep one up in a terminal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from plumbing import cli
from plumbing.ports import free_port, port_taken
from plumbing.process import ManagedProcess, log_tail

READY_TIMEOUT_SECS = 60
STOP_GRACE_SECS = 10

__all__ = ["EmulatorError", "PubsubEmulator", "emulator_command", "free_port"]  # free_port: where tests import it


class EmulatorError(RuntimeError):
    pass


def emulator_command(port: int) -> list[str]:
    """The emulator's own launcher script from the Cloud SDK (Java 17), bound to loopback."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud is not on PATH: install the Google Cloud CLI and its Pub/Sub emulator component "
            "(`gcloud components install pubsub-emulator`, or Debian's google-cloud-cli-pubsub-emulator)."
        )
    sdk_root = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    script = Path(sdk_root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not script.exists():
        raise EmulatorError(f"the Pub/Sub emulator is not installed: expected {script}")
    if shutil.which("java") is None:
        raise EmulatorError("the Pub/Sub emulator needs Java 17 or newer on PATH; none was found")
    return [str(script), "--host=127.0.0.1", f"--port={port}"]


class PubsubEmulator(contextlib.AbstractContextManager):
    def __init__(self, project: str = "local-project", port: int | None = None, log_path: str | None = None):
        self.project = project
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: ManagedProcess | None = None
        self._previous_env: str | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> PubsubEmulator:
        # Checked first: an emulator that cannot bind exits, but the one holding the port would answer the
        # readiness check in its place, and the caller would use it unawares.
        taken = port_taken(self.port, "stop it, or choose another port with --port", what="Pub/Sub emulator")
        if taken:
            raise EmulatorError(taken)
        if self._log_path is None:
            self._log_path = os.path.join(tempfile.mkdtemp(prefix="pubsub-emulator-"), "emulator.log")
        # Its own process group: stop() signals the launcher script and the JVM it starts together.
        self._process = ManagedProcess(
            emulator_command(self.port), self._log_path, name="the Pub/Sub emulator", error=EmulatorError
        ).start()
        self._previous_env = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()

        def answers() -> bool:
            try:
                list(publisher.list_topics(request={"project": f"projects/{self.project}"}, timeout=2))
                return True
            except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.RetryError):
                return False

        self._process.wait_ready(answers, timeout=READY_TIMEOUT_SECS, what="answering ListTopics", interval=0.3)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=STOP_GRACE_SECS)
        self._process = None
        if os.environ.get("PUBSUB_EMULATOR_HOST") == self.host:
            if self._previous_env is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = self._previous_env

    def __enter__(self) -> PubsubEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self._log_path, lines) if self._log_path else ""

    # --- resources -------------------------------------------------------------------------------------
    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic(self, topic: str) -> str:
        from google.cloud import pubsub_v1

        path = self.topic_path(topic)
        pubsub_v1.PublisherClient().create_topic(request={"name": path})
        return path

    def create_subscription(self, topic: str, subscription: str, ack_deadline_secs: int = 60) -> str:
        from google.cloud import pubsub_v1

        path = self.subscription_path(subscription)
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(
                request={"name": path, "topic": self.topic_path(topic), "ack_deadline_seconds": ack_deadline_secs}
            )
        return path


def main(argv=None) -> None:
    parser = cli.ArgumentParser(description="Run the Pub/Sub emulator on loopback until interrupted.")
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--port", type=int, default=8085, help="default: 8085, gcloud's; 0: any free one")
    args = parser.parse_args(argv)
    try:
        with PubsubEmulator(project=args.project, port=args.port) as emulator:
            print(f"Pub/Sub emulator ready: export PUBSUB_EMULATOR_HOST={emulator.host}  (Ctrl-C stops it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except EmulatorError as error:
        raise cli.EnvironmentProblem(str(error)) from None


if __name__ == "__main__":
    cli.run(main)
