"""Both pipelines on a real local Flink 1.20 cluster (localdev.flink): streaming through the Pub/Sub emulator,
backfill on files, hostile messages, and faults made for real: a TaskManager or the SDK worker pool SIGKILLed
mid-stream and restarted (with and without the options that add a shuffle), and the network to Pub/Sub and to the
model server stalled, reset and refused by a proxy. Nothing is skipped: without Java or Maven the cluster fixture
fails with what to install."""

from __future__ import annotations

import base64
import collections
import json
import time

import pytest
from hostile import HOSTILE_STAGES, hostile_traffic
from lifecycle_checks import check_versions, rollout, write_serving_config
from reference import assert_close, check_every_event_accounted_for, direct_outputs, publish_and_account
from test_backfill import read_json_lines
from test_canary import within_binomial

from localdev.fault_proxy import FaultProxy
from localdev.lifecycle import publish_until_version
from localdev.streaming import PipelineDied, StreamingRun
from localdev.traffic import MALFORMED_KINDS, make_traffic
from model_handlers import labels
from model_handlers.interface import FRAUD, PRICE
from pipelines import fraud_detection, price_suggestion
from transforms.routing import CANARY, SHADOW, in_share

INTERFACES = {"fraud": FRAUD, "price": PRICE}
PIPELINES = {"fraud": fraud_detection, "price": price_suggestion}
CHECKPOINT_MS = 2000


@pytest.fixture(scope="module")
def flink(emulator):
    from localdev.flink import LocalFlink

    cluster = LocalFlink(verbose=False)
    # No emulator address for the cluster: it travels with each pipeline's options to the SDK workers.
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def no_job_left_running(flink):
    yield
    # Stopping the launcher does not stop a streaming job on the cluster: cancel it, as an operator would.
    flink.cancel_all_jobs()


def streaming_args(flink, *extra, checkpoint_ms=CHECKPOINT_MS):
    return [*flink.pipeline_args(streaming=True, checkpointing_interval_ms=checkpoint_ms), *extra]


def wait_for_every_event(run, event_ids, timeout_secs, on_progress=None):
    """Until every id in `event_ids` has at least one prediction; returns the predictions' per-id counts."""
    deadline = time.monotonic() + timeout_secs
    while True:
        counts = collections.Counter(p.body["event_id"] for p in run.predictions)
        if set(event_ids) <= set(counts) or time.monotonic() > deadline:
            return counts
        run.check_alive()
        if on_progress:
            on_progress(counts)
        time.sleep(0.5)


@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_streaming_on_flink_predicts_every_valid_event_once_and_dead_letters_every_malformed_one(
    model, model_dir, emulator, flink, tmp_path
):
    interface = INTERFACES[model]
    messages = make_traffic(interface, 200, malformed_fraction=0.08, seed=43)
    assert {m.malformed for m in messages} >= set(MALFORMED_KINDS)
    with StreamingRun(emulator, model, model_dir, tmp_path, streaming_args(flink), prefix=f"f-{model}-") as run:
        flink.wait_for_job_running(timeout=180)
        predictions, _dead_letters = publish_and_account(run, messages, interface, model_dir)
    sent = {m.event_id: m for m in messages if m.malformed is None}
    for prediction in predictions:
        assert prediction.attributes["seq"] == sent[prediction.body["event_id"]].attributes["seq"]
        assert (prediction.attributes["model"], prediction.attributes["model_version"]) == (model, "1")


@pytest.mark.parametrize("model", sorted(PIPELINES))
def test_backfill_on_flink_matches_the_model(model, model_dir, flink, tmp_path):
    interface = INTERFACES[model]
    messages = make_traffic(interface, 400, malformed_fraction=0.05, seed=44)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    result = PIPELINES[model].run(
        [
            f"--input={events_file}",
            f"--output={tmp_path}/out/predictions",
            f"--dead_letter_output={tmp_path}/out/dead",
            f"--model_dir={model_dir}",
            *flink.pipeline_args(streaming=False),
        ]
    )
    assert result.wait_until_finish() == "DONE"
    predictions, dead_letters = read_json_lines(f"{tmp_path}/out/predictions"), read_json_lines(f"{tmp_path}/out/dead")
    n_pred, n_dead = check_every_event_accounted_for(messages, predictions, dead_letters, interface, model_dir)
    assert n_pred + n_dead == len(messages)


