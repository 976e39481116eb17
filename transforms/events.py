"""ParseEvents: raw payload bytes -> (EventRef, features) by the model's schema; anything else -> a dead letter.

The first step of scoring. Streaming and backfill both feed it `RawEvent`s (the bytes and the Pub/Sub
attributes, empty for files); it never sees where they came from. A payload is a JSON object (`jsonl`, the
default) or a serialized `tf.train.Example` (`tfrecord` backfills); both are decoded into the same
{event_id, feature: value} shape and validated by the same checks, so a bound or a length is enforced once.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from model_handlers.interface import EVENT_ID, EVENT_ID_MAX_LENGTH, FEATURE_TYPES, INT, STRING, ModelInterface
from transforms.dead_letter import attribute_problem
from transforms.messages import DEAD_LETTERS, DeadLetter, ErrorType, EventRef, Format, RawEvent, Reason, Stage

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
# Pub/Sub allows 100 attributes a message, and a prediction adds 4 (event_id, model, model_version, scored_at).
MAX_INPUT_ATTRIBUTES = 96


class InvalidEvent(ValueError):
    """Why an event cannot be scored: the stage, a code for the cause and the text that says the details."""

    def __init__(self, stage: Stage, code: Reason, reason: str, event_id: str | None = None):
        super().__init__(reason)
        self.stage = stage
        self.code = code
        self.reason = reason
        self.event_id = event_id

    def dead_letter(self, raw: RawEvent, event_id: str | None = None) -> DeadLetter:
        """The event's dead letter: permanent, since the same bytes would fail the same way again."""
        return DeadLetter(raw, self.stage, self.reason, ErrorType.PERMANENT, self.event_id or event_id, self.code)


# A check's verdict on one value: (the value as the model takes it, None) or (None, (cause, text)).
Problem = tuple[Reason, str]


class _Mistyped(NamedTuple):
    """A tf.Example feature of the wrong list kind or length: no value the checks could accept; `what` says what
    arrived."""

    what: str


def _json_type(value: Any) -> str:
    if isinstance(value, _Mistyped):
        return value.what
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _not_text(value: str) -> str | None:
    """What keeps a decoded JSON string from being Unicode text, or None. JSON's escapes can spell lone surrogates
    (`"\\ud800"`), which Python decodes but nothing can encode again: not as UTF-8 for the model, nor in a Pub/Sub
    attribute."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"holds a lone surrogate {value[error.start]!r} at position {error.start}, which is not Unicode text"
    return None


def _string_check(feature) -> Callable[[Any], tuple[Any, Problem | None]]:
    name, max_length = feature.name, feature.max_length

    def check(value):
        if not isinstance(value, str):
            return None, (Reason.WRONG_TYPE, f"feature {name!r} must be a string, got {_json_type(value)}")
        if len(value) > max_length:
            return None, (
                Reason.TOO_LONG,
                f"feature {name!r} has {len(value)} characters, more than the maximum {max_length}",
            )
        problem = _not_text(value)
        if problem:
            return None, (Reason.NOT_TEXT, f"feature {name!r} {problem}")
        return value, None

    return check


def _number_check(feature) -> Callable[[Any], tuple[Any, Problem | None]]:
    name, minimum, maximum = feature.name, feature.minimum, feature.maximum
    integer = feature.dtype == INT
    expected = FEATURE_TYPES[feature.dtype].described

    def check(value):
        kind = type(value)
        if kind is float:
            if math.isnan(value):
                return None, (Reason.NOT_FINITE, f"feature {name!r} is NaN")
            if math.isinf(value):
                return None, (Reason.NOT_FINITE, f"feature {name!r} is infinite")
            # JSON Schema's "integer" admits 3.0 as well as 3; so do we.
            if integer and not value.is_integer():
                return None, (Reason.WRONG_TYPE, f"feature {name!r} must be an integer, got {value!r}")
        elif kind is not int:  # bool is an int subclass, and not a number here
            return None, (Reason.WRONG_TYPE, f"feature {name!r} must be {expected}, got {_json_type(value)}")
        # Bounds first, on the exact value: JSON integers are unbounded, and float(10**400) would raise.
        if value < minimum:
            return None, (Reason.OUT_OF_BOUNDS, f"feature {name!r} is {value!r}, below the minimum {minimum}")
        if value > maximum:
            return None, (Reason.OUT_OF_BOUNDS, f"feature {name!r} is {value!r}, above the maximum {maximum}")
        return (int(value) if integer else float(value)), None

    return check


@functools.cache
def _checks(interface: ModelInterface) -> tuple:
    """(feature, check) per feature, each check specialised once to its feature's type and bounds."""
    return tuple((f, _string_check(f) if f.dtype == STRING else _number_check(f)) for f in interface.features)


