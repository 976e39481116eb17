"""ShadowScore: a challenger scores the events the champion scored, and each pair of answers becomes a comparison.

    (EventRef, champion's PredictionResult) -> sample by event_id -> Reshuffle
        -> RunInference(challenger; the late shed) -> comparison records (OutputMessage)

Only the champion's predictions go out; the challenger's are compared and recorded, never published as
predictions. The comparison is made on the same event, so its difference is the models' difference and nothing
else: decision agreement for a classifier (fraud: is_fraud, by the pipeline's threshold), relative error for a
regressor (price).

A challenger that fails or is slow must not delay, change or dead-letter the champion's prediction:
- the Reshuffle ends the fused stage, so on Flink the challenger scores in a stage of its own and the champion's
  bundle does not wait for it (on the DirectRunner each step runs on its own anyway);
- its failures become comparison records with the error (and a count), never dead letters; one that cannot even
  be loaded (a label withdrawn from TF Serving, say) fails its comparisons, not the worker;
- a challenger slower than the traffic sheds: an event it reaches more than --shadow_max_lag_secs after the
  champion scored it is recorded as shed (`shadow_shed`) without being scored, so the queue in front of it, which on
  Flink would fill and hold the champion back through backpressure, empties again. (The DirectRunner runs one step
  at a time, so there a slow challenger slows everything: it is a local runner.)
- its records are published best effort: one that cannot be published is counted and dropped; its input message
  was acknowledged with the champion's prediction.

A comparison record (JSON): event_id, model, champion_version, challenger_version, champion and challenger (their
outputs, with what the pipeline derives from them), then `agree` (decisions equal; a regressor: its relative
error within REGRESSION_AGREEMENT) and, for a regressor, `relative_error`; or `error` in place of the challenger's
answer. Beam metrics in the model's namespace give the running agreement: shadow_compared, shadow_agreed,
shadow_failed (every record without the challenger's answer), shadow_shed (those shed among them), and the
distribution shadow_relative_error_ppm.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from model_handlers.base import EventKeyedHandler, InferenceFailure, IsolatingModelHandler
from model_handlers.interface import CLASSIFY
from transforms.messages import COMPACT_JSON, ErrorType, OutputMessage
from transforms.predictions import Decorate
from transforms.routing import SHADOW, in_share

_LOGGER = logging.getLogger(__name__)

# How often a challenger that could not be loaded is tried again.
RELOAD_SECS = 30.0
# How far behind the champion the challenger may fall before it sheds events (--shadow_max_lag_secs).
DEFAULT_MAX_LAG_SECS = 10.0
# A regressor's challenger agrees when its answer is within this relative error of the champion's.
REGRESSION_AGREEMENT = 0.05


class Shadow(NamedTuple):
    """A challenger scoring `percent` of the events (by a stable hash of event_id) beside the champion; an event
    that reaches it more than `max_lag_secs` after the champion scored it is shed."""

    handler: IsolatingModelHandler
    percent: float
    max_lag_secs: float = DEFAULT_MAX_LAG_SECS


class Champion(NamedTuple):
    """The key the challenger scores an event under: the champion's answer to compare with, and when it was given."""

    event_id: str
    version: str
    outputs: dict[str, float]
    scored_at: float  # time.time()


def _sample(keyed_result, percent: float):
    ref, result = keyed_result
    if percent >= 100 or in_share(ref.event_id, percent, SHADOW):
        yield Champion(ref.event_id, str(result.model_id), dict(result.inference), time.time()), result.example


class _CompareFn(beam.DoFn):
    """(Champion, challenger's PredictionResult) -> a comparison record; counts the agreement."""

    def __init__(self, model: str, classifier: bool, decorate: Decorate | None):
        self._model = model
        self._classifier = classifier
        self._decorate = decorate
        namespace = f"marketplace_{model}"
        self._compared = Metrics.counter(namespace, "shadow_compared")
        self._agreed = Metrics.counter(namespace, "shadow_agreed")
        self._failed = Metrics.counter(namespace, "shadow_failed")
        self._relative_error = Metrics.distribution(namespace, "shadow_relative_error_ppm")

    def _answer(self, outputs: dict[str, float]) -> dict[str, Any]:
        return {**outputs, **self._decorate(outputs)} if self._decorate else dict(outputs)

    def process(self, keyed):
        champion, result = keyed
        if isinstance(result.inference, InferenceFailure):
            self._failed.inc()
            yield self._record(champion, None, self._answer(champion.outputs), None, error=result.inference.error)
            return
        challenger = self._answer(result.inference)
        champion_answer = self._answer(champion.outputs)
        comparison: dict[str, Any] = {}
        if self._classifier and self._decorate:
            derived = list(self._decorate(champion.outputs))
            comparison["agree"] = all(champion_answer[k] == challenger[k] for k in derived)
        else:
            errors = [
                abs(challenger[name] - value) / max(abs(value), 1e-12) for name, value in champion.outputs.items()
            ]
            relative_error = max(errors)
            self._relative_error.update(int(min(relative_error, 1e6) * 1e6))
            comparison["agree"] = relative_error <= REGRESSION_AGREEMENT
            comparison["relative_error"] = relative_error
        self._compared.inc()
        if comparison["agree"]:
            self._agreed.inc()
        yield self._record(champion, str(result.model_id), champion_answer, challenger, **comparison)

    def _record(self, champion: Champion, challenger_version, champion_answer, challenger, **comparison):
        body = {
            "event_id": champion.event_id,
            "model": self._model,
            "champion_version": champion.version,
            "challenger_version": challenger_version,
            "champion": champion_answer,
            "challenger": challenger,
            **comparison,
        }
        attributes = {"event_id": champion.event_id, "model": self._model, "champion_version": champion.version}
        if challenger_version is not None:
            attributes["challenger_version"] = challenger_version
        return OutputMessage(COMPACT_JSON.encode(body).encode("utf-8"), attributes)


