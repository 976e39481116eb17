"""Score: the composite shared by streaming and backfill.

    RawEvent -> ParseEvents -> Infer (RunInference, keyed by event) -> [Deduplicate] -> FormatPredictions
                     \\              \\                                   \\
                      +-> dead letters (parse | validate | infer)          +-> duplicates (raw messages)

With a canary, Infer splits the events by a stable hash of event_id (transforms.routing) between two RunInference
steps, stable and canary, each with its own handler and model, and joins their predictions again. With a shadow,
the predictions also go to a challenger, whose comparisons leave on `comparisons` (transforms.shadow).

Every event leaves on exactly one of the outputs. Dead letters leave as records: each sink writes them in its own
form (a Pub/Sub message, a JSON line). The model handler retries a failing batch element by element
(model_handlers.base), so only elements that fail alone are dead-lettered; a batch that fails even so (e.g. the
shared model's process died) comes back from RunInference's exception handling and is dead-lettered per element.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms import userstate
from apache_beam.utils.timestamp import Duration, Timestamp

from model_handlers.base import EventKeyedHandler, InferenceFailure, IsolatingModelHandler
from transforms.events import DEFAULT_MAX_EVENT_BYTES, ParseEvents
from transforms.messages import DEAD_LETTERS, DeadLetter, ErrorType, Format, OutputMessage, RawEvent, Reason, Stage
from transforms.predictions import Decorate, FormatPredictionLogsFn, FormatPredictionsFn
from transforms.routing import CANARY, in_share
from transforms.shadow import Shadow, ShadowScore

DUPLICATES = "duplicates"


class Canary(NamedTuple):
    """A canary: `percent` of the events (by a stable hash of event_id, transforms.routing) scored by `handler`."""

    handler: IsolatingModelHandler
    percent: float


class Handlers(NamedTuple):
    """The handlers of one pipeline: the one whose predictions go out, a canary taking a share of them, and a
    shadow (the challenger) scoring beside them."""

    predictions: IsolatingModelHandler
    canary: Canary | None = None
    shadow: Shadow | None = None

    def all(self) -> list[IsolatingModelHandler]:
        return [self.predictions] + [extra.handler for extra in (self.canary, self.shadow) if extra]

    def describe(self) -> str:
        text = self.predictions.describe()
        if self.canary:
            text += f"; {self.canary.percent:g}% of events (the canary) with {self.canary.handler.describe()}"
        if self.shadow:
            text += f"; shadowed on {self.shadow.percent:g}% of events by {self.shadow.handler.describe()}"
        return text


class ScoringOutputs(NamedTuple):
    predictions: beam.PCollection  # OutputMessage
    dead_letters: beam.PCollection  # DeadLetter: each sink writes them in its own form
    duplicates: beam.PCollection | None  # RawEvent: repeats dropped by deduplication, to be acknowledged
    comparisons: beam.PCollection | None = None  # OutputMessage: the shadow's comparison records


class _SplitInferenceFailures(beam.DoFn):
    """Failures to the dead letters; predictions on, counted per model version (`predictions_version_N`)."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._per_version = {}

    def process(self, keyed_result):  # (EventRef, PredictionResult)
        ref, result = keyed_result
        if isinstance(result.inference, InferenceFailure):
            failure = result.inference
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                DeadLetter(ref.raw, Stage.INFER, failure.error, failure.error_type, ref.event_id, failure.reason),
            )
            return
        counter = self._per_version.get(result.model_id)
        if counter is None:
            counter = Metrics.counter(self._namespace, f"predictions_version_{result.model_id}")
            self._per_version[result.model_id] = counter
        counter.inc()
        yield keyed_result


def _failed_batch_to_dead_letters(failed):
    """RunInference's (batch, (type, repr, traceback)) -> one dead letter per element of the batch."""
    batch, (error_class, error_repr, _traceback) = failed
    # Retryable: the batch failed outside the per-element scoring (model process lost, timeout), so nothing
    # says these events are bad.
    for ref, _features in batch:
        yield DeadLetter(
            ref.raw,
            Stage.INFER,
            f"{error_class.__name__}: {error_repr}",
            ErrorType.RETRYABLE,
            ref.event_id,
            Reason.BATCH_FAILED,
        )


def _canary_side(keyed, _partitions: int, percent: float) -> int:
    return 1 if in_share(keyed[0].event_id, percent, CANARY) else 0


class _Infer(beam.PTransform):
    """(EventRef, features) -> ((EventRef, PredictionResult), failed batches): RunInference with `handler`, or,
    with a canary, with the canary's handler for its share of event ids and `handler` for the rest."""

    def __init__(self, handler: IsolatingModelHandler, canary: Canary | None):
        super().__init__()
        self._handler = handler
        self._canary = canary

    def expand(self, events):
        if self._canary is None:
            results, failed = (
                events | "Stable" >> RunInference(EventKeyedHandler(self._handler)).with_exception_handling()
            )
            return results, failed.failed_inferences
        stable, canary = events | "SplitCanary" >> beam.Partition(_canary_side, 2, self._canary.percent)
        results, failures = [], []
        for name, handler, share in (("Stable", self._handler, stable), ("Canary", self._canary.handler, canary)):
            scored, failed = share | name >> RunInference(EventKeyedHandler(handler)).with_exception_handling()
            results.append(scored)
            failures.append(failed.failed_inferences)
        return (
            results | "CollectResults" >> beam.Flatten(),
            failures | "CollectFailedBatches" >> beam.Flatten(),
        )


