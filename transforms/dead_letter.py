"""Dead letters: where an event goes when it cannot be scored, with the original bytes and the reason.

Contract (README, "Dead letters"): a JSON object with `payload` (the original bytes, base64), `attributes`,
`stage` (parse | validate | infer | publish), `error`, `error_type` (permanent | retryable), and `event_id` and
`model` when known.
"""


import base64
import json
from typing import Any, NamedTuple

DEAD_LETTERS = "dead_letters"

# One encoder for every message: json.dumps with non-default separators builds a new encoder on each call.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))

PARSE = "parse"
VALIDATE = "validate"
INFER = "infer"
PUBLISH = "publish"


class DeadLetter(NamedTuple):
    raw: Any  # transforms.events.RawEvent
    stage: str
    error: str
    error_type: str
    event_id: str | None = None


class OutputMessage(NamedTuple):
    """What leaves the scoring transform: a JSON body and the Pub/Sub attributes to send with it."""

    data: bytes
    attributes: dict[str, str]


def format_dead_letter(dead_letter: DeadLetter, model: str) -> OutputMessage:
    body = {
        "payload": base64.b64encode(dead_letter.raw.payload).decode("ascii"),
        "attributes": dict(dead_letter.raw.attributes),
        "stage": dead_letter.stage,
        "error": dead_letter.error,
        "error_type": dead_letter.error_type,
        "event_id": dead_letter.event_id,
        "model": model,
    }
    # The original attributes travel in the body, not as attributes: a message may already carry Pub/Sub's
    # maximum of them, and these few are what consumers of a dead-letter topic filter on.
    attributes = {"model": model, "stage": dead_letter.stage, "error_type": dead_letter.error_type}
    if dead_letter.event_id:
        attributes["event_id"] = dead_letter.event_id
    return OutputMessage(COMPACT_JSON.encode(body).encode("utf-8"), attributes)
