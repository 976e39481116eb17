"""FormatPredictions: (EventRef, PredictionResult) -> the prediction message downstream services receive.

Contract (README, "Predictions"): a JSON object with `event_id`, `model`, `model_version` and the model's
outputs (plus what the pipeline derives from them, e.g. `is_fraud`). The input attributes are carried over;
`event_id`, `model`, `model_version` and `scored_at` are set as attributes too.

With `output_format=Format.PREDICTION_LOG` (backfills) the body is instead a serialized TF Serving PredictionLog, as
TFX's BulkInferrer writes them: a classify_log or regress_log whose request holds the event as a tf.Example (with
its `event_id` feature) and whose response holds the model's answer and version.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from model_handlers.interface import CLASSIFY, ModelInterface
from transforms.messages import COMPACT_JSON, OutputMessage

# Derives extra prediction fields from the model's outputs, e.g. is_fraud from fraud_probability.
Decorate = Callable[[Mapping[str, float]], Mapping[str, Any]]


def rfc3339(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.UTC)
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
    return OutputMessage(COMPACT_JSON.encode(body).encode("utf-8"), attributes, ref.raw)


def prediction_log(ref, result: PredictionResult, interface: ModelInterface):
    """(EventRef, PredictionResult of a validated feature dict) -> a PredictionLog, as TF Serving's Classify or
    Regress would have logged the event."""
    from tensorflow_serving.apis import classification_pb2, model_pb2, prediction_log_pb2, regression_pb2

    spec = model_pb2.ModelSpec(name=interface.name, signature_name=interface.example_signature_name)
    if str(result.model_id).isdigit():
        spec.version.value = int(result.model_id)
    example = interface.to_example(result.example, ref.event_id)
    answer = interface.example_result(result.inference)
    if interface.example_signature_name == CLASSIFY:
        request = classification_pb2.ClassificationRequest(model_spec=spec)
        request.input.example_list.examples.append(example)
        response = classification_pb2.ClassificationResponse(model_spec=spec, result=answer)
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request, response=response)
        )
    request = regression_pb2.RegressionRequest(model_spec=spec)
    request.input.example_list.examples.append(example)
    response = regression_pb2.RegressionResponse(model_spec=spec, result=answer)
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=request, response=response)
    )


class FormatPredictionLogsFn(beam.DoFn):
    """(EventRef, PredictionResult) -> OutputMessage whose body is the serialized PredictionLog (no attributes:
    PredictionLog files carry none)."""

    def __init__(self, interface: ModelInterface):
        self._interface = interface

    def process(self, keyed_result):
        ref, result = keyed_result
        yield OutputMessage(prediction_log(ref, result, self._interface).SerializeToString(), {}, ref.raw)


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
