"""The Score composite in a real pipeline, and the formats of what leaves it."""

import base64
import json

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from reference import direct_outputs
from test_handler import PoisonedHandler

from model_handlers.interface import FRAUD
from model_handlers.saved_model import SavedModelHandler
from pipelines.fraud_detection import is_fraud
from training.data import generate
from transforms.dead_letter import dead_letter_json, dead_letter_message, original_message
from transforms.messages import DeadLetter, EventRef, RawEvent, Reason
from transforms.predictions import format_prediction, rfc3339
from transforms.scoring import DUPLICATES, DeduplicatePredictions, Score


def test_prediction_carries_ids_version_outputs_and_input_attributes():
    ref = EventRef("e-9", RawEvent(b"{}", {"source": "app", "model": "spoofed"}))
    result = PredictionResult({"price": 1.0}, {"fraud_probability": 0.75}, "3")
    message = format_prediction(ref, result, FRAUD, lambda o: is_fraud(o, 0.7), "2026-01-01T00:00:00.000Z")
    assert json.loads(message.data) == {
        "event_id": "e-9",
        "model": "fraud",
        "model_version": "3",
        "fraud_probability": 0.75,
        "is_fraud": True,
    }
    assert message.attributes == {
        "source": "app",
        "event_id": "e-9",
        "model": "fraud",
        "model_version": "3",
        "scored_at": "2026-01-01T00:00:00.000Z",
    }


def test_scored_at_is_rfc3339_utc_to_the_millisecond():
    assert rfc3339(1_795_372_800_123) == "2026-11-22T18:40:00.123Z"


def test_fraud_threshold_decides_is_fraud_inclusively():
    assert is_fraud({"fraud_probability": 0.5}, 0.5) == {"is_fraud": True}
    assert is_fraud({"fraud_probability": 0.49}, 0.5) == {"is_fraud": False}


def test_dead_letter_file_line_carries_original_bytes_attributes_stage_and_reason():
    raw = RawEvent(b"\xff\x00not json", {"source": "app"})
    letter = DeadLetter(raw, "parse", "payload is not UTF-8", "permanent", reason=Reason.NOT_UTF8)
    body = json.loads(dead_letter_json(letter, "fraud"))
    assert base64.b64decode(body["payload"]) == raw.payload
    assert body == {
        "payload": body["payload"],
        "attributes": {"source": "app"},
        "stage": "parse",
        "reason": "not_utf8",
        "error": "payload is not UTF-8",
        "error_type": "permanent",
        "event_id": None,
        "model": "fraud",
    }


def test_pubsub_dead_letter_is_the_original_message_with_the_reason_in_attributes():
    raw = RawEvent(b"\xff\x00not json", {"source": "app"}, "ack-1")
    letter = DeadLetter(raw, "validate", "bad", "permanent", "e-1", Reason.WRONG_TYPE)
    message = dead_letter_message(letter, "fraud", "projects/demo-project/topics/dl")
    assert message.data == raw.payload and message.ack_id == "ack-1"
    assert message.attributes == {
        "source": "app",
        "dead_letter_stage": "validate",
        "dead_letter_error_type": "permanent",
        "dead_letter_model": "fraud",
        "dead_letter_error": "bad",
        "dead_letter_event_id": "e-1",
        "dead_letter_reason": "wrong_type",
    }
    assert original_message(message.data, message.attributes) == (raw.payload, raw.attributes)


def test_pubsub_dead_letter_of_a_message_without_room_for_the_reason_wraps_it_whole():
    full = {f"k{i}": "v" for i in range(98)} | {"dead_letter_stage": "mine"}
    raw = RawEvent(b"{}", full)
    message = dead_letter_message(
        DeadLetter(raw, "validate", "too many", "permanent"), "fraud", "projects/demo-project/topics/dl"
    )
    assert message.attributes["dead_letter_format"] == "pubsub_message"
    assert message.attributes["dead_letter_stage"] == "validate" and len(message.attributes) <= 100
    assert original_message(message.data, message.attributes) == (raw.payload, full)


def _decoded(messages, label):
    return messages | f"Decode{label}" >> beam.Map(lambda m: json.loads(m.data))


