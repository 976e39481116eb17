"""Watching a running pipeline change model versions: probes published until their predictions name a version.

A rollout moves a label; the pipeline follows it within its refresh interval (in process) or at once (TF Serving).
The demo and the tests wait for the move to show where it matters, in the predictions, rather than for a log line,
which on Flink is in a worker's log. Probes are ordinary events: each is predicted once, like any other.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from localdev.streaming import Received, StreamingRun
from localdev.traffic import Message, make_traffic
from model_handlers.interface import ModelInterface
from transforms.routing import SHADOW, in_share


def probes(interface: ModelInterface, seed: int, only: Callable[[Message], bool] | None = None) -> Iterator[Message]:
    """Valid events (those `only` accepts), one at a time, whose ids no other traffic of this seed uses."""
    while True:
        for message in make_traffic(interface, 50, malformed_fraction=0.0, seed=seed):
            if only is None or only(message):
                yield message
        seed += 1_000_003


def publish_until_version(
    run: StreamingRun,
    interface: ModelInterface,
    version: str,
    seed: int,
    timeout_secs: float = 120,
    every_secs: float = 0.5,
    only: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Publishes a probe (an event `only` accepts, e.g. one outside a canary's share) every `every_secs` until a
    probe's prediction names `version`; returns the probes sent (each still to be accounted for). Raises
    TimeoutError, naming the versions seen, when it never does."""
    sent: list[Message] = []
    ids: set[str] = set()
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_secs
    source = probes(interface, seed, only)
    while time.monotonic() < deadline:
        probe = next(source)
        run.publish([probe])
        sent.append(probe)
        ids.add(probe.event_id)
        time.sleep(every_secs)
        seen = {p.body["model_version"] for p in run.predictions if p.body["event_id"] in ids}
        if version in seen:
            return sent
        run.check_alive()
    raise TimeoutError(
        f"after {timeout_secs:.0f}s of probes the pipeline still predicts with {seen or 'nothing'}, "
        f"not version {version}"
    )


class LifecycleAct:
    """The demo's lifecycle act, on one model (fraud): a repository of its own with two genuinely different versions,
    stable = 1; the pipeline follows stable, and version 2 shadows it as the challenger on half the events. Mid-stream the act rolls
    stable forward to 2, then back to 1, with the rollout command an operator runs, and the summary shows the predictions per
    version, how long each switch took to show, and the shadow's agreement with the champion of the moment."""

    # (what, the rollout command's arguments, the version stable names after it, when: a share of the stream)
    STEPS = (
        ("roll forward: stable -> 2", ("--version", "2"), "2", 0.2),
        ("roll back: stable -> 1", ("--rollback",), "1", 0.55),
    )
    REFRESH_SECS = 2
    SHADOW_PERCENT = 50

    def __init__(self, source_model_dir: str | Path, work_dir: str | Path, say: Callable[[str], None]):
        self.source = Path(source_model_dir)
        self.repo = Path(work_dir) / "lifecycle-models"
        self.say = say
        self.done: list[tuple[str, str, float]] = []  # (step, version expected, wall time the label moved)
        self._thread: threading.Thread | None = None
        self.failed: str | None = None

    def prepare(self) -> None:
        """fraud 1 (the demo's) and 2 (trained once with another seed, about 10 s), stable = 1."""
        from model_handlers import labels

        first = self.repo / "fraud" / "1"
        if not first.exists():
            shutil.copytree(self.source / "fraud" / "1", first)
        if not (self.repo / "fraud" / "2" / "saved_model.pb").exists():
            self.say("      training fraud version 2 for the lifecycle act (another seed; once, about 10 s)")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "training.train",
                    f"--model_dir={self.repo}",
                    "--models=fraud",
                    "--model_version=2",
                    "--seed=1",
                ],
                check=True,
                capture_output=True,
            )
        labels.write(str(self.repo), "fraud", {"stable": 1}, expected=labels.read(str(self.repo), "fraud"))

    def pipeline_args(self) -> list[str]:
        return [
            f"--model_dir={self.repo}",
            "--model_version_label=stable",
            f"--model_refresh_secs={self.REFRESH_SECS}",
            "--shadow_version=2",
            # Half the events: a shadow costs what scoring costs, again, on the demo's two cores.
            f"--shadow_percent={self.SHADOW_PERCENT}",
        ]

    def start(self, stream_secs: float) -> None:
        """Runs the steps at their share of the stream, from a thread."""
        self._thread = threading.Thread(target=self._run, args=(stream_secs,), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self, stream_secs: float) -> None:
        start = time.monotonic()
        for step, args, version, when in self.STEPS:
            time.sleep(max(0.0, start + stream_secs * when - time.monotonic()))
            # The command an operator runs; it checks that the version loads first, so it takes a few seconds.
            command = [sys.executable, "-m", "deploy", "rollout-model", f"--model_dir={self.repo}", "--model", "fraud"]
            done = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.failed = f"{step}: {done.stderr.strip()[-500:]}"
                return
            # When the label moved: the command's last write (it exits a while later, tearing TensorFlow down).
            moved_at = (self.repo / "fraud" / "labels.json").stat().st_mtime
            self.done.append((step, version, moved_at))
            self.say(f"      lifecycle: {step}  (python -m deploy rollout-model --model fraud {' '.join(args)})")

    def sampled(self, event_ids) -> int:
        """How many of these events the shadow scores."""
        return sum(in_share(event_id, self.SHADOW_PERCENT, SHADOW) for event_id in event_ids)

    def summary(self, predictions: list[Received], comparisons: list[Received]) -> list[str]:
        per_version = collections.Counter(p.body["model_version"] for p in predictions)
        lines = ["    predictions by      " + ", ".join(f"v{v}: {n}" for v, n in sorted(per_version.items()))]
        if self.failed:
            lines.append(f"    lifecycle FAILED    {self.failed}")
        for step, version, finished in self.done:
            after = [
                p.received_at for p in predictions if p.received_at >= finished and p.body["model_version"] == version
            ]
            shown = (
                f"first v{version} prediction {min(after) - finished:.1f}s after the move" if after else "never shown"
            )
            lines.append(f"    {step:<27} {shown}")
        if len(self.done) < len(self.STEPS) and not self.failed:
            lines.append("    lifecycle           the stream ended before every step ran")
        records = [c.body for c in comparisons]
        compared = [r for r in records if r.get("challenger") is not None]
        pairs = collections.defaultdict(list)
        for record in compared:
            pairs[(record["champion_version"], record["challenger_version"])].append(record["agree"])
        if compared:
            agreed = sum(r["agree"] for r in compared)
            gap = sum(abs(r["champion"]["fraud_probability"] - r["challenger"]["fraud_probability"]) for r in compared)
            lines.append(
                f"    shadow (v2, {self.SHADOW_PERCENT}%)    {len(compared)} comparisons: is_fraud agrees on {agreed / len(compared):.1%}, "
                f"fraud_probability differs by {gap / len(compared):.4f} on average"
            )
            for (champion, challenger), agreements in sorted(pairs.items()):
                lines.append(
                    f"      v{champion} vs v{challenger}: {sum(agreements) / len(agreements):.1%} agree, "
                    f"{len(agreements)} events"
                )
        failed = [r for r in records if r.get("challenger") is None]
        if failed:
            # By the error's first words: "shed" (the challenger fell too far behind), a load failure, an exception.
            reasons = collections.Counter(str(r.get("error")).split(":")[0] for r in failed)
            lines.append(
                f"    shadow failures     {len(failed)}: "
                + ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            )
        return lines