class _KeepFirstPredictionFn(beam.DoFn):
    """(event_id, (EventRef, PredictionResult)) -> the first per event_id within the TTL; the rest, as their raw
    messages, to DUPLICATES (to be acknowledged). Beam's DeduplicatePerKey, with the drops kept: on Pub/Sub a
    dropped message still has to be acknowledged, or it would come back forever."""

    SEEN = userstate.ReadModifyWriteStateSpec("seen", coders.BooleanCoder())
    EXPIRY = userstate.TimerSpec("expiry", userstate.TimeDomain.REAL_TIME)

    def __init__(self, ttl_secs: int):
        self._ttl_secs = ttl_secs
        self._kept = Metrics.counter("dedup", "predictions_kept")
        self._dropped = Metrics.counter("dedup", "duplicates_dropped")

    def process(self, keyed, seen=beam.DoFn.StateParam(SEEN), expiry=beam.DoFn.TimerParam(EXPIRY)):
        _event_id, scored = keyed
        if seen.read():
            self._dropped.inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES, scored[0].raw)
            return
        seen.write(True)
        expiry.set(Timestamp.now() + Duration.of(self._ttl_secs))
        self._kept.inc()
        yield scored

    @userstate.on_timer(EXPIRY)
    def forget(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DeduplicatePredictions(beam.PTransform):
    """(EventRef, PredictionResult) -> the same, the first of each event_id within `ttl_secs` of processing time,
    and DUPLICATES: the raw messages of the others.

    Only predictions are deduplicated, after inference: an event whose scoring failed (a retryable dead letter)
    is not remembered, so its replay is scored, and a repeat delivered while the first is still being scored is
    dropped only once the first has its prediction. The event ids are keyed state, checkpointed on Flink."""

    def __init__(self, ttl_secs: int):
        super().__init__()
        self._ttl_secs = ttl_secs

    def expand(self, scored):
        return (
            scored
            | "KeyByEventId" >> beam.Map(lambda keyed_result: (keyed_result[0].event_id, keyed_result))
            | "KeepFirst" >> beam.ParDo(_KeepFirstPredictionFn(self._ttl_secs)).with_outputs(DUPLICATES, main="kept")
        )


@beam.typehints.with_input_types(RawEvent)
class Score(beam.PTransform):
    """PCollection[RawEvent] -> ScoringOutputs(predictions: OutputMessage, dead_letters: DeadLetter,
    duplicates: RawEvent).

    `input_format`: payloads are JSON objects (Format.JSONL) or serialized tf.train.Examples (Format.TFRECORD).
    `output_format`: prediction bodies are JSON (JSONL) or serialized PredictionLogs (PREDICTION_LOG); dead
    letters are JSON either way.
    `timestamp_attribute`: the message attribute an event's time is taken from (streaming).
    `deduplicate_ttl_secs`: when given, a prediction for an event_id predicted within this long is dropped (and its
    message returned on `duplicates`).
    """

    def __init__(
        self,
        handler: IsolatingModelHandler,
        *,
        canary: Canary | None = None,
        shadow: Shadow | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        decorate: Decorate | None = None,
        input_format: Format = Format.JSONL,
        output_format: Format = Format.JSONL,
        timestamp_attribute: str | None = None,
        deduplicate_ttl_secs: int | None = None,
    ):
        super().__init__()
        self._handler = handler
        self._canary = canary
        self._shadow = shadow
        self._deduplicate_ttl_secs = deduplicate_ttl_secs
        self._max_event_bytes = max_event_bytes
        self._decorate = decorate
        self._input_format = input_format
        self._output_format = output_format
        self._timestamp_attribute = timestamp_attribute

    def expand(self, raw_events):
        interface = self._handler.interface
        parsed = raw_events | "ParseEvents" >> ParseEvents(
            interface, self._max_event_bytes, self._input_format, self._timestamp_attribute
        )
        results, failed = parsed.events | "Infer" >> _Infer(self._handler, self._canary)
        split = results | "SplitInferenceFailures" >> beam.ParDo(
            _SplitInferenceFailures(self._handler.get_metrics_namespace())
        ).with_outputs(DEAD_LETTERS, main="scored")
        failed_batches = failed | "UnbatchFailedBatches" >> beam.FlatMap(_failed_batch_to_dead_letters)
        scored = split.scored
        if self._deduplicate_ttl_secs:
            deduplicated = scored | "Deduplicate" >> DeduplicatePredictions(self._deduplicate_ttl_secs)
            scored, duplicates = deduplicated.kept, deduplicated[DUPLICATES]
        else:
            duplicates = None
        if self._output_format == Format.PREDICTION_LOG:
            format_fn = FormatPredictionLogsFn(interface)
        else:
            format_fn = FormatPredictionsFn(interface, self._decorate)
        predictions = scored | "FormatPredictions" >> beam.ParDo(format_fn).with_output_types(OutputMessage)
        comparisons = None
        if self._shadow is not None:
            comparisons = scored | "Shadow" >> ShadowScore(self._shadow, self._decorate)
        dead_letters = (
            parsed.dead_letters,
            split.dead_letters,
            failed_batches,
        ) | "CollectDeadLetters" >> beam.Flatten().with_output_types(DeadLetter)
        return ScoringOutputs(predictions, dead_letters, duplicates, comparisons)
