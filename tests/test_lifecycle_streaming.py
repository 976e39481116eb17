"""The model lifecycle in a running streaming pipeline on the real Pub/Sub emulator (DirectRunner): a rollout, a
rollback and a broken version, without a restart; every event predicted exactly once by the version expected."""

from __future__ import annotations

import json
import time

import pytest
from lifecycle_checks import check_versions, rollout, write_serving_config
from reference import assert_close, direct_outputs
from test_canary import within_binomial

from localdev.lifecycle import publish_until_version
from localdev.streaming import StreamingRun
from localdev.traffic import make_traffic
from model_handlers import labels
from model_handlers.interface import FRAUD
from transforms.routing import CANARY, SHADOW, in_share

REFRESH_SECS = 1


def publish_all(run, messages, timeout_secs=120):
    expected = run.outputs() + len(messages)
    run.publish(messages)
    assert run.wait_for_outputs(expected, timeout_secs=timeout_secs), f"{run.outputs()} of {expected} outputs"
    return messages


@pytest.mark.parametrize("inference", ["in_process", "tfx_bsl"])
def test_in_process_follows_its_label_forward_back_and_past_a_broken_version(
    inference, lifecycle_repo, emulator, tmp_path
):
    args = [f"--inference={inference}", "--model_version_label=stable", f"--model_refresh_secs={REFRESH_SECS}"]
    with StreamingRun(emulator, "fraud", lifecycle_repo, tmp_path, args, prefix=f"swap-{inference}-") as run:
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
        predictions = [p.body for p in run.predictions]
        assert not run.dead_letters
    per_version = check_versions(predictions, stages, lifecycle_repo, FRAUD)
    assert per_version["2"] >= 150 and per_version["1"] >= 450
    # The predictions prove the moves. Each worker's follower logs its own refusal, and the DirectRunner may set up
    # a fresh RunInference (a fresh load, falling back past the broken version) at any time: at least one line.
    log = run.log_path.read_text()
    assert "refused version 3" in log and "SignatureMismatchError" in log


@pytest.mark.parametrize("inference", ["in_process", "tf_serving"])
def test_a_canary_takes_its_share_and_once_promoted_scores_everything(
    inference, lifecycle_repo, emulator, request, tmp_path
):
    percent = 30
    if inference == "tf_serving":
        server = request.getfixturevalue("lifecycle_server")
        where, repo = None, server.repo
        args = ["--inference=tf_serving", f"--tf_serving_target={server.target}"]
        promote = lambda: write_serving_config(server.config, stable=2, previous=1)  # noqa: E731
    else:
        labels.write(str(lifecycle_repo), "fraud", {"stable": 1, "canary": 2}, expected={"stable": 1})
        where, repo = lifecycle_repo, lifecycle_repo
        args = [f"--model_refresh_secs={REFRESH_SECS}"]
        promote = lambda: rollout(lifecycle_repo, "--version", "2")  # noqa: E731
    in_canary = lambda m: in_share(m.event_id, percent, CANARY)  # noqa: E731
    with StreamingRun(
        emulator, "fraud", where, tmp_path, [f"--canary_percent={percent}", *args], prefix=f"canary-{inference}-"
    ) as run:
        split = publish_all(run, make_traffic(FRAUD, 600, 0.0, seed=111))
        stages = [([m], {"2" if in_canary(m) else "1"}) for m in split]

        promote()  # stable = 2 and the canary label withdrawn: the canary's share falls back to stable, now 2 too
        stages.append((publish_until_version(run, FRAUD, "2", seed=211, only=lambda m: not in_canary(m)), None))
        stages.append((publish_all(run, make_traffic(FRAUD, 200, 0.0, seed=112)), {"2"}))
        time.sleep(2)
        predictions = [p.body for p in run.predictions]
        assert not run.dead_letters
    check_versions(predictions, stages, repo, FRAUD)
    canary_count = sum(1 for m in split if in_canary(m))
    assert within_binomial(canary_count, len(split), percent)


def wait_for_comparisons(run, expected: int, timeout_secs: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_secs
    while len(run.comparisons) < expected and time.monotonic() < deadline:
        run.check_alive()
        time.sleep(0.2)
    time.sleep(2)  # repeats, if any, show up
    return [c.body for c in run.comparisons]


@pytest.mark.parametrize("inference", ["in_process", "tf_serving"])
def test_a_shadow_pairs_every_sampled_event_and_a_failing_challenger_changes_no_prediction(
    inference, lifecycle_repo, emulator, request, tmp_path
):
    percent = 50
    args = ["--model_version_label=stable", "--shadow_label=canary", f"--shadow_percent={percent}"]
    if inference == "tf_serving":
        server = request.getfixturevalue("lifecycle_server")  # stable 1, canary 2
        where, repo = None, server.repo
        args += ["--inference=tf_serving", f"--tf_serving_target={server.target}", "--tf_serving_retry_budget_secs=5"]
    else:
        labels.write(str(lifecycle_repo), "fraud", {"stable": 1, "canary": 2}, expected={"stable": 1})
        where, repo = lifecycle_repo, lifecycle_repo
    sampled = lambda messages: sorted(m.event_id for m in messages if in_share(m.event_id, percent, SHADOW))  # noqa: E731
    with StreamingRun(emulator, "fraud", where, tmp_path, args, prefix=f"shadow-{inference}-", comparisons=True) as run:
        first = publish_all(run, make_traffic(FRAUD, 400, 0.0, seed=121))
        records = wait_for_comparisons(run, len(sampled(first)))
        stages = [(first, {"1"})]
        if inference == "tf_serving":
            # The challenger's label withdrawn: every challenger request fails; the champion does not notice.
            write_serving_config(server.config, stable=1)
            time.sleep(2)
            second = publish_all(run, make_traffic(FRAUD, 200, 0.0, seed=122))
            stages.append((second, {"1"}))
            records = wait_for_comparisons(run, len(records) + len(sampled(second)))
            failed = [r for r in records if r["event_id"] in set(sampled(second))]
            assert sorted(r["event_id"] for r in failed) == sampled(second)
            assert all(r["challenger"] is None and "Unrecognized servable version label" in r["error"] for r in failed)
            records = [r for r in records if r not in failed]
        predictions = [p.body for p in run.predictions]
        assert not run.dead_letters
    check_versions(predictions, stages, repo, FRAUD)
    assert sorted(r["event_id"] for r in records) == sampled(first), "not one comparison per sampled event"
    events = [json.loads(m.payload) for m in first if in_share(m.event_id, percent, SHADOW)]
    one, two = (direct_outputs(repo, FRAUD, events, version=v) for v in (1, 2))
    for record in records:
        assert (record["champion_version"], record["challenger_version"]) == ("1", "2")
        assert_close(record["champion"], one[record["event_id"]], FRAUD)
        assert_close(record["challenger"], two[record["event_id"]], FRAUD)
        assert record["agree"] == (record["champion"]["is_fraud"] == record["challenger"]["is_fraud"])
