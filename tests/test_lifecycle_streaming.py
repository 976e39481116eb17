"""The model lifecycle in a running streaming pipeline on the real Pub/Sub emulator (DirectRunner): a rollout, a
rollback and a broken version, without a restart; every event predicted exactly once by the version expected."""

from __future__ import annotations

import time

from lifecycle_checks import check_versions, rollout

from localdev.lifecycle import publish_until_version
from localdev.streaming import StreamingRun
from localdev.traffic import make_traffic
from model_handlers import labels
from model_handlers.interface import FRAUD

REFRESH_SECS = 1


def publish_all(run, messages, timeout_secs=120):
    expected = run.outputs() + len(messages)
    run.publish(messages)
    assert run.wait_for_outputs(expected, timeout_secs=timeout_secs), f"{run.outputs()} of {expected} outputs"
    return messages


def test_in_process_follows_its_label_forward_back_and_past_a_broken_version(lifecycle_repo, emulator, tmp_path):
    args = ["--model_version_label=stable", f"--model_refresh_secs={REFRESH_SECS}"]
    with StreamingRun(emulator, "fraud", lifecycle_repo, tmp_path, args, prefix="swap-") as run:
        stages = [(publish_all(run, make_traffic(FRAUD, 150, 0.0, seed=101)), {"1"})]

        rollout(lifecycle_repo, "--version", "2")
        stages.append((publish_until_version(run, FRAUD, "2", seed=201), None))
        stages.append((publish_all(run, make_traffic(FRAUD, 150, 0.0, seed=102)), {"2"}))

        rollout(lifecycle_repo, "--rollback")
        stages.append((publish_until_version(run, FRAUD, "1", seed=202), None))
        stages.append((publish_all(run, make_traffic(FRAUD, 150, 0.0, seed=103)), {"1"}))

        # A version the rollout command would refuse, labelled by hand: the pipeline refuses it too.
        labels.write(
            str(lifecycle_repo),
            "fraud",
            {"stable": 3, "previous": 1},
            expected=labels.read(str(lifecycle_repo), "fraud"),
        )
        time.sleep(3 * REFRESH_SECS)
        stages.append((publish_all(run, make_traffic(FRAUD, 150, 0.0, seed=104)), {"1"}))
        time.sleep(2)  # repeats, if any, show up
        predictions = run.predictions
        assert not run.dead_letters
    per_version = check_versions(predictions, stages, lifecycle_repo, FRAUD)
    assert per_version["2"] >= 150 and per_version["1"] >= 450
    log = run.log_path.read_text()
    assert "fraud: version 2 now serves, after 1" in log and "fraud: version 1 now serves, after 2" in log
    assert log.count("refused version 3") == 1 and "does not match the 'fraud' schema" in log
