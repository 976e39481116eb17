"""Dead letters: where an event goes when it cannot be scored, with the original message whole and the reason.

Two forms (README, "Dead letters"):

- **On Pub/Sub** the dead letter is the original message itself, as Pub/Sub's own dead-letter topics forward it:
  the original bytes as the body, unchanged, and the original attributes, plus attributes that say why
  (`dead_letter_stage`, `dead_letter_reason`, `dead_letter_error_type`, `dead_letter_error`, `dead_letter_model`,
  and `dead_letter_event_id` when known). So a dead letter is never larger than its message by more than those few
  attributes, and it fits Pub/Sub's limits whatever arrived. Where the original attributes leave no room for these
  (Pub/Sub allows 100) or already use their names, the body is instead the original message as a serialized
  `google.pubsub.v1.PubsubMessage` (data and attributes), marked `dead_letter_format=pubsub_message`.
- **In backfill files** (JSON Lines) a dead letter is a JSON object: `payload` (the original bytes, base64),
  `attributes`, `stage` (parse | validate | infer | publish), `reason` (a code: transforms.messages.Reason),
  `error`, `error_type` (permanent | retryable), and `event_id` and `model` when known.

`original_message` reads either Pub/Sub form back, for the replay command.
"""

from __future__ import annotations

import base64

from transforms.messages import COMPACT_JSON, DeadLetter, OutputMessage

# The dead-letter attributes on Pub/Sub.
ATTRIBUTE_PREFIX = "dead_letter_"
STAGE_ATTRIBUTE = "dead_letter_stage"
ERROR_TYPE_ATTRIBUTE = "dead_letter_error_type"
ERROR_ATTRIBUTE = "dead_letter_error"
REASON_ATTRIBUTE = "dead_letter_reason"
MODEL_ATTRIBUTE = "dead_letter_model"
EVENT_ID_ATTRIBUTE = "dead_letter_event_id"
FORMAT_ATTRIBUTE = "dead_letter_format"
ENVELOPE_FORMAT = "pubsub_message"

# Pub/Sub's limits: attributes a message, bytes an attribute value, bytes a publish request (the official client
# refuses a larger one before sending it).
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
RESERVED_ATTRIBUTE_PREFIX = "goog"
MAX_PUBLISH_REQUEST_BYTES = 10_000_000
# A message whose publish request left this much room under the limit (plus any difference in length between its
# topic's name and the dead-letter topic's) always fits as a dead letter with its original whole: the reason
# attributes without the error text, and the envelope's own field tags, take less.
DEAD_LETTER_HEADROOM_BYTES = 1024
# Below the limit by more than this, a request's size is estimated instead of measured: the estimate errs by a
# few bytes of field tags and lengths per attribute at most, covered by 16 bytes an attribute and this.
_REQUEST_OVERHEAD_BYTES = 4096


def _record(payload: bytes, attributes: dict, stage, error, error_type, event_id, model, reason) -> dict:
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "attributes": dict(attributes),
        "stage": stage,
        "reason": reason,
        "error": error,
        "error_type": error_type,
        "event_id": event_id,
        "model": model,
    }


def dead_letter_json(dead_letter: DeadLetter, model: str) -> bytes:
    """The backfill form: one JSON object (README, "Dead letters"), ASCII whatever the input."""
    raw = dead_letter.raw
    body = _record(
        raw.payload,
        raw.attributes,
        dead_letter.stage,
        dead_letter.error,
        dead_letter.error_type,
        dead_letter.event_id,
        model,
        dead_letter.reason,
    )
    return COMPACT_JSON.encode(body).encode("ascii")


def _attribute_text(text: str, limit: int = MAX_ATTRIBUTE_VALUE_BYTES) -> str:
    """`text` as a valid attribute value: UTF-8 (a lone surrogate from the input is escaped), at most `limit`
    bytes, cut on a character boundary."""
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) > limit:
        encoded = encoded[: max(0, limit - 3)] + b"..." if limit >= 3 else encoded[:limit]
    return encoded.decode("utf-8", "ignore")


def _reason_attributes(dead_letter: DeadLetter, model: str, error_bytes: int) -> dict[str, str]:
    attributes = {
        STAGE_ATTRIBUTE: dead_letter.stage,
        ERROR_TYPE_ATTRIBUTE: dead_letter.error_type,
        MODEL_ATTRIBUTE: model,
        ERROR_ATTRIBUTE: _attribute_text(dead_letter.error, error_bytes),
    }
    if dead_letter.reason:
        attributes[REASON_ATTRIBUTE] = dead_letter.reason
    if dead_letter.event_id:
        attributes[EVENT_ID_ATTRIBUTE] = _attribute_text(dead_letter.event_id)
    return attributes