def _bounded_payload(raw: RawEvent, max_event_bytes: int) -> bytes:
    """The payload, unread, if it is neither empty nor over the size limit."""
    payload = raw.payload
    if not payload:
        raise InvalidEvent(Stage.PARSE, Reason.EMPTY_PAYLOAD, "empty payload")
    if len(payload) > max_event_bytes:
        raise InvalidEvent(
            Stage.PARSE,
            Reason.TOO_LARGE,
            f"payload of {len(payload)} bytes exceeds the limit of {max_event_bytes} bytes",
        )
    return payload


def parse_event(
    raw: RawEvent, interface: ModelInterface, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[str, dict[str, Any]]:
    """(event_id, features) for a valid event; raises InvalidEvent naming the stage and every problem found."""
    payload = _bounded_payload(raw, max_event_bytes)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidEvent(Stage.PARSE, Reason.NOT_UTF8, f"payload is not UTF-8: {error}") from None
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidEvent(Stage.PARSE, Reason.NOT_JSON, f"payload is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise InvalidEvent(Stage.PARSE, Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(event)}")
    return validate_event(event, raw, interface)


def _example_value(field, dtype: str) -> Any:
    """One tf.Example feature -> its one value (str, float or int), or _Mistyped; None when it holds no value,
    which tf.io.parse_example also reads as absent."""
    kind = field.WhichOneof("kind")
    article = "an" if kind and kind[0] in "aeiou" else "a"
    if kind != FEATURE_TYPES[dtype].example_kind:
        return _Mistyped(f"{article} {kind}" if kind else "a feature with no value list")
    values = getattr(field, kind).value
    if not values:
        return None
    if len(values) > 1:
        return _Mistyped(f"{article} {kind} of {len(values)} values")
    if dtype == STRING:
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            return _Mistyped("bytes that are not UTF-8")
    return values[0]


def parse_example_event(
    raw: RawEvent, interface: ModelInterface, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[str, dict[str, Any]]:
    """parse_event for a serialized tf.train.Example carrying an `event_id` bytes feature and the model's features,
    each a one-value list of its type's kind (interface.FEATURE_TYPES)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    payload = _bounded_payload(raw, max_event_bytes)
    try:
        example = example_pb2.Example.FromString(payload)
    except DecodeError as error:
        raise InvalidEvent(Stage.PARSE, Reason.NOT_AN_EXAMPLE, f"payload is not a tf.train.Example: {error}") from None
    fields = example.features.feature
    event = {}
    for name, dtype in [(EVENT_ID, STRING)] + [(f.name, f.dtype) for f in interface.features]:
        if name in fields:
            value = _example_value(fields[name], dtype)
            if value is not None:
                event[name] = value
    return validate_event(event, raw, interface)


PARSERS = {Format.JSONL: parse_event, Format.TFRECORD: parse_example_event}


def validate_event(event: dict, raw: RawEvent, interface: ModelInterface) -> tuple[str, dict[str, Any]]:
    """The checks every decoded event goes through, whatever its format: (event_id, features) or InvalidEvent."""
    problem = _event_id_problem(event)
    if problem:
        raise InvalidEvent(Stage.VALIDATE, Reason.BAD_EVENT_ID, problem)
    event_id = event[EVENT_ID]
    problem = attributes_problem(raw.attributes)
    if problem:
        raise InvalidEvent(Stage.VALIDATE, Reason.BAD_ATTRIBUTES, problem, event_id)

    features, problems = {}, []
    for feature, check in _checks(interface):
        if feature.name not in event:
            if feature.required:
                problems.append((Reason.MISSING_FEATURE, f"required feature {feature.name!r} is missing"))
            else:
                features[feature.name] = feature.default
            continue
        value, problem = check(event[feature.name])
        if problem:
            problems.append(problem)
        else:
            features[feature.name] = value
    if problems:
        # Every problem is told; the first names the cause.
        raise InvalidEvent(Stage.VALIDATE, problems[0][0], "; ".join(text for _code, text in problems), event_id)
    return event_id, features


def _event_id_problem(event: dict) -> str | None:
    if EVENT_ID not in event:
        return f"{EVENT_ID!r} is missing"
    event_id = event[EVENT_ID]
    if not isinstance(event_id, str):
        return f"{EVENT_ID!r} must be a string, got {_json_type(event_id)}"
    if not event_id:
        return f"{EVENT_ID!r} is empty"
    if len(event_id) > EVENT_ID_MAX_LENGTH:
        return f"{EVENT_ID!r} has {len(event_id)} characters, more than {EVENT_ID_MAX_LENGTH}"
    problem = _not_text(event_id)
    return f"{EVENT_ID!r} {problem}" if problem else None


def attributes_problem(attributes: dict[str, str]) -> str | None:
    """Why a message's attributes cannot be carried over to its prediction on Pub/Sub, or None. Pub/Sub enforces
    its rules on what it accepts, but its emulator does not: checked here rather than found out at the publish."""
    if len(attributes) > MAX_INPUT_ATTRIBUTES:
        return f"the message has {len(attributes)} attributes; at most {MAX_INPUT_ATTRIBUTES} can be carried over"
    for key, value in attributes.items():
        problem = attribute_problem(key, value)
        if problem:
            return problem
    return None


# Milliseconds since the epoch, as Beam's readers take them: ASCII digits only (int() would also take " 12",
# "1_000" and other scripts' digits).
_MILLIS_RE = re.compile(r"-?[0-9]{1,19}")
# RFC 3339's shape; Timestamp.from_rfc3339 alone accepts more (e.g. "  12").
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# The event times Beam can carry in the global window.
_EARLIEST, _LATEST = MIN_TIMESTAMP, GlobalWindow().max_timestamp()


def event_time(raw: RawEvent, attribute: str) -> Timestamp:
    """The event time a message carries in `attribute`: milliseconds since the epoch, or RFC 3339 (as Beam's own
    Pub/Sub reader reads it), truncated to microseconds as Beam's and Dataflow's readers do. Read here rather than by
    the reader, because there a missing or malformed value fails the whole bundle, and the DirectRunner has already
    acknowledged its messages: they would be lost."""
    value = raw.attributes.get(attribute)
    if value is None:
        raise InvalidEvent(Stage.PARSE, Reason.BAD_TIMESTAMP, f"timestamp attribute {attribute!r} is missing")
    shown = value if len(value) <= 64 else value[:64] + "..."
    timestamp = None
    if _MILLIS_RE.fullmatch(value):
        timestamp = Timestamp(micros=int(value) * 1000)
    elif _RFC3339_RE.fullmatch(value):
        try:
            timestamp = Timestamp.from_rfc3339(value)
        except ValueError:
            pass
    if timestamp is None:
        raise InvalidEvent(
            Stage.PARSE,
            Reason.BAD_TIMESTAMP,
            f"timestamp attribute {attribute!r} is {shown!r}: expected RFC 3339 or milliseconds since the epoch",
        )
    if not _EARLIEST <= timestamp <= _LATEST:
        raise InvalidEvent(
            Stage.PARSE,
            Reason.BAD_TIMESTAMP,
            f"timestamp attribute {attribute!r} is {shown!r}, outside the times Beam can carry "
            f"({_EARLIEST.micros // 1000} to {_LATEST.micros // 1000} ms since the epoch)",
        )
    if timestamp.precision() > Timestamp.MICROS_PRECISION:
        timestamp = timestamp.to_precision(Timestamp.MICROS_PRECISION, allow_lossy_conversion=True)
    return timestamp


class _ParseEventsFn(beam.DoFn):
    def __init__(self, interface: ModelInterface, max_event_bytes: int, input_format: str, timestamp_attribute):
        self._interface = interface
        self._max_event_bytes = max_event_bytes
        self._parse = PARSERS[input_format]
        self._timestamp_attribute = timestamp_attribute
        namespace = f"marketplace_{interface.name}"
        self._valid = Metrics.counter(namespace, "events_valid")
        self._invalid = Metrics.counter(namespace, "events_invalid")

    def process(self, raw):  # RawEvent
        event_id = None
        try:
            event_id, features = self._parse(raw, self._interface, self._max_event_bytes)
            timestamp = event_time(raw, self._timestamp_attribute) if self._timestamp_attribute else None
        except InvalidEvent as invalid:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, invalid.dead_letter(raw, event_id))
            return
        self._valid.inc()
        event = (EventRef(event_id, raw), features)
        yield event if timestamp is None else beam.window.TimestampedValue(event, timestamp)


@beam.typehints.with_input_types(RawEvent)
class ParseEvents(beam.PTransform):
    """PCollection[RawEvent] -> tagged outputs: `events` (EventRef, features) and `dead_letters` (DeadLetter).
    Payloads are JSON objects, or serialized tf.train.Examples with `input_format=TFRECORD`. With
    `timestamp_attribute`, each event takes its event time from that attribute (or is dead-lettered without one)."""

    def __init__(
        self,
        interface: ModelInterface,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        input_format: Format = Format.JSONL,
        timestamp_attribute: str | None = None,
    ):
        super().__init__()
        if input_format not in PARSERS:
            raise ValueError(f"input_format must be one of {sorted(PARSERS)}, got {input_format!r}")
        self._interface = interface
        self._max_event_bytes = max_event_bytes
        self._input_format = input_format
        self._timestamp_attribute = timestamp_attribute

    def expand(self, raw_events):
        fn = _ParseEventsFn(self._interface, self._max_event_bytes, self._input_format, self._timestamp_attribute)
        return raw_events | beam.ParDo(fn).with_outputs(DEAD_LETTERS, main="events")
