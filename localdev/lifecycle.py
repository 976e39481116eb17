"""Watching a running pipeline change model versions: probes published until their predictions name a version.

A rollout moves a label; the pipeline follows it within its refresh interval (in process) or at once (TF Serving).
The demo and the tests wait for the move to show where it matters, in the predictions, rather than for a log line,
which on Flink is in a worker's log. Probes are ordinary events: each is predicted once, like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from localdev.streaming import StreamingRun
from localdev.traffic import Message, make_traffic
from model_handlers.interface import ModelInterface


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
