"""FormatPredictions: (EventRef, PredictionResult) -> the prediction message downstream services receive.

Contract (README, "Predictions"): a JSON object with `event_id`, `model`, `model_version` and the model's
outputs (plus what the pipeline derives from them, e.g. `is_fraud`). The input attributes are carried over;
`event_id`, `model`, `model_version` and `scored_at` are set as attributes too.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Mapping

from apache_beam.ml.inference.base import PredictionResult

from model_handlers.interface import ModelInterface
from transforms.dead_letter import OutputMessage

# Derives extra prediction fields from the model's outputs, e.g. is_fraud from fraud_probability.
Decorate = Callable[[Mapping[str, float]], Mapping[str, Any]]


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_prediction(
    ref, result: PredictionResult, interface: ModelInterface, decorate: Decorate | None = None, scored_at: str | None = None
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
        scored_at=scored_at or rfc3339_now(),
    )
    return OutputMessage(json.dumps(body, separators=(",", ":")).encode("utf-8"), attributes)
