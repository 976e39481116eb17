"""Streaming end to end through the real Pub/Sub emulator: the pipeline runs as its own process, as users run it."""

import time

import pytest

from localdev.streaming import StreamingRun
from localdev.traffic import MALFORMED_KINDS, make_traffic
from model_handlers.interface import FRAUD, PRICE
from reference import check_every_event_accounted_for

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
        run.publish(messages)
        arrived = run.wait_for_outputs(len(messages), timeout_secs=240)
        time.sleep(3)  # anything duplicated would show up now
        predictions, dead_letters = run.predictions, run.dead_letters
    assert arrived, f"only {len(predictions)} predictions and {len(dead_letters)} dead letters for {len(messages)} events"

    check_every_event_accounted_for(
        messages, [p.body for p in predictions], [d.body for d in dead_letters], interface, model_dir
    )
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
        assert dead_letter.attributes["stage"] == dead_letter.body["stage"]
