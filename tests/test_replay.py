"""Replaying retryable dead letters (python -m pipelines.replay): from a dead-letter subscription into a running
pipeline after a real model-server outage, and from a backfill's dead-letter files."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

from outage import through_an_outage

from plumbing.polling import poll_until
from transforms.dead_letter import dead_letter_json
from transforms.messages import DeadLetter, RawEvent


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.replay", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )


def test_retryable_dead_letters_of_an_outage_replayed_into_the_pipeline_are_each_predicted_exactly_once(
    emulator, serving_repo, tmp_path
):
    """The model server dies for longer than the retry budget: the events it caught are dead-lettered as
    retryable. It comes back; the replay sends them to the input again, and with --deduplicate every event ends
    with exactly one prediction, the replayed ones included (a retryable failure is never remembered as seen)."""
    subscriptions = []

    def subscribe_to_dead_letters(run):
        subscriptions.append(emulator.create_subscription(run.dead_letters_topic, "replay-fraud-dead-letters-replay"))

    with through_an_outage(
        emulator,
        serving_repo,
        tmp_path,
        "replay-",
        seed=68,
        outage_secs=10,
        retry_budget_secs=2,
        extra_args=("--deduplicate",),
        before_publish=subscribe_to_dead_letters,
    ) as (run, messages):
        replay_subscription = subscriptions[0]
        dead = {d.body["event_id"] for d in run.dead_letters}
        assert dead and all(d.body["error_type"] == "retryable" for d in run.dead_letters)

        result = replay(
            f"--from_subscription={replay_subscription}", f"--to_topic={emulator.topic_path(run.events_topic)}"
        )
        assert result.returncode == 0, result.stderr
        assert f"replayed {len(run.dead_letters)}, skipped 0 permanent, failed 0" in result.stdout

        def all_predicted() -> bool | None:
            run.check_alive()
            return True if {p.body["event_id"] for p in run.predictions} == {m.event_id for m in messages} else None

        poll_until(all_predicted, timeout=180, interval=0.5, what="a prediction for every replayed event")
        time.sleep(3)  # a repeat would come now
        counts = collections.Counter(p.body["event_id"] for p in run.predictions)
        again = replay(
            f"--from_subscription={replay_subscription}", f"--to_topic={emulator.topic_path(run.events_topic)}"
        )
    assert {event_id: n for event_id, n in counts.items() if n != 1} == {}
    assert "replayed 0, skipped 0 permanent, failed 0" in again.stdout, "a second replay has nothing left to send"


def test_a_backfills_retryable_dead_letters_replay_into_an_events_file_with_their_original_bytes(tmp_path):
    originals = [json.dumps({"event_id": f"e-{i}"}).encode() for i in range(6)]
    lines = [
        dead_letter_json(DeadLetter(RawEvent(payload, {}), "infer", "UNAVAILABLE: down", kind, f"e-{i}"), "fraud")
        for i, (payload, kind) in enumerate(zip(originals, ["retryable", "permanent"] * 3))
    ]
    (tmp_path / "dead-00000-of-00001.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = replay(f"--from_file={tmp_path}/dead-*.jsonl", f"--to_file={tmp_path}/replay.jsonl")
    assert result.returncode == 0, result.stderr
    assert "replayed 3, skipped 3 permanent, failed 0" in result.stdout
    assert (tmp_path / "replay.jsonl").read_bytes().splitlines() == originals[0::2]
