"""Synthetic event traffic for the demo, the tests and the benchmarks: valid events plus a share of malformed ones.

Valid events come from the seeded generator in `training.data`; each malformed one is one of the classes the
parser must dead-letter (see `MALFORMED_KINDS`), so every run exercises every path. Each message carries the
attributes `source` and `published_at` (ms since the epoch, set when it is published), which the pipeline carries
over to the prediction: that is how publish-to-prediction latency is measured without touching the pipeline.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import NamedTuple

from model_handlers.interface import FLOAT, INT, STRING, ModelInterface

# kind -> what it does to a valid event (the stage it must be dead-lettered at is in the name's comment)
MALFORMED_KINDS = (
    "empty_payload",  # parse
    "not_utf8",  # parse
    "not_json",  # parse
    "not_an_object",  # parse
    "oversized",  # parse
    "missing_event_id",  # validate
    "missing_feature",  # validate
    "wrong_type",  # validate
    "not_finite",  # validate
    "out_of_bounds",  # validate
    "string_too_long",  # validate
)


class Message(NamedTuple):
    payload: bytes
    attributes: dict[str, str]
    event_id: str | None  # None for payloads that have no readable id
    malformed: str | None  # one of MALFORMED_KINDS, or None for a valid event


def _first(interface: ModelInterface, dtype: str, bounded: bool = False):
    for feature in interface.features:
        if feature.dtype == dtype and feature.required and (not bounded or feature.maximum is not None):
            return feature
    raise LookupError(f"{interface.name} has no required {dtype} feature")


def _first_numeric(interface: ModelInterface):
    """The feature the type and finiteness faults go into: a float where the model has one (NaN is a float's
    fault), else an int."""
    for dtype in (FLOAT, INT):
        if any(f.dtype == dtype and f.required for f in interface.features):
            return _first(interface, dtype)
    raise LookupError(f"{interface.name} has no required numeric feature")


def malform(event: dict, kind: str, interface: ModelInterface, max_event_bytes: int = 64 * 1024) -> bytes:
    event = dict(event)
    if kind == "empty_payload":
        return b""
    if kind == "not_utf8":
        # A Latin-1 byte up front: invalid UTF-8, and no newline byte, so it survives a JSON Lines file too.
        return b"\xff" + json.dumps(event).encode()
    if kind == "not_json":
        return json.dumps(event).encode()[:-7]
    if kind == "not_an_object":
        return json.dumps([event]).encode()
    if kind == "oversized":
        event["padding"] = "x" * max_event_bytes
    elif kind == "missing_event_id":
        del event["event_id"]
    elif kind == "missing_feature":
        del event[next(f.name for f in interface.features if f.required)]
    elif kind == "wrong_type":
        event[_first_numeric(interface).name] = "a string"
    elif kind == "not_finite":
        event[_first_numeric(interface).name] = float("nan")
    elif kind == "out_of_bounds":
        feature = _first(interface, INT, bounded=True)
        event[feature.name] = int(feature.maximum) + 1
    elif kind == "string_too_long":
        feature = _first(interface, STRING)
        event[feature.name] = "y" * (feature.max_length + 1)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return json.dumps(event, allow_nan=True).encode()


def make_traffic(
    interface: ModelInterface, n: int, malformed_fraction: float = 0.03, seed: int = 0, max_event_bytes: int = 64 * 1024
) -> list[Message]:
    """`n` messages, about `malformed_fraction` of them malformed, cycling through every malformed kind."""
    from training.data import generate

    events, _ = generate(interface, n, seed)
    rng = random.Random(seed)
    n_bad = max(len(MALFORMED_KINDS), round(n * malformed_fraction)) if malformed_fraction > 0 else 0
    bad_positions = set(rng.sample(range(n), min(n, n_bad)))
    messages, kinds = [], iter(_cycle(MALFORMED_KINDS))
    for i, event in enumerate(events):
        attributes = {"source": "localdev.traffic", "seq": str(i)}
        if i in bad_positions:
            kind = next(kinds)
            payload = malform(event, kind, interface, max_event_bytes)
            has_id = kind not in (
                "empty_payload",
                "not_utf8",
                "not_json",
                "not_an_object",
                "oversized",
                "missing_event_id",
            )
            messages.append(Message(payload, attributes, event["event_id"] if has_id else None, kind))
        else:
            messages.append(Message(json.dumps(event).encode(), attributes, event["event_id"], None))
    return messages


def _cycle(items) -> Iterator:
    while True:
        yield from items
