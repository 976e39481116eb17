"""Property-based tests (Hypothesis) over everything a message or a backfill line can be, and every answer a model
can give: each ends as exactly one prediction or one dead letter, and what leaves is what the sinks can write.

"What the sinks can write" is checked with the sinks' own serialization: the google.pubsub_v1 PublishRequest the
official client sends (and its 10,000,000-byte limit), Pub/Sub's attribute limits, strict JSON (no NaN), and for
files the bytes Beam's text sink writes.
"""

from __future__ import annotations

import base64
import json
import math

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hostile import ATTRIBUTES, HOSTILE_KINDS, finite_or_not, hostile_message, messages, strict_json
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from model_handlers.base import InferenceFailure, IsolatingModelHandler, Scored
from model_handlers.interface import FRAUD, PRICE
from pipelines.fraud_detection import is_fraud
from transforms.dead_letter import (
    DEAD_LETTER_HEADROOM_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_PUBLISH_REQUEST_BYTES,
    dead_letter_json,
    dead_letter_message,
    original_message,
)
from transforms.events import InvalidEvent, event_time, parse_event
from transforms.messages import DeadLetter, ErrorType, EventRef, RawEvent
from transforms.predictions import format_prediction

INTERFACES = {"fraud": FRAUD, "price": PRICE}
TOPIC = "projects/some-project/topics/fraud-dead-letters-with-a-long-name"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def publish_request_bytes(data: bytes, attributes: dict[str, str], topic: str = TOPIC) -> int:
    """The size of the request the official client sends (and refuses over 10,000,000 bytes), serialized for real;
    it also fails on anything protobuf cannot carry (a string that is not Unicode text)."""
    from google.pubsub_v1.types import PublishRequest, PubsubMessage

    request = PublishRequest(topic=topic, messages=[PubsubMessage(data=data, attributes=attributes)])
    return len(PublishRequest.serialize(request))


def assert_publishable(data: bytes, attributes: dict[str, str], topic: str = TOPIC) -> None:
    assert data or attributes, "Pub/Sub refuses a message with neither data nor attributes"
    assert len(attributes) <= MAX_ATTRIBUTES
    for key, value in attributes.items():
        assert key and not key.startswith("goog") and len(key.encode()) <= 256, key
        assert len(value.encode()) <= MAX_ATTRIBUTE_VALUE_BYTES, (key, len(value.encode()))
    assert publish_request_bytes(data, attributes, topic) <= MAX_PUBLISH_REQUEST_BYTES


def prediction_for(raw: RawEvent, interface, event_id: str, features: dict, value: float):
    ref = EventRef(event_id, raw)
    result = PredictionResult(features, {interface.outputs[0].name: value}, "1")
    decorate = (lambda o: is_fraud(o, 0.5)) if interface is FRAUD else None
    return format_prediction(ref, result, interface, decorate, "2026-12-01T00:00:00.000Z")


def check_outcome(raw: RawEvent, interface) -> str:
    """What one message becomes, checked to be writable by every sink; returns 'prediction' or the stage."""
    try:
        event_id, features = parse_event(raw, interface)
    except InvalidEvent as invalid:
        letter = invalid.dead_letter(raw)
        message = dead_letter_message(letter, interface.name, TOPIC)
        assert_publishable(message.data, message.attributes)
        assert original_message(message.data, message.attributes) == (raw.payload, raw.attributes)
        line = dead_letter_json(letter, interface.name)
        assert b"\n" not in line and line.isascii()
        body = strict_json(line)
        assert base64.b64decode(body["payload"]) == raw.payload and body["attributes"] == raw.attributes
        return invalid.stage
    # Validation said yes: nothing after it may fail on this event.
    interface.to_columns([features])
    interface.to_example(features, event_id)
    message = prediction_for(raw, interface, event_id, features, 0.25)
    assert_publishable(message.data, message.attributes)
    assert strict_json(message.data)["event_id"] == event_id
    return "prediction"


@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_any_message_is_scored_or_dead_lettered_and_either_can_be_published(model):
    interface = INTERFACES[model]

    @SETTINGS
    @given(messages(interface))
    def check(message):
        data, attributes = message
        check_outcome(RawEvent(data, attributes), interface)

    check()


@SETTINGS
@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b))
def test_any_backfill_line_is_scored_or_dead_lettered_and_written_as_one_line(line):
    check_outcome(RawEvent(line, {}), FRAUD)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(9_990_000, 10_000_000), attributes=ATTRIBUTES, kind=st.sampled_from(["empty", "json"]))