def test_score_predicts_valid_events_and_dead_letters_the_rest_exactly_once(model_dir):
    events, _ = generate(FRAUD, 40, seed=21)
    raws = [RawEvent(json.dumps(e).encode(), {"n": str(i)}) for i, e in enumerate(events)]
    bad = [RawEvent(b"", {}), RawEvent(b"[]", {}), RawEvent(json.dumps({**events[0], "price": -1}).encode(), {})]
    expected = direct_outputs(model_dir, FRAUD, events)
    handler = SavedModelHandler(FRAUD, str(model_dir), max_batch_size=16)
    with TestPipeline() as p:
        scored = p | beam.Create(raws + bad) | Score(handler, decorate=lambda o: is_fraud(o, 0.5))
        assert_that(
            _decoded(scored.predictions, "Predictions")
            | "Round" >> beam.Map(lambda b: (b["event_id"], round(b["fraud_probability"], 5))),
            equal_to([(eid, round(out["fraud_probability"], 5)) for eid, out in expected.items()]),
            label="predictions",
        )
        assert_that(
            scored.dead_letters | "Stages" >> beam.Map(lambda d: (d.raw.payload, d.stage)),
            equal_to([(b"", "parse"), (b"[]", "parse"), (bad[2].payload, "validate")]),
            label="dead_letters",
        )


def test_one_poisoned_event_in_a_batch_is_dead_lettered_at_infer_and_its_batch_mates_are_predicted(model_dir):
    events, _ = generate(FRAUD, 30, seed=22)
    events[7]["title"] = "POISON"
    handler = PoisonedHandler(FRAUD, str(model_dir), min_batch_size=30, max_batch_size=30)
    with TestPipeline() as p:
        scored = p | beam.Create([RawEvent(json.dumps(e).encode(), {}) for e in events]) | Score(handler)
        assert_that(
            _decoded(scored.predictions, "Predictions") | "Ids" >> beam.Map(lambda b: b["event_id"]),
            equal_to([e["event_id"] for i, e in enumerate(events) if i != 7]),
            label="predictions",
        )
        assert_that(
            scored.dead_letters | "What" >> beam.Map(lambda d: (d.event_id, d.stage, d.error)),
            equal_to([(events[7]["event_id"], "infer", "RuntimeError: poisoned element in batch")]),
            label="dead_letters",
        )


def test_batches_sent_to_the_model_stay_within_the_configured_bounds_and_are_counted(model_dir):
    from apache_beam.metrics.metric import MetricsFilter

    events, _ = generate(FRAUD, 200, seed=23)
    handler = SavedModelHandler(FRAUD, str(model_dir), min_batch_size=4, max_batch_size=16)
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([RawEvent(json.dumps(e).encode(), {}) for e in events]) | Score(handler)
    result = pipeline.run()
    result.wait_until_finish()

    def metric(kind, name):
        found = result.metrics().query(MetricsFilter().with_namespace("marketplace_fraud").with_name(name))[kind]
        assert found, f"no {name} metric"
        return found[0].committed

    batch_sizes = metric("distributions", "inference_request_batch_size")
    assert batch_sizes.max <= 16 and batch_sizes.sum == 200
    assert batch_sizes.count >= 200 // 16
    assert metric("counters", "events_valid") == 200
    assert metric("counters", "num_inferences") == 200


def test_deduplicate_keeps_the_first_prediction_of_each_event_id_and_returns_the_repeats_to_acknowledge():
    scored = [
        (EventRef(event_id, RawEvent(body, {}, f"ack-{i}")), PredictionResult({}, {"p": 0.1}, "1"))
        for i, (event_id, body) in enumerate(
            [("a", b"1"), ("b", b"2"), ("a", b"1"), ("c", b"3"), ("a", b"1"), ("b", b"2")]
        )
    ]
    with TestPipeline() as pipeline:
        deduplicated = pipeline | beam.Create(scored) | DeduplicatePredictions(ttl_secs=600)
        assert_that(deduplicated.kept | beam.Map(lambda e: e[0].event_id), equal_to(["a", "b", "c"]), label="kept")
        assert_that(
            deduplicated[DUPLICATES] | beam.Map(lambda raw: raw.payload), equal_to([b"1", b"1", b"2"]), label="dropped"
        )


def test_a_miswired_pipeline_fails_when_it_is_built_not_when_it_runs(model_dir, tmp_path):
    from apache_beam.typehints.decorators import TypeCheckError

    from transforms.files import WriteDeadLetters, WriteMessageBodies

    pipeline = TestPipeline()
    scored = pipeline | beam.Create([RawEvent(b"{}", {})]) | Score(SavedModelHandler(FRAUD, str(model_dir)))
    with pytest.raises(TypeCheckError, match="DeadLetter"):
        _ = scored.predictions | "Swapped1" >> WriteDeadLetters(str(tmp_path / "dead"), "fraud")
    with pytest.raises(TypeCheckError, match="OutputMessage"):
        _ = scored.dead_letters | "Swapped2" >> WriteMessageBodies(str(tmp_path / "out"))
    with pytest.raises(TypeCheckError, match="RawEvent"):
        _ = scored.predictions | "Rescored" >> Score(SavedModelHandler(FRAUD, str(model_dir)))