def job_failures(flink) -> list[dict]:
    """The failures (each a restart) of the one job running on the cluster, from Flink's REST API."""
    (job,) = flink.running_jobs()
    return flink.rest("GET", f"/jobs/{job['jid']}/exceptions")["exceptionHistory"]["entries"]


def assert_never_restarted(flink) -> None:
    failures = job_failures(flink)
    assert not failures, f"the job failed {len(failures)} times: {failures[0]['stacktrace'][:2000]}"


def count_predictions(run) -> collections.Counter:
    return collections.Counter(p.body["event_id"] for p in run.predictions)


@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_hostile_messages_never_restart_the_job_and_each_is_dead_lettered_whole_once(
    model, model_dir, emulator, flink, tmp_path
):
    """Lone surrogates, huge integers, deep nesting, attributes past Pub/Sub's limits, a 5 MB payload, mixed into
    valid traffic: the job never fails (Flink's REST API lists no exception), every valid event is predicted once,
    and every hostile message is dead-lettered once, at its stage, with its original bytes and attributes."""
    interface = INTERFACES[model]
    messages = hostile_traffic(interface, 160, seed=47)
    hostile = [m for m in messages if m.malformed]
    assert {m.malformed for m in hostile} == set(HOSTILE_STAGES)
    with StreamingRun(emulator, model, model_dir, tmp_path, streaming_args(flink), prefix=f"h-{model}-") as run:
        flink.wait_for_job_running(timeout=180)
        arrived, predictions, dead_letters = run.publish_and_collect(messages, timeout_secs=300)
        assert_never_restarted(flink)
    assert arrived, f"{len(predictions)} predictions and {len(dead_letters)} dead letters for {len(messages)} messages"
    valid = [m for m in messages if m.malformed is None]
    expected = direct_outputs(model_dir, interface, [json.loads(m.payload) for m in valid])
    counts = collections.Counter(p.body["event_id"] for p in predictions)
    assert counts == collections.Counter(set(expected)), "every valid event predicted exactly once"
    for prediction in predictions:
        assert_close(prediction.body, expected[prediction.body["event_id"]], interface)
    got = sorted(
        (d.body["attributes"]["seq"], base64.b64decode(d.body["payload"]), d.body["stage"]) for d in dead_letters
    )
    want = sorted((m.attributes["seq"], m.payload, HOSTILE_STAGES[m.malformed]) for m in hostile)
    assert got == want, "each hostile message dead-lettered once, with its bytes, at its stage"
    for dead_letter in dead_letters:
        sent = next(m for m in hostile if m.attributes["seq"] == dead_letter.body["attributes"]["seq"])
        published = {
            k: v for k, v in dead_letter.body["attributes"].items() if k != "published_at"
        }  # set by run.publish
        assert published == sent.attributes


# Options that put a keyed shuffle between the reader and the publish, and the default path without one.
SHUFFLES = {
    "default": [],
    "deduplicate": ["--deduplicate"],
    "stateful_batching": ["--max_batch_duration_secs=1"],
}
FAULTS = {
    "taskmanager": ("kill_taskmanager", "start_taskmanager"),
    "worker_pool": ("kill_worker_pool", "start_worker_pool"),
}
# A budget that fits a 25 s ack deadline (pipelines.delivery), so that what a killed worker held is redelivered soon.
FAST_REDELIVERY = ["--publish_timeout_secs=5"]
KILL_CASES = [("fraud", fault, shuffle) for fault in sorted(FAULTS) for shuffle in sorted(SHUFFLES)] + [
    ("price", "taskmanager", "default")
]


