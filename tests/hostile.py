"""Hostile input: Hypothesis strategies over everything Pub/Sub can deliver (bytes up to 10 MB, any attributes, any
JSON shape), and the corpus of classes found so far, which the end-to-end poison tests mix into valid traffic.

A message Pub/Sub delivers has non-empty data or at least one attribute, up to 100 attributes (keys up to 256
bytes, values up to 1024, both UTF-8), and a publish request of at most 10,000,000 bytes. The emulator enforces
less (no attribute limits), so the strategies go past Pub/Sub's attribute limits too.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from localdev.traffic import Message
from model_handlers.interface import INT, STRING, ModelInterface
from training.data import generate

# Any code point, lone surrogates included: JSON's \uD800 escapes decode to them.
ANY_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=40)
# What a JSON decoder can hand back, nested.
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)

# Pub/Sub attributes: protobuf strings, so valid Unicode; sizes past Pub/Sub's own limits, which the emulator allows.
ATTRIBUTE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.text(
    alphabet=st.characters(codec="utf-8"), min_size=200, max_size=1100
)
ATTRIBUTES = st.one_of(
    st.dictionaries(ATTRIBUTE_TEXT, ATTRIBUTE_TEXT, max_size=6),
    st.integers(90, 110).map(lambda n: {f"k{i}": "v" for i in range(n)}),
)


def _number(feature) -> st.SearchStrategy:
    inside = (
        st.integers(int(feature.minimum), int(feature.maximum))
        if feature.dtype == INT
        else st.floats(feature.minimum, feature.maximum)
    )
    return st.one_of(inside, st.integers(), st.floats(allow_nan=True, allow_infinity=True))


def _string(feature) -> st.SearchStrategy:
    return st.one_of(
        st.text(max_size=feature.max_length),
        ANY_TEXT,
        st.text(min_size=feature.max_length - 2, max_size=feature.max_length + 2),
    )


@st.composite
def json_events(draw, interface: ModelInterface) -> dict:
    """An event object: each field valid, absent, or any JSON value; plus unknown fields."""
    event: dict = {}
    event_id = draw(st.one_of(st.text(min_size=1, max_size=128), ANY_TEXT, JSON_VALUES, st.just(None)))
    if event_id is not None or draw(st.booleans()):
        event["event_id"] = event_id
    for feature in interface.features:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue
        if choice == 1:
            event[feature.name] = draw(JSON_VALUES)
        else:
            event[feature.name] = draw(_string(feature) if feature.dtype == STRING else _number(feature))
    event.update(draw(st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=2)))
    return event


def encode(event, ascii_only: bool) -> bytes:
    """JSON bytes as a producer might send them: escaped to ASCII, or raw UTF-8 (lone surrogates as the invalid
    bytes a lenient encoder writes); NaN and infinities as Python's json writes them."""
    text = json.dumps(event, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def payloads(draw, interface: ModelInterface) -> bytes:
    return draw(
        st.one_of(
            st.builds(encode, json_events(interface), st.booleans()),
            st.builds(encode, JSON_VALUES, st.booleans()),
            st.binary(max_size=200),
            st.binary(max_size=20).map(lambda b: b"{" + b),
        )
    )


@st.composite
def messages(draw, interface: ModelInterface) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of a message Pub/Sub could deliver (data or attributes non-empty)."""
    data, attributes = draw(payloads(interface)), draw(ATTRIBUTES)
    if not data and not attributes:
        attributes = {"only": "attributes"}
    return data, attributes


def finite_or_not() -> st.SearchStrategy:
    """Any float32 a model can answer: NaN, infinities, subnormals, the extremes."""
    return st.floats(width=32, allow_nan=True, allow_infinity=True)


def strict_json(data: bytes):
    """json.loads that refuses NaN and the infinities, which are not JSON (RFC 8259), as strict readers do."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


# --- the corpus: classes found (by Hypothesis and by hand), for the end-to-end poison tests ------------------------
HOSTILE_KINDS = (
    "surrogate_event_id",  # validate: "\ud800" decodes, and encodes to nothing
    "surrogate_feature",  # validate
    "surrogate_raw_bytes",  # parse: the same written unescaped, which is not UTF-8
    "huge_integer",  # parse: 5000 digits, past what Python reads as an int (4300)
    "deep_nesting",  # parse: past the JSON decoder's recursion limit
    "attribute_too_long",  # validate: a 1100-byte attribute value, which Pub/Sub refuses and its emulator does not
    "too_many_attributes",  # validate: 100 attributes, no room for the prediction's own
    "large_payload",  # parse: 5 MB, over the size limit and over gRPC's default 4 MiB receive limit
)


def hostile_message(event: dict, kind: str, attributes: dict[str, str]) -> Message:
    """A message of `kind` built from a valid event. `event_id` is the id a dead letter can name, or None."""
    event = dict(event)
    event_id = event["event_id"]
    string_feature = next(k for k, v in event.items() if isinstance(v, str) and k != "event_id")
    number_feature = next(k for k, v in event.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if kind == "surrogate_event_id":
        event["event_id"], event_id = event_id + "\ud800", None
    elif kind == "surrogate_feature":
        event[string_feature] = "x\udfffy"
    elif kind == "surrogate_raw_bytes":
        return Message(encode({**event, string_feature: "\ud800"}, ascii_only=False), attributes, None, kind)
    elif kind == "huge_integer":
        field = json.dumps({number_feature: event[number_feature]})[1:-1]  # '"name": value'
        huge = json.dumps(event).replace(field, f'"{number_feature}": {"9" * 5000}', 1)
        return Message(huge.encode(), attributes, None, kind)
    elif kind == "deep_nesting":
        return Message(b"[" * 100_000 + b"]" * 100_000, attributes, None, kind)
    elif kind == "attribute_too_long":
        attributes = {**attributes, "note": "n" * 1100}
    elif kind == "too_many_attributes":
        attributes = {**attributes, **{f"extra{i}": "v" for i in range(100 - len(attributes))}}
    elif kind == "large_payload":
        event["padding"], event_id = "p" * 5_000_000, None
    else:
        raise ValueError(f"unknown hostile kind {kind!r}; expected one of {HOSTILE_KINDS}")
    return Message(json.dumps(event).encode(), attributes, event_id, kind)


# The stage each hostile kind is dead-lettered at.
HOSTILE_STAGES = {
    "surrogate_event_id": "validate",
    "surrogate_feature": "validate",
    "surrogate_raw_bytes": "parse",
    "huge_integer": "parse",
    "deep_nesting": "parse",
    "attribute_too_long": "validate",
    "too_many_attributes": "validate",
    "large_payload": "parse",
}


def hostile_traffic(interface: ModelInterface, n: int, seed: int, every: int = 8) -> list[Message]:
    """Valid traffic with every `every`-th message hostile, cycling through the kinds (the 5 MB one only once)."""
    events, _ = generate(interface, n, seed)
    kinds = [kind for kind in HOSTILE_KINDS if kind != "large_payload"]
    traffic = []
    for i, event in enumerate(events):
        attributes = {"source": "tests.hostile", "seq": str(i)}
        if i % every == every - 1:
            kind = "large_payload" if i == every - 1 else kinds[(i // every) % len(kinds)]
            traffic.append(hostile_message(event, kind, attributes))
        else:
            traffic.append(Message(json.dumps(event).encode(), attributes, event["event_id"], None))
    return traffic
