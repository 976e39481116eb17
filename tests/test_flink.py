"""Both pipelines on a real local Flink 1.20 cluster (localdev.flink): streaming through the Pub/Sub emulator,
backfill on files, and faults made for real: a TaskManager or the SDK worker pool SIGKILLed mid-stream and
restarted. Nothing is skipped: without Java or Maven the cluster fixture fails with what to install."""

from __future__ import annotations

import collections
import time

import pytest

from localdev.streaming import StreamingRun
from localdev.traffic import MALFORMED_KINDS, make_traffic
from model_handlers.interface import FRAUD, PRICE
from pipelines import fraud_detection, price_suggestion
from reference import check_every_event_accounted_for
from test_backfill import read_json_lines

INTERFACES = {"fraud": FRAUD, "price": PRICE}
PIPELINES = {"fraud": fraud_detection, "price": price_suggestion}
CHECKPOINT_MS = 2000


@pytest.fixture(scope="module")
def flink(emulator):
    from localdev.flink import LocalFlink

    cluster = LocalFlink(verbose=False)
    # The SDK workers pull and publish themselves: they need the emulator's address, as the pipeline process does.
    cluster.start(env={"PUBSUB_EMULATOR_HOST": emulator.host})
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
        arrived, predictions, dead_letters = run.publish_and_collect(messages, timeout_secs=240)
    assert arrived, f"only {len(predictions)} predictions and {len(dead_letters)} dead letters for {len(messages)} events"
    check_every_event_accounted_for(
        messages, [p.body for p in predictions], [d.body for d in dead_letters], interface, model_dir
    )
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
    result = PIPELINES[model].run([
        f"--input={events_file}", f"--output={tmp_path}/out/predictions", f"--dead_letter_output={tmp_path}/out/dead",
        f"--model_dir={model_dir}", *flink.pipeline_args(streaming=False),
    ])
    assert result.wait_until_finish() == "DONE"
    predictions, dead_letters = read_json_lines(f"{tmp_path}/out/predictions"), read_json_lines(f"{tmp_path}/out/dead")
    n_pred, n_dead = check_every_event_accounted_for(messages, predictions, dead_letters, interface, model_dir)
    assert n_pred + n_dead == len(messages)


FAULTS = {
    "taskmanager": ("kill_taskmanager", "start_taskmanager"),
    "worker_pool": ("kill_worker_pool", "start_worker_pool"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_a_component_killed_mid_stream_loses_no_event(
    model, fault, model_dir, emulator, flink, tmp_path, record_property
):
    """SIGKILL mid-stream, restart, and every event still gets a prediction: messages are acknowledged only after a
    checkpoint that covers their publish, so what the dead process held is redelivered. Repeats are counted."""
    kill, restart = (getattr(flink, name) for name in FAULTS[fault])
    messages = make_traffic(INTERFACES[model], 600, malformed_fraction=0, seed=45)
    event_ids = [m.event_id for m in messages]
    with StreamingRun(emulator, model, model_dir, tmp_path, streaming_args(flink), prefix=f"k-{model}-{fault}-",
                      ack_deadline_secs=20) as run:
        flink.wait_for_job_running(timeout=180)
        run.publish(messages[:200])
        assert run.wait_for_outputs(50, timeout_secs=180), "no predictions before the fault"
        kill()
        run.publish(messages[200:400])  # published while the component is down
        time.sleep(3)
        restart()
        run.publish(messages[400:])
        counts = wait_for_every_event(run, event_ids, timeout_secs=300)
        time.sleep(5)
        counts = collections.Counter(p.body["event_id"] for p in run.predictions)
    missing = sorted(set(event_ids) - set(counts))
    duplicates = sum(n - 1 for n in counts.values())
    record_property("duplicates", duplicates)
    print(f"{model}: {fault} killed and restarted: {len(event_ids)} events, {len(missing)} missing, {duplicates} duplicates")
    assert not missing, f"{len(missing)} of {len(event_ids)} events never predicted after the {fault} restart: {missing[:5]}"
    assert set(counts) == set(event_ids)


def test_deduplicate_gives_exactly_one_prediction_per_event_despite_redelivery(model_dir, emulator, flink, tmp_path):
    """Two real sources of repeats at once: every event published twice (a publisher retry), and an ack deadline
    (10 s) shorter than the checkpoint interval (15 s), so Pub/Sub redelivers messages still in flight."""
    messages = make_traffic(FRAUD, 150, malformed_fraction=0, seed=46)
    args = streaming_args(flink, "--deduplicate", checkpoint_ms=15000)
    with StreamingRun(emulator, "fraud", model_dir, tmp_path, args, prefix="d-", ack_deadline_secs=10) as run:
        flink.wait_for_job_running(timeout=180)
        run.publish(messages + messages)
        counts = wait_for_every_event(run, [m.event_id for m in messages], timeout_secs=240)
        time.sleep(20)  # past an ack deadline and a checkpoint: redeliveries would have been scored by now
        counts = collections.Counter(p.body["event_id"] for p in run.predictions)
    assert set(counts) == {m.event_id for m in messages}
    assert {event_id: n for event_id, n in counts.items() if n > 1} == {}
