"""Checks shared by the lifecycle tests: every event predicted exactly once, by the version expected of it, with the
answer a direct call of that version's SavedModel gives."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

from reference import assert_close, direct_outputs


def rollout(repo, *args: str) -> None:
    """`python -m deploy rollout-model --model_dir=REPO --model fraud ...`, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy", "rollout-model", f"--model_dir={repo}", "--model", "fraud", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def check_versions(bodies, stages, repo, interface) -> dict[str, int]:
    """`bodies`: the prediction bodies; `stages`: [(messages, allowed versions or None for any)]. Every message is
    predicted exactly once, by an allowed version, and equal to that version's direct answer. Returns predictions
    per version."""
    counts = collections.Counter(body["event_id"] for body in bodies)
    repeated = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not repeated, f"events predicted more than once: {list(repeated.items())[:10]}"
    by_id = {body["event_id"]: body for body in bodies}
    events = {}
    for messages, allowed in stages:
        for message in messages:
            assert message.event_id in by_id, f"no prediction for {message.event_id}"
            version = by_id[message.event_id]["model_version"]
            assert allowed is None or version in allowed, f"{message.event_id} scored by {version}, not {allowed}"
            events[message.event_id] = json.loads(message.payload)
    assert set(by_id) == set(events), f"unexpected predictions: {sorted(set(by_id) - set(events))[:10]}"
    per_version = collections.defaultdict(list)
    for event_id, body in by_id.items():
        per_version[body["model_version"]].append(events[event_id])
    for version, scored in per_version.items():
        expected = direct_outputs(repo, interface, scored, version=int(version))
        for event in scored:
            assert_close(by_id[event["event_id"]], expected[event["event_id"]], interface)
    return {version: len(scored) for version, scored in sorted(per_version.items())}


SERVING_CONFIG = """model_config_list {{ config {{
  name: "fraud" base_path: "fraud" model_platform: "tensorflow" model_version_policy {{ all {{}} }}
  {labels}
}} }}
"""


def write_serving_config(path, **labels_now):
    """TF Serving's models.config with these version labels (what `rollout-model --cluster` applies)."""
    entries = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels_now.items())
    temporary = path.with_suffix(".tmp")
    temporary.write_text(SERVING_CONFIG.format(labels=entries))
    temporary.replace(path)