@pytest.mark.parametrize(("model", "fault", "shuffle"), KILL_CASES)
def test_a_component_killed_mid_stream_loses_no_event(
    model, fault, shuffle, model_dir, emulator, flink, tmp_path, record_property
):
    """SIGKILL mid-stream, restart, and every event still gets a prediction: a message is acknowledged only once
    its prediction is published, whatever shuffle the options add, so what the dead process held is delivered
    again. With --deduplicate each event has exactly one prediction when the TaskManager dies (the SDK worker
    lives on and acknowledges what it published); repeats are counted and printed."""
    kill, restart = (getattr(flink, name) for name in FAULTS[fault])
    messages = make_traffic(INTERFACES[model], 600, malformed_fraction=0, seed=45)
    event_ids = [m.event_id for m in messages]
    args = streaming_args(flink, *FAST_REDELIVERY, *SHUFFLES[shuffle])
    with StreamingRun(
        emulator, model, model_dir, tmp_path, args, prefix=f"k-{model}-{fault}-{shuffle}-", ack_deadline_secs=25
    ) as run:
        flink.wait_for_job_running(timeout=180)
        run.publish(messages[:200])
        assert run.wait_for_outputs(50, timeout_secs=180), "no predictions before the fault"
        kill()
        run.publish(messages[200:400])  # published while the component is down
        time.sleep(3)
        restart()
        run.publish(messages[400:])
        wait_for_every_event(run, event_ids, timeout_secs=300)
        time.sleep(30)  # past an ack deadline: a redelivery of anything held would have been scored by now
        counts = count_predictions(run)
        repeated = sorted(
            (int(p.attributes["seq"]), p.attributes["scored_at"])
            for p in run.predictions
            if counts[p.body["event_id"]] > 1
        )
    missing = sorted(set(event_ids) - set(counts))
    if repeated:
        print(f"repeated (seq, scored_at), first and last: {repeated[:4]} ... {repeated[-4:]}")
    duplicates = sum(n - 1 for n in counts.values())
    record_property("duplicates", duplicates)
    print(
        f"{model}, {shuffle}: {fault} killed and restarted: {len(event_ids)} events, {len(missing)} missing, "
        f"{duplicates} duplicates"
    )
    assert not missing, (
        f"{len(missing)} of {len(event_ids)} events never predicted after the {fault} restart: {missing[:5]}"
    )
    if shuffle == "deduplicate" and fault == "taskmanager":
        assert duplicates == 0, f"{duplicates} repeated predictions despite --deduplicate"


def test_deduplicate_gives_exactly_one_prediction_per_event_published_twice(model_dir, emulator, flink, tmp_path):
    """Every event published twice (a publisher's retry): one prediction each, and every copy acknowledged (none
    is delivered again after the ack deadline)."""
    messages = make_traffic(FRAUD, 150, malformed_fraction=0, seed=46)
    args = streaming_args(flink, "--deduplicate", *FAST_REDELIVERY)
    with StreamingRun(emulator, "fraud", model_dir, tmp_path, args, prefix="d-", ack_deadline_secs=25) as run:
        flink.wait_for_job_running(timeout=180)
        run.publish(messages + messages)
        wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=240)
        time.sleep(5)
        counts = count_predictions(run)
        flink.cancel_all_jobs()
        time.sleep(27)  # past the ack deadline: what the pipeline did not acknowledge is handed out again
        left = run.redelivered()
    assert set(counts) == {m.event_id for m in messages}
    assert {event_id: n for event_id, n in counts.items() if n > 1} == {}
    assert left == 0, f"{left} messages were never acknowledged"


def test_pubsub_network_stalls_and_resets_are_survived_in_place(model_dir, emulator, flink, tmp_path):
    """The workers reach the emulator through a proxy that stalls every connection for 8 s (pulls, publishes and
    acks hear nothing), then resets them all, then refuses new ones for 3 s: the job never fails, and every event
    is predicted; repeats (acks lost in the faults) are counted."""
    messages = make_traffic(FRAUD, 450, malformed_fraction=0, seed=48)
    with FaultProxy(emulator.host) as proxy:
        args = streaming_args(flink, f"--pubsub_emulator_host={proxy.address}", *FAST_REDELIVERY)
        with StreamingRun(emulator, "fraud", model_dir, tmp_path, args, prefix="p-", ack_deadline_secs=25) as run:
            flink.wait_for_job_running(timeout=180)
            run.publish(messages[:150], rate_per_sec=50)
            proxy.stall()
            run.publish(messages[150:250])
            time.sleep(8)
            proxy.forward()
            run.publish(messages[250:350], rate_per_sec=50)
            proxy.reset_all()
            proxy.refuse()
            time.sleep(3)
            proxy.forward()
            run.publish(messages[350:], rate_per_sec=50)
            counts = wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=300)
            assert_never_restarted(flink)
        print(
            f"pub/sub faults: {len(messages)} events, {sum(n - 1 for n in counts.values())} duplicates, "
            f"{proxy.resets} connections reset"
        )
    assert set(counts) == {m.event_id for m in messages}


