"""FormatPredictions: (EventRef, PredictionResult) -> the prediction message downstream services receive.

Contract (README, "Predictions"): a JSON object with `event_id`, `model`, `model_version` and the model's
outputs (plus what the pipeline derives from them, e.g. `is_fraud`). The input attributes are carried over;
`event_id`, `model`, `model_version` and `scored_at` are set as attributes too.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable, Mapping

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from model_handlers.interface import ModelInterface
from transforms.dead_letter import COMPACT_JSON, OutputMessage

# Derives extra prediction fields from the model's outputs, e.g. is_fraud from fraud_probability.
Decorate = Callable[[Mapping[str, float]], Mapping[str, Any]]


def rfc3339(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_prediction(
    ref, result: PredictionResult, interface: ModelInterface, decorate: Decorate | None, scored_at: str
) -> OutputMessage:
    outputs = dict(result.inference)
    body = {"event_id": ref.event_id, "model": interface.name, "model_version": result.model_id, **outputs}
    if decorate is not None:
        body.update(decorate(outputs))
    attributes = dict(ref.raw.attributes)
    attributes.update(
        event_id=ref.event_id,
        model=interface.name,
        model_version=str(result.model_id),
        scored_at=scored_at,
    )
    return OutputMessage(COMPACT_JSON.encode(body).encode("utf-8"), attributes)


class FormatPredictionsFn(beam.DoFn):
    """(EventRef, PredictionResult) -> OutputMessage, stamping `scored_at` to the millisecond."""

    def __init__(self, interface: ModelInterface, decorate: Decorate | None = None):
        self._interface = interface
        self._decorate = decorate
        self._stamp_ms, self._stamp = None, ""

    def _scored_at(self) -> str:
        # Formatting a timestamp costs more than the rest of the message; a batch shares its millisecond.
        now_ms = int(time.time() * 1000)
        if now_ms != self._stamp_ms:
            self._stamp_ms, self._stamp = now_ms, rfc3339(now_ms)
        return self._stamp

    def process(self, keyed_result):
        ref, result = keyed_result
        yield format_prediction(ref, result, self._interface, self._decorate, self._scored_at())