_LOGGED: dict[str, float] = {}  # error -> when it was last logged, in this process


def _log_once_a_while(error: str) -> None:
    # A runner may load the challenger again for every bundle (the DirectRunner does): one line per RELOAD_SECS.
    if time.monotonic() - _LOGGED.get(error, -RELOAD_SECS) >= RELOAD_SECS:
        _LOGGED[error] = time.monotonic()
        _LOGGER.error("%s; its comparisons record the error, and it is tried again in %gs", error, RELOAD_SECS)


class _Recovering:
    """The challenger's model, or the reason it could not be loaded; a failed load is tried again at most every
    RELOAD_SECS, from the batch that finds it due."""

    def __init__(self, load):
        self._load = load
        self._model, self._error, self._tried = None, None, 0.0
        self._lock = threading.Lock()  # the worker's threads share this object (Beam's Shared)
        self.get()

    def get(self):
        with self._lock:
            return self._get()

    def _get(self):
        if self._model is None and time.monotonic() - self._tried >= RELOAD_SECS:
            self._tried = time.monotonic()
            try:
                self._model, self._error = self._load(), None
            except Exception as error:  # pylint: disable=broad-except
                self._error = f"the challenger could not be loaded: {type(error).__name__}: {error}"
                _log_once_a_while(self._error)
        return self._model

    @property
    def error(self) -> str | None:
        return self._error


class ChallengerHandler(EventKeyedHandler):
    """The challenger's handler, keyed by its Champion.

    - A challenger that cannot be loaded fails its comparisons, not the worker (the champion's RunInference shares
      that worker).
    - A batch's events that the challenger reaches more than `max_lag_secs` after the champion scored them are shed:
      recorded as such, not scored. Shedding costs nothing, so a challenger that has fallen behind catches up, and
      the queue in front of it, which on Flink would fill and hold the champion back through backpressure, empties.
    - It keeps one copy per worker process, never one shared across processes: a shared copy's proxy cannot carry
      a model that may not be there.
    """

    def __init__(self, unkeyed: IsolatingModelHandler, max_lag_secs: float = DEFAULT_MAX_LAG_SECS):
        super().__init__(unkeyed)
        self._max_lag_secs = max_lag_secs

    def load_model(self) -> _Recovering:
        return _Recovering(self._unkeyed.load_model)

    def run_inference(self, batch, model: _Recovering, inference_args=None):
        now = time.time()
        fresh, shed = [], []
        for champion, features in batch:
            if now - champion.scored_at <= self._max_lag_secs:
                fresh.append((champion, features))
            else:
                shed.append(self._shed(champion, features, now))
        if not fresh:
            return shed
        loaded = model.get()
        if loaded is None:
            failure = InferenceFailure(model.error, ErrorType.RETRYABLE)
            return shed + [(key, PredictionResult(example, failure, None)) for key, example in fresh]
        return shed + list(super().run_inference(fresh, loaded, inference_args))

    def _shed(self, champion: Champion, features, now: float):
        Metrics.counter(self.get_metrics_namespace(), "shadow_shed").inc()
        failure = InferenceFailure(
            f"shed: the challenger reached this event {now - champion.scored_at:.1f}s after the champion scored it "
            f"(more than --shadow_max_lag_secs={self._max_lag_secs:g})",
            ErrorType.RETRYABLE,
        )
        return champion, PredictionResult(features, failure, None)

    def share_model_across_processes(self) -> bool:
        return False

    def model_copies(self) -> int:
        return 1


def _failed_batch_records(failed):
    """RunInference's (batch, (type, repr, traceback)) of the challenger -> one failure per element, for _CompareFn."""
    batch, (error_class, error_repr, _traceback) = failed
    failure = InferenceFailure(f"{error_class.__name__}: {error_repr}", ErrorType.RETRYABLE)
    for champion, features in batch:
        yield champion, PredictionResult(features, failure, None)


class ShadowScore(beam.PTransform):
    """PCollection[(EventRef, PredictionResult)] of the champion -> PCollection[OutputMessage] of comparisons."""

    def __init__(self, shadow: Shadow, decorate: Decorate | None = None):
        super().__init__()
        self._shadow = shadow
        self._decorate = decorate

    def expand(self, scored):
        interface = self._shadow.handler.interface
        sampled = scored | "Sample" >> beam.FlatMap(_sample, self._shadow.percent)
        # A stage of its own for the challenger (see the module's docstring).
        detached = sampled | "Detach" >> beam.Reshuffle()
        challenger = ChallengerHandler(self._shadow.handler, self._shadow.max_lag_secs)
        results, failed = detached | "Challenger" >> RunInference(challenger).with_exception_handling()
        failures = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch_records)
        classifier = interface.example_signature_name == CLASSIFY
        return (
            (results, failures)
            | "Together" >> beam.Flatten()
            | "Compare" >> beam.ParDo(_CompareFn(interface.name, classifier, self._decorate))
        )
