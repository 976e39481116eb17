"""Streaming end to end through the real Pub/Sub emulator: the pipeline runs as its own process, as users run it."""

import pytest
from reference import publish_and_account

from localdev.streaming import StreamingRun
from localdev.traffic import MALFORMED_KINDS, make_traffic
from model_handlers.interface import FRAUD, PRICE

INTERFACES = {"fraud": FRAUD, "price": PRICE}
# price also proves event time from an attribute: --timestamp_attribute reads published_at (ms since epoch).
EXTRA_ARGS = {"fraud": [], "price": ["--timestamp_attribute=published_at"]}


@pytest.mark.parametrize("inference", ["in_process", "tf_serving"])
@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_streaming_predicts_every_valid_event_once_and_dead_letters_every_malformed_one(
    model, inference, model_dir, emulator, request, tmp_path
):
    interface = INTERFACES[model]
    messages = make_traffic(interface, 200, malformed_fraction=0.08, seed=41)
    assert {m.malformed for m in messages} >= set(MALFORMED_KINDS)
    if inference == "tf_serving":
        server = request.getfixturevalue("model_server")
        where, args = None, ["--inference=tf_serving", f"--tf_serving_target={server.target}", "--model_version=1"]
    else:
        where, args = model_dir, []
    prefix = f"t-{model}-{inference}-"
    with StreamingRun(emulator, model, where, tmp_path, args + EXTRA_ARGS[model], prefix=prefix) as run:
        predictions, dead_letters = publish_and_account(run, messages, interface, model_dir)
    by_id = {m.event_id: m for m in messages if m.malformed is None}
    for prediction in predictions:
        sent = by_id[prediction.body["event_id"]]
        # Input attributes are carried over; the pipeline adds its own four.
        assert prediction.attributes["seq"] == sent.attributes["seq"]
        assert prediction.attributes["source"] == "localdev.traffic" and "published_at" in prediction.attributes
        assert prediction.attributes["event_id"] == sent.event_id
        assert (prediction.attributes["model"], prediction.attributes["model_version"]) == (model, "1")
        assert prediction.attributes["scored_at"].endswith("Z")
    for dead_letter in dead_letters:
        assert dead_letter.body["attributes"]["source"] == "localdev.traffic"
        # On Pub/Sub a dead letter is the original message, with the reason beside its own attributes.
        assert dead_letter.attributes["source"] == "localdev.traffic"
        assert dead_letter.attributes["dead_letter_stage"] == dead_letter.body["stage"]


def test_events_with_a_missing_or_malformed_time_attribute_are_dead_lettered_and_the_rest_flow(
    model_dir, emulator, tmp_path
):
    from localdev.traffic import Message

    messages = make_traffic(FRAUD, 6, malformed_fraction=0, seed=42)
    stamped = [Message(m.payload, {**m.attributes, "ts": "2026-11-22T10:00:00Z"}, m.event_id, None) for m in messages]
    stamped[1] = messages[1]  # no ts at all
    stamped[4] = Message(
        messages[4].payload, {**messages[4].attributes, "ts": "not-a-time"}, messages[4].event_id, None
    )
    with StreamingRun(emulator, "fraud", model_dir, tmp_path, ["--timestamp_attribute=ts"], prefix="t-ts-") as run:
        run.publish(stamped)
        arrived = run.wait_for_outputs(len(stamped), timeout_secs=180)
        predictions, dead_letters = run.predictions, run.dead_letters
    assert arrived, f"{len(predictions)} predictions and {len(dead_letters)} dead letters for {len(stamped)} events"
    assert sorted(p.body["event_id"] for p in predictions) == sorted(
        m.event_id for i, m in enumerate(messages) if i not in (1, 4)
    )
    assert sorted((d.body["event_id"], d.body["stage"], d.body["error"]) for d in dead_letters) == sorted(
        [
            (messages[1].event_id, "parse", "timestamp attribute 'ts' is missing"),
            (
                messages[4].event_id,
                "parse",
                "timestamp attribute 'ts' is 'not-a-time': expected RFC 3339 or milliseconds since the epoch",
            ),
        ]
    )
