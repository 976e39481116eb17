"""Parsing and validation: every class of bad input becomes exactly one dead letter with its stage and reason."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model_handlers.interface import FRAUD, PRICE
from transforms.events import InvalidEvent, ParseEvents, parse_event
from transforms.messages import RawEvent, Reason, Stage


def fraud_event(**overrides):
    event = {
        "event_id": "e-1",
        "price": 120.5,
        "seller_account_age_days": 400,
        "seller_num_sales": 12,
        "seller_rating": 4.7,
        "category": "electronics",
        "shipping_method": "standard",
        "payment_method": "card",
        "title": "iPhone 12, 128 GB",
        "description": "Barely used.",
        "num_images": 4,
        "buyer_seller_distance_km": 35.0,
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()


def raw(event, attributes=None) -> RawEvent:
    payload = event if isinstance(event, bytes) else json.dumps(event, allow_nan=True).encode()
    return RawEvent(payload, attributes or {})


def rejection(payload, interface=FRAUD, **kwargs) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw(payload), interface, **kwargs)
    return info.value


def test_valid_event_yields_its_id_and_typed_features_and_ignores_unknown_fields():
    event_id, features = parse_event(raw(fraud_event(seller_num_sales=12.0, unknown_field=[1, 2])), FRAUD)
    assert event_id == "e-1"
    assert set(features) == {f.name for f in FRAUD.features}
    assert features["seller_num_sales"] == 12 and isinstance(features["seller_num_sales"], int)
    assert isinstance(features["seller_account_age_days"], int)
    assert features["price"] == 120.5


def test_missing_optional_feature_takes_its_default():
    _, features = parse_event(raw(fraud_event(description=_DROP, num_images=_DROP)), FRAUD)
    assert features["description"] == "" and features["num_images"] == 0


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty payload"),
        (b"\xff\xfe not utf-8", "payload is not UTF-8"),
        (b"{not json", "payload is not JSON"),
        (b"[1, 2, 3]", "expected a JSON object, got an array"),
        (b'"just a string"', "expected a JSON object, got a string"),
        (b"null", "expected a JSON object, got null"),
    ],
)
def test_unparseable_payload_is_rejected_at_parse_stage(payload, reason):
    invalid = rejection(payload)
    assert invalid.stage == Stage.PARSE
    assert reason in invalid.reason


def test_payload_over_the_size_limit_is_rejected_unread():
    payload = json.dumps(fraud_event(description="x" * 4000)).encode()
    invalid = rejection(payload, max_event_bytes=1024)
    assert invalid.stage == Stage.PARSE
    assert f"payload of {len(payload)} bytes exceeds the limit of 1024 bytes" == invalid.reason


@pytest.mark.parametrize(
    "event_id, reason",
    [
        (_DROP, "'event_id' is missing"),
        ("", "'event_id' is empty"),
        (17, "'event_id' must be a string, got a number"),
        ("x" * 129, "'event_id' has 129 characters, more than 128"),
    ],
)
def test_bad_event_id_is_rejected_at_validate_stage(event_id, reason):
    invalid = rejection(fraud_event(event_id=event_id))
    assert (invalid.stage, invalid.reason) == (Stage.VALIDATE, reason)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"price": _DROP}, "required feature 'price' is missing"),
        ({"price": "12"}, "feature 'price' must be a number, got a string"),
        ({"price": True}, "feature 'price' must be a number, got a boolean"),
        ({"price": None}, "feature 'price' must be a number, got null"),
        ({"title": 42}, "feature 'title' must be a string, got a number"),
        ({"num_images": 2.5}, "feature 'num_images' must be an integer, got 2.5"),
        ({"price": float("nan")}, "feature 'price' is NaN"),
        ({"price": float("inf")}, "feature 'price' is infinite"),
        ({"seller_rating": -float("inf")}, "feature 'seller_rating' is infinite"),
        ({"price": -1}, "feature 'price' is -1, below the minimum 0"),
        ({"seller_rating": 5.5}, "feature 'seller_rating' is 5.5, above the maximum 5"),
        ({"title": "t" * 201}, "feature 'title' has 201 characters, more than the maximum 200"),
        ({"price": 10**400}, f"feature 'price' is {10**400!r}, above the maximum 1000000"),
        ({"num_images": -(10**30)}, f"feature 'num_images' is {-(10**30)!r}, below the minimum 0"),
    ],
)
def test_bad_feature_is_rejected_at_validate_stage_with_what_was_expected(overrides, reason):
    invalid = rejection(fraud_event(**overrides))
    assert invalid.stage == Stage.VALIDATE
    assert invalid.reason == reason
    assert invalid.event_id == "e-1"


def test_every_problem_of_an_event_is_named_at_once():
    invalid = rejection(fraud_event(price=_DROP, seller_rating=9.0))
    assert invalid.reason == (
        "required feature 'price' is missing; feature 'seller_rating' is 9.0, above the maximum 5"
    )


def test_too_many_attributes_to_carry_over_is_rejected():
    attributes = {f"a{i}": "v" for i in range(97)}
    with pytest.raises(InvalidEvent, match="97 attributes; at most 96"):
        parse_event(raw(fraud_event(), attributes), FRAUD)


def test_price_event_with_condition_out_of_range_is_rejected():
    event = {
        "event_id": "p",
        "name": "Shirt",
        "category_name": "Men/Tops/T-shirts",
        "item_condition_id": 6,
        "shipping": 0,
    }
    invalid = rejection(event, PRICE)
    assert invalid.reason == "feature 'item_condition_id' is 6, above the maximum 5"


def test_parse_events_transform_splits_events_and_dead_letters_one_each():
    good = raw(fraud_event(event_id="good"), {"source": "test"})
    bad_json = raw(b"{oops", {"source": "test"})
    bad_value = raw(fraud_event(event_id="bad", price=-5))
    with TestPipeline() as p:
        parsed = p | beam.Create([good, bad_json, bad_value]) | ParseEvents(FRAUD)
        assert_that(
            parsed.events | "Ids" >> beam.Map(lambda kv: (kv[0].event_id, kv[0].raw.attributes)),
            equal_to([("good", {"source": "test"})]),
            label="events",
        )
        assert_that(
            parsed.dead_letters | "Reasons" >> beam.Map(lambda d: (d.raw.payload, d.stage, d.event_id, d.error_type)),
            equal_to(
                [(b"{oops", Stage.PARSE, None, "permanent"), (bad_value.payload, Stage.VALIDATE, "bad", "permanent")]
            ),
            label="dead_letters",
        )


def test_event_time_is_read_from_milliseconds_or_rfc3339():
    from apache_beam.utils.timestamp import Timestamp

    from transforms.events import event_time

    assert event_time(RawEvent(b"", {"ts": "1795341600123"}), "ts") == Timestamp(micros=1795341600123000)
    assert event_time(RawEvent(b"", {"ts": "2026-11-22T10:00:00Z"}), "ts") == Timestamp(1795341600)


@pytest.mark.parametrize(
    "attributes, reason",
    [
        ({}, "timestamp attribute 'ts' is missing"),
        (
            {"ts": "yesterday"},
            "timestamp attribute 'ts' is 'yesterday': expected RFC 3339 or milliseconds since the epoch",
        ),
    ],
)
def test_missing_or_unreadable_event_time_is_a_parse_dead_letter_not_a_failed_bundle(attributes, reason):
    good = raw(fraud_event(event_id="good"), {"ts": "1795341600000"})
    bad = raw(fraud_event(event_id="bad"), attributes)
    with TestPipeline() as p:
        parsed = p | beam.Create([good, bad]) | ParseEvents(FRAUD, timestamp_attribute="ts")
        assert_that(
            parsed.events
            | "Times" >> beam.Map(lambda kv, ts=beam.DoFn.TimestampParam: (kv[0].event_id, ts.micros // 1000)),
            equal_to([("good", 1795341600000)]),
            label="events",
        )
        assert_that(
            parsed.dead_letters | "Reasons" >> beam.Map(lambda d: (d.event_id, d.stage, d.error)),
            equal_to([("bad", Stage.PARSE, reason)]),
            label="dead_letters",
        )


@pytest.mark.parametrize(
    "payload, stage, code",
    [
        (b"", Stage.PARSE, Reason.EMPTY_PAYLOAD),
        (b"x" * 70_000, Stage.PARSE, Reason.TOO_LARGE),
        (b"\xff\xfe", Stage.PARSE, Reason.NOT_UTF8),
        (b"{oops", Stage.PARSE, Reason.NOT_JSON),
        (b"[1, 2]", Stage.PARSE, Reason.NOT_AN_OBJECT),
        (fraud_event(event_id=7), Stage.VALIDATE, Reason.BAD_EVENT_ID),
        (fraud_event(price=_DROP), Stage.VALIDATE, Reason.MISSING_FEATURE),
        (fraud_event(price="cheap"), Stage.VALIDATE, Reason.WRONG_TYPE),
        (fraud_event(price=float("nan")), Stage.VALIDATE, Reason.NOT_FINITE),
        (fraud_event(price=-1), Stage.VALIDATE, Reason.OUT_OF_BOUNDS),
        (fraud_event(title="t" * 10_000), Stage.VALIDATE, Reason.TOO_LONG),
        (fraud_event(title="\ud800"), Stage.VALIDATE, Reason.NOT_TEXT),
        # Every problem is told in the text; the first names the cause.
        (fraud_event(price=-1, title="t" * 10_000), Stage.VALIDATE, Reason.OUT_OF_BOUNDS),
    ],
)
def test_every_kind_of_bad_event_is_dead_lettered_with_its_reason_code(payload, stage, code):
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw(payload), FRAUD)
    letter = info.value.dead_letter(raw(payload))
    assert (letter.stage, letter.reason, letter.error_type) == (stage, code, "permanent")
    assert letter.error == info.value.reason


def test_attributes_past_pubsub_limits_are_dead_lettered_as_bad_attributes():
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw(fraud_event(), {"goog-reserved": "x"}), FRAUD)
    assert (info.value.stage, info.value.code) == (Stage.VALIDATE, Reason.BAD_ATTRIBUTES)