def test_a_model_server_that_stalls_and_resets_is_survived_within_the_budget(
    model_dir, emulator, flink, model_server, tmp_path
):
    """TF Serving behind a proxy that stalls for 3 s, then resets every connection: batches wait or retry within
    --tf_serving_retry_budget_secs, nothing is dead-lettered, nothing is lost, and the job never fails."""
    messages = make_traffic(FRAUD, 300, malformed_fraction=0, seed=49)
    with FaultProxy(model_server.target) as proxy:
        args = streaming_args(
            flink,
            "--inference=tf_serving",
            f"--tf_serving_target={proxy.address}",
            "--model_version=1",
            "--tf_serving_timeout_secs=2",
        )
        with StreamingRun(emulator, "fraud", None, tmp_path, args, prefix="s-") as run:
            flink.wait_for_job_running(timeout=180)
            run.publish(messages[:100], rate_per_sec=50)
            proxy.stall()
            run.publish(messages[100:200], rate_per_sec=50)
            proxy.forward()
            proxy.reset_all()
            run.publish(messages[200:], rate_per_sec=50)
            counts = wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=300)
            dead_letters = run.dead_letters
            assert_never_restarted(flink)
    assert dead_letters == []
    assert set(counts) == {m.event_id for m in messages}


def test_workers_that_cannot_reach_pubsub_fail_the_launcher_with_the_reason(model_dir, emulator, flink, tmp_path):
    """The launcher reaches Pub/Sub (through a proxy), the workers then cannot (the proxy refuses): after
    --pubsub_unreachable_secs the workers fail, and the launcher cancels the job and exits 1, naming the cause."""
    with FaultProxy(emulator.host) as proxy:
        address = proxy.address
        args = streaming_args(flink, f"--pubsub_emulator_host={address}", "--pubsub_unreachable_secs=10")
        with StreamingRun(emulator, "fraud", model_dir, tmp_path, args, prefix="u-") as run:
            flink.wait_for_job_running(timeout=180)
            proxy.refuse()
            proxy.reset_all()
            with pytest.raises(PipelineDied) as died:
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    run.check_alive()
                    time.sleep(1)
    assert "exited with code 1" in str(died.value)
    assert "the job's workers cannot reach Pub/Sub, so it was cancelled" in str(died.value)
    assert f"at {address} has succeeded for" in str(died.value)