def attribute_problem(key: str, value: str) -> str | None:
    """Why one attribute breaks Pub/Sub's rules (which its emulator does not enforce), or None."""
    if not key or key.startswith(RESERVED_ATTRIBUTE_PREFIX):
        return (
            f"attribute key {key[:64]!r} is empty or starts with {RESERVED_ATTRIBUTE_PREFIX!r}, which Pub/Sub reserves"
        )
    for what, text, limit in (("key", key, MAX_ATTRIBUTE_KEY_BYTES), ("value", value, MAX_ATTRIBUTE_VALUE_BYTES)):
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return f"attribute {key[:64]!r} has a {what} that is not Unicode text"
        if len(encoded) > limit:
            return f"attribute {key[:64]!r} has a {what} of {len(encoded)} bytes; Pub/Sub allows {limit}"
    return None


def _plain_attribute(item: tuple[str, str]) -> bool:
    """Whether an original attribute can travel as an attribute of its dead letter: within Pub/Sub's rules and not
    named like the dead letter's own."""
    key, value = item
    return attribute_problem(key, value) is None and not key.startswith(ATTRIBUTE_PREFIX)


def _envelope(raw) -> bytes:
    from google.pubsub_v1.types import PubsubMessage

    return PubsubMessage.serialize(PubsubMessage(data=raw.payload, attributes=dict(raw.attributes)))


def _request_bytes(data: bytes, attributes: dict[str, str], topic: str) -> int:
    """The size of the publish request the official client would send for this one message (it refuses one over
    MAX_PUBLISH_REQUEST_BYTES). Measured on the proto only near the limit: building it copies the data."""
    estimate = len(topic) + len(data) + sum(len(k.encode()) + len(v.encode()) + 16 for k, v in attributes.items())
    if estimate + _REQUEST_OVERHEAD_BYTES < MAX_PUBLISH_REQUEST_BYTES:
        return estimate
    from google.pubsub_v1.types import PublishRequest, PubsubMessage

    request = PublishRequest(topic=topic, messages=[PubsubMessage(data=data, attributes=attributes)])
    return PublishRequest.pb(request).ByteSize()


def dead_letter_message(dead_letter: DeadLetter, model: str, topic: str) -> OutputMessage:
    """The Pub/Sub form, sized for a publish request to `topic`: the original body and attributes with the reason
    beside them, or the original as a serialized PubsubMessage when its attributes leave no room. The error text
    is shortened, and dropped as a last resort, so that the request fits Pub/Sub's 10 MB. That always suffices for a
    message that left DEAD_LETTER_HEADROOM_BYTES of room; one closer to the limit may not fit: it is published as
    it is, fails, and is left unacknowledged, to the subscription's own dead-letter policy."""
    raw = dead_letter.raw
    reasons = _reason_attributes(dead_letter, model, MAX_ATTRIBUTE_VALUE_BYTES)
    original = dict(raw.attributes)
    fits = len(original) + len(reasons) <= MAX_ATTRIBUTES and all(map(_plain_attribute, original.items()))
    if fits:
        data, base = raw.payload, original
    else:
        data, base = _envelope(raw), {FORMAT_ATTRIBUTE: ENVELOPE_FORMAT}
    attributes = {**base, **reasons}
    excess = _request_bytes(data, attributes, topic) - MAX_PUBLISH_REQUEST_BYTES
    if excess > 0:
        error_bytes = max(0, len(attributes[ERROR_ATTRIBUTE].encode()) - excess)
        attributes[ERROR_ATTRIBUTE] = _attribute_text(dead_letter.error, error_bytes)
    return OutputMessage(data, attributes, raw)


def dead_letter_record(data: bytes, attributes: dict[str, str]) -> dict:
    """A Pub/Sub dead letter, read back as the backfill form's JSON object."""
    payload, original = original_message(data, attributes)
    return _record(
        payload,
        original,
        attributes.get(STAGE_ATTRIBUTE),
        attributes.get(ERROR_ATTRIBUTE),
        attributes.get(ERROR_TYPE_ATTRIBUTE),
        attributes.get(EVENT_ID_ATTRIBUTE),
        attributes.get(MODEL_ATTRIBUTE),
        attributes.get(REASON_ATTRIBUTE),
    )


def original_message(data: bytes, attributes: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A Pub/Sub dead letter -> the original message's (body, attributes), as it was first published."""
    if attributes.get(FORMAT_ATTRIBUTE) == ENVELOPE_FORMAT:
        from google.pubsub_v1.types import PubsubMessage

        original = PubsubMessage.deserialize(data)
        return bytes(original.data), dict(original.attributes)
    return data, {k: v for k, v in attributes.items() if not k.startswith(ATTRIBUTE_PREFIX)}