def test_a_dead_letter_of_a_message_near_pubsubs_size_limit_still_fits_with_its_original_whole(size, attributes, kind):
    """A message Pub/Sub accepted with 1 KB to spare under its 10,000,000-byte request limit (plus the difference
    in the topics' name lengths) fits again as a dead letter, with the original bytes and attributes whole; only
    the error text may be shortened. (Closer to the limit no form can carry the original and the reason: such a
    message is left to the subscription's own dead-letter policy.)"""
    assume(len(attributes) <= MAX_ATTRIBUTES)
    attributes = {k: v for k, v in attributes.items() if k and len(k.encode()) <= 256 and len(v.encode()) <= 1024}
    head = b"" if kind == "empty" else b'{"event_id": "e-1", "padding": "'
    original_topic, dead_letter_topic = (
        "projects/demo-project/topics/abc",
        "projects/demo-project/topics/fraud-dead-letters",
    )
    limit = MAX_PUBLISH_REQUEST_BYTES - DEAD_LETTER_HEADROOM_BYTES - (len(dead_letter_topic) - len(original_topic))
    # The largest payload of about `size` bytes that leaves that much room.
    excess = publish_request_bytes(head + b"x" * size, attributes, original_topic) - limit
    payload = head + b"x" * (size - max(0, excess))
    raw = RawEvent(payload, attributes)
    letter = DeadLetter(
        raw, "parse", f"payload of {len(payload)} bytes exceeds the limit of 65536 bytes", ErrorType.PERMANENT
    )
    message = dead_letter_message(letter, "fraud", dead_letter_topic)
    assert_publishable(message.data, message.attributes, dead_letter_topic)
    assert original_message(message.data, message.attributes) == (payload, attributes)
    assert message.attributes["dead_letter_stage"] == "parse"


@SETTINGS
@given(value=st.one_of(st.text(max_size=40), st.integers().map(str), st.datetimes().map(lambda d: d.isoformat() + "Z")))
def test_any_time_attribute_gives_an_event_time_beam_can_carry_or_a_parse_dead_letter(value):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

    try:
        timestamp = event_time(RawEvent(b"{}", {"ts": value}), "ts")
    except InvalidEvent as invalid:
        assert invalid.stage == "parse"
        return
    assert MIN_TIMESTAMP <= timestamp <= GlobalWindow().max_timestamp()
    assert timestamp.precision() <= Timestamp.MICROS_PRECISION


class AnswersHandler(IsolatingModelHandler):
    """A handler whose 'model' answers given values: the only way to make a model answer every float there is."""

    def __init__(self, interface, answers):
        super().__init__(interface)
        self._answers = answers

    def load_model(self):
        return None

    def predict(self, batch, model):
        return Scored([{self.interface.outputs[0].name: value} for value in self._answers[: len(batch)]], "7")


@pytest.mark.parametrize("model", sorted(INTERFACES))
def test_any_model_answer_becomes_a_prediction_in_strict_json_or_a_permanent_infer_dead_letter(model):
    interface = INTERFACES[model]

    @SETTINGS
    @given(st.lists(finite_or_not(), min_size=1, max_size=8))
    def check(answers):
        handler = AnswersHandler(interface, answers)
        results = list(handler.run_inference([{} for _ in answers], None))
        assert len(results) == len(answers)
        for value, result in zip(answers, results):
            if math.isfinite(value):
                message = prediction_for(
                    RawEvent(b"{}", {}), interface, "e", {}, result.inference[interface.outputs[0].name]
                )
                assert strict_json(message.data)[interface.outputs[0].name] == value
            else:
                assert (
                    isinstance(result.inference, InferenceFailure)
                    and result.inference.error_type == ErrorType.PERMANENT
                )
                assert str(value) in result.inference.error

    check()


def test_a_real_model_that_answers_nan_or_infinity_dead_letters_those_events_and_predicts_the_rest(tmp_path):
    """A real SavedModel with the fraud signature whose answer is sqrt(price - 5) / (price - 10): NaN below a
    price of 5, infinite at 10; through the real handler and the Score transform on the DirectRunner."""
    import tensorflow as tf

    from model_handlers.interface import FEATURE_TYPES
    from model_handlers.saved_model import SavedModelHandler
    from training.data import generate
    from transforms.scoring import Score

    specs = {
        f.name: tf.TensorSpec([None], tf.as_dtype(FEATURE_TYPES[f.dtype].tf_name), name=f.name) for f in FRAUD.features
    }

    class Broken(tf.Module):
        @tf.function(input_signature=[specs])
        def serve(self, features):
            price = features["price"]
            return {"fraud_probability": tf.sqrt(price - 5.0) / (price - 10.0)}

    module = Broken()
    tf.saved_model.save(
        module, str(tmp_path / "fraud" / "1"), signatures={"serving_default": module.serve.get_concrete_function()}
    )

    events, _ = generate(FRAUD, 12, seed=5)
    prices = [1.0, 10.0, 3.0] + [20.0 + i for i in range(9)]
    for event, price in zip(events, prices):
        event["price"] = price
    handler = SavedModelHandler(FRAUD, str(tmp_path), max_batch_size=4, warmup=False)
    with TestPipeline() as pipeline:
        scored = pipeline | beam.Create([RawEvent(json.dumps(e).encode(), {}) for e in events]) | Score(handler)
        assert_that(
            scored.predictions | "Bodies" >> beam.Map(lambda m: strict_json(m.data)["event_id"]),
            equal_to([e["event_id"] for e in events[3:]]),
            label="predictions",
        )
        assert_that(
            scored.dead_letters
            | "Why" >> beam.Map(lambda d: (d.event_id, d.stage, d.error_type, "returned" in d.error)),
            equal_to([(e["event_id"], "infer", "permanent", True) for e in events[:3]]),
            label="dead_letters",
        )


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_each_class_of_the_hostile_corpus_is_dead_lettered_and_publishable(kind):
    from training.data import generate

    events, _ = generate(FRAUD, 1, seed=3)
    message = hostile_message(events[0], kind, {"source": "tests"})
    raw = RawEvent(message.payload, message.attributes)
    assert check_outcome(raw, FRAUD) in ("parse", "validate")
