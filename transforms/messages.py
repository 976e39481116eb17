"""The message vocabulary: what travels between the pipeline's steps, and the words that say what became of it.

Every step speaks these and nothing else: the records (`RawEvent` in, `EventRef` through inference, `OutputMessage`
to a sink, `DeadLetter` for what cannot be scored), the file and message formats, the dead-letter `Stage`,
`ErrorType` and `Reason` (a code per cause, beside the human text, so that a summary or an alert groups by it
without reading prose), and the one JSON encoder. It imports nothing of the project's, so any room may import it.
"""

from __future__ import annotations

import enum
import json
from typing import Any, NamedTuple

# One encoder for every message: json.dumps with non-default separators builds a new encoder on each call.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))

# The tagged output every step sends its dead letters to.
DEAD_LETTERS = "dead_letters"


class Format(enum.StrEnum):
    """How events arrive and predictions leave in files (streaming is always JSONL)."""

    JSONL = "jsonl"  # one JSON object a line (a message body on Pub/Sub)
    TFRECORD = "tfrecord"  # serialized tf.train.Examples (backfill input)
    PREDICTION_LOG = "prediction_log"  # serialized TF Serving PredictionLogs (backfill output)


class Stage(enum.StrEnum):
    """Where an event failed."""

    PARSE = "parse"  # the bytes are not an event: empty, too large, not UTF-8, not JSON, no readable event time
    VALIDATE = "validate"  # an event, but not one the model takes: its id, attributes or features
    INFER = "infer"  # the model could not score it
    PUBLISH = "publish"  # Pub/Sub refused its prediction


class ErrorType(enum.StrEnum):
    """Whether the same event could succeed later: only a retryable dead letter is worth replaying."""

    PERMANENT = "permanent"
    RETRYABLE = "retryable"


class Reason(enum.StrEnum):
    """The cause of a dead letter, one code per cause (the `error` text says the details)."""

    # parse
    EMPTY_PAYLOAD = "empty_payload"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    NOT_AN_EXAMPLE = "not_an_example"
    BAD_TIMESTAMP = "bad_timestamp"
    # validate
    BAD_EVENT_ID = "bad_event_id"
    BAD_ATTRIBUTES = "bad_attributes"
    MISSING_FEATURE = "missing_feature"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_BOUNDS = "out_of_bounds"
    TOO_LONG = "too_long"
    NOT_TEXT = "not_text"
    # infer
    MODEL_REJECTED = "model_rejected"  # the model failed on this element alone
    MODEL_UNAVAILABLE = "model_unavailable"  # unreachable, too slow or out of memory: it may work later
    NON_FINITE_OUTPUT = "non_finite_output"  # the model answered NaN or an infinity
    BATCH_FAILED = "batch_failed"  # the whole batch failed outside the model handler (e.g. a lost model process)
    # publish
    PUBLISH_REFUSED = "publish_refused"


class RawEvent(NamedTuple):
    """One message as it arrived: its bytes and Pub/Sub attributes (none from files), and, when the pipeline itself
    pulled it, the ack id that the publishing step acknowledges once the message's output is published."""

    payload: bytes
    attributes: dict[str, str]
    ack_id: str | None = None


class EventRef(NamedTuple):
    """The key an event travels under through RunInference: its id, plus what formatting needs afterwards."""

    event_id: str
    raw: RawEvent


class DeadLetter(NamedTuple):
    """An event that cannot be scored, with its message whole; each sink writes it in its own form
    (transforms.dead_letter)."""

    raw: RawEvent
    stage: Stage
    error: str
    error_type: ErrorType
    event_id: str | None = None
    reason: Reason | None = None


class OutputMessage(NamedTuple):
    """What a sink receives for one event: a body, the Pub/Sub attributes to send with it, and the message it came
    from (a RawEvent: a dead letter at `publish` carries it, and its ack id is acknowledged once this is out)."""

    data: bytes
    attributes: dict[str, str]
    raw: Any = None

    @property
    def ack_id(self) -> str | None:
        return self.raw.ack_id if self.raw is not None else None