@pytest.mark.parametrize("inference", ["in_process", "tf_serving"])
def test_the_model_lifecycle_on_flink_predicts_every_event_exactly_once_by_the_version_expected(
    inference, lifecycle_repo, emulator, flink, request, tmp_path
):
    """With --deduplicate: a canary takes its share, a shadow pairs every sampled event, stable rolls forward and
    back and (in process) a hand-labelled broken version is refused, without a restart. Every event is predicted
    exactly once, by the version expected of it, and equal to a direct call of that version's SavedModel."""
    canary, shadow = 30, 50
    args = streaming_args(
        flink, "--deduplicate", f"--canary_percent={canary}", "--shadow_version=2", f"--shadow_percent={shadow}"
    )
    if inference == "tf_serving":
        server = request.getfixturevalue("lifecycle_server")  # stable 1, canary 2
        where, repo = None, server.repo
        args += ["--inference=tf_serving", f"--tf_serving_target={server.target}"]
        promote = lambda: write_serving_config(server.config, stable=2, previous=1)  # noqa: E731
        roll_back = lambda: write_serving_config(server.config, stable=1)  # noqa: E731
    else:
        labels.write(str(lifecycle_repo), "fraud", {"stable": 1, "canary": 2}, expected={"stable": 1})
        where, repo = lifecycle_repo, lifecycle_repo
        args += ["--model_refresh_secs=1"]
        promote = lambda: rollout(lifecycle_repo, "--version", "2")  # noqa: E731
        roll_back = lambda: rollout(lifecycle_repo, "--rollback")  # noqa: E731
    in_canary = lambda m: in_share(m.event_id, canary, CANARY)  # noqa: E731
    sent = []

    def publish(messages, allowed):
        run.publish(messages)
        sent.extend(messages)
        stages.append((messages, allowed))
        wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=240)

    def switch_to(version, seed):
        probes = publish_until_version(run, FRAUD, version, seed=seed, only=lambda m: not in_canary(m))
        sent.extend(probes)
        stages.append((probes, None))
        time.sleep(3)  # every SDK worker's copy follows, not only the one that scored the probe

    with StreamingRun(emulator, "fraud", where, tmp_path, args, prefix=f"lc-{inference}-", comparisons=True) as run:
        flink.wait_for_job_running(timeout=180)
        stages = []
        split = make_traffic(FRAUD, 400, 0.0, seed=131)
        run.publish(split)
        sent.extend(split)
        stages.extend(([m], {"2" if in_canary(m) else "1"}) for m in split)
        wait_for_every_event(run, [m.event_id for m in split], timeout_secs=240)

        promote()  # stable 2, the canary label withdrawn: its share falls back to stable
        switch_to("2", seed=231)
        publish(make_traffic(FRAUD, 200, 0.0, seed=132), {"2"})
        roll_back()
        switch_to("1", seed=232)
        publish(make_traffic(FRAUD, 200, 0.0, seed=133), {"1"})
        if inference == "in_process":
            labels.write(str(lifecycle_repo), "fraud", {"stable": 3, "previous": 1}, expected={"stable": 1})
            time.sleep(4)
            publish(make_traffic(FRAUD, 200, 0.0, seed=134), {"1"})

        sampled = sorted(m.event_id for m in sent if in_share(m.event_id, shadow, SHADOW))
        deadline = time.monotonic() + 120
        while len(run.comparisons) < len(sampled) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # repeats, if any, show up
        predictions = [p.body for p in run.predictions]
        records = [c.body for c in run.comparisons]
        assert run.dead_letters == []
        assert_never_restarted(flink)
    check_versions(predictions, stages, repo, FRAUD)
    assert within_binomial(sum(map(in_canary, split)), len(split), canary)

    assert sorted(r["event_id"] for r in records) == sampled, "not exactly one comparison per sampled event"
    version_of = {p["event_id"]: p["model_version"] for p in predictions}
    events = {json.loads(m.payload)["event_id"]: json.loads(m.payload) for m in sent}
    challenger = direct_outputs(repo, FRAUD, [events[r["event_id"]] for r in records], version=2)
    for record in records:
        assert record["champion_version"] == version_of[record["event_id"]] and record["challenger_version"] == "2"
        assert_close(record["challenger"], challenger[record["event_id"]], FRAUD)


def test_a_slow_challenger_sheds_what_it_cannot_reach_in_time_and_every_prediction_flows(
    lifecycle_server, emulator, flink, tmp_path
):
    """The challenger on a TF Serving of its own that takes 3 s a request, made slow for real: it falls behind, the
    events it reaches more than a second late are recorded as shed, unscored, and every prediction flows, exactly
    once and by the champion."""
    from localdev.model_server import ModelServerProcess
    from plumbing.ports import free_port

    messages = make_traffic(FRAUD, 400, 0.0, seed=141)
    with ModelServerProcess(lifecycle_server.repo, free_port(), tmp_path / "slow.log", ["--delay_secs=3"]) as slow:
        args = streaming_args(
            flink,
            "--inference=tf_serving",
            f"--tf_serving_target={lifecycle_server.target}",
            "--model_version=1",
            "--shadow_version=2",
            f"--shadow_tf_serving_target={slow.target}",
            "--shadow_max_lag_secs=1",
        )
        with StreamingRun(emulator, "fraud", None, tmp_path, args, prefix="slow-", comparisons=True) as run:
            flink.wait_for_job_running(timeout=180)
            run.publish(messages, rate_per_sec=40)
            wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=120)
            deadline = time.monotonic() + 120
            while len(run.comparisons) < len(messages) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)
            predictions = [p.body for p in run.predictions]
            records = [c.body for c in run.comparisons]
            assert run.dead_letters == []
    check_versions(predictions, [(messages, {"1"})], lifecycle_server.repo, FRAUD)
    assert sorted(r["event_id"] for r in records) == sorted(m.event_id for m in messages)
    shed = [r for r in records if r["challenger"] is None]
    assert shed and all(r["error"].startswith("shed: the challenger reached this event") for r in shed)
    assert all(r["challenger_version"] == "2" for r in records if r["challenger"] is not None)
