"""What every model handler of the project shares: scoring a batch without letting one bad element fail the rest.

Beam's RunInference fails a whole batch when `run_inference` raises, and with exception handling the whole batch
goes to the dead-letter output. Here a batch that fails permanently is retried element by element, so only the
elements that fail on their own are marked, with an `InferenceFailure` in place of their outputs; the scoring
transform sends those to the dead letters and everything else on as predictions. A batch that fails with a
retryable error (the model server unreachable or overloaded, after the handler's own retries) is not split: the
failure is not the elements' doing, and retrying each one alone would multiply the wait by the batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult

from model_handlers.interface import ModelInterface
from transforms.messages import ErrorType, Reason

_LOGGER = logging.getLogger(__name__)


class Scored(NamedTuple):
    """A scored batch: one dict of outputs per element, and the model version that produced them."""

    outputs: list[dict[str, float]]
    model_version: str


@dataclasses.dataclass(frozen=True)
class InferenceFailure:
    """Stands in a PredictionResult's `inference` for an element the model could not score."""

    error: str
    error_type: ErrorType
    # Said beside the error, not part of what the failure is: two failures with the same text and type are equal.
    reason: Reason | None = dataclasses.field(default=None, compare=False)


class IsolatingModelHandler(ModelHandler[Mapping[str, Any], PredictionResult, Any]):
    """Base for handlers whose `predict` scores a batch of validated feature dicts in one call.

    Subclasses implement `load_model`, `predict(batch, model) -> Scored` and `describe`; they may refine
    `classify_error` and `preflight`. Tuning arguments (batching, sharing) go to Beam's ModelHandler.
    """

    def __init__(self, interface: ModelInterface, **model_handler_kwargs):
        super().__init__(**model_handler_kwargs)
        self._interface = interface

    @property
    def interface(self) -> ModelInterface:
        return self._interface

    def predict(self, batch: Sequence[Mapping[str, Any]], model: Any) -> Scored:
        raise NotImplementedError(type(self))

    def describe(self) -> str:
        """Which model, which version and where from, as the launcher logs it and error messages name it."""
        raise NotImplementedError(type(self))

    def preflight(self) -> None:
        """The launcher's check before the job starts: raises a UsageError (model_handlers.errors) when the model
        cannot serve. Here nothing: what a handler can check without loading the model, it checks when made."""

    def classify_error(self, error: BaseException) -> ErrorType:
        """PERMANENT unless a subclass knows the failure may pass (an overloaded or unreachable server)."""
        return ErrorType.PERMANENT

    def describe_error(self, error: BaseException) -> str:
        """The `error` text of a dead letter."""
        return f"{type(error).__name__}: {error}"

    def run_inference(
        self, batch: Sequence[Mapping[str, Any]], model: Any, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        try:
            scored = self.predict(batch, model)
        except Exception as batch_error:  # pylint: disable=broad-except
            error_type = self.classify_error(batch_error)
            if len(batch) == 1 or error_type == ErrorType.RETRYABLE:
                failure = self._failure(self.describe_error(batch_error), error_type, len(batch))
                return [PredictionResult(example, failure, None) for example in batch]
            # Why one by one: a single poisonous element must not take the good ones down with it.
            _LOGGER.warning(
                "%s: a batch of %d failed (%s); scoring its elements one by one",
                self.get_metrics_namespace(),
                len(batch),
                batch_error,
            )
            Metrics.counter(self.get_metrics_namespace(), "batches_isolated").inc()
            return [self._predict_one(example, model) for example in batch]
        return [self._result(example, output, scored.model_version) for example, output in zip(batch, scored.outputs)]

    def _predict_one(self, example: Mapping[str, Any], model: Any) -> PredictionResult:
        try:
            scored = self.predict([example], model)
        except Exception as error:  # pylint: disable=broad-except
            failure = self._failure(self.describe_error(error), self.classify_error(error))
            return PredictionResult(example, failure, None)
        return self._result(example, scored.outputs[0], scored.model_version)

    def _result(self, example: Mapping[str, Any], output: dict[str, float], model_version: str) -> PredictionResult:
        """The element's result, or a permanent failure when the model answered NaN or an infinity: no JSON number
        can carry it, and a prediction of NaN is not one. The same event would get the same answer again."""
        for name, value in output.items():
            if not math.isfinite(value):
                failure = self._failure(
                    f"the model (version {model_version}) returned {value} for {name!r}",
                    ErrorType.PERMANENT,
                    reason=Reason.NON_FINITE_OUTPUT,
                )
                return PredictionResult(example, failure, None)
        return PredictionResult(example, output, model_version)

    def _failure(
        self, error: str, error_type: ErrorType, count: int = 1, reason: Reason | None = None
    ) -> InferenceFailure:
        Metrics.counter(self.get_metrics_namespace(), "elements_failed").inc(count)
        if reason is None:
            reason = Reason.MODEL_UNAVAILABLE if error_type == ErrorType.RETRYABLE else Reason.MODEL_REJECTED
        return InferenceFailure(error, error_type, reason)

    def get_num_bytes(self, batch: Sequence[Mapping[str, Any]]) -> int:
        # What crosses into the model: string bytes, and 8 bytes per number. Cheaper than Beam's pickle default.
        size = 0
        for row in batch:
            for value in row.values():
                size += len(value) if isinstance(value, str) else 8
        return size

    def get_metrics_namespace(self) -> str:
        return f"marketplace_{self._interface.name}"


class EventKeyedHandler(KeyedModelHandler):
    """Beam's KeyedModelHandler (keyed by what the event is scored for), counting only what the model receives as
    inference bytes. Beam's own count pickles every key once per batch (here the raw payload and attributes) just to
    feed that metric: about 5 us an event, a twentieth of a backfill's time."""

    def get_num_bytes(self, batch) -> int:
        return self._unkeyed.get_num_bytes([example for _key, example in batch])
