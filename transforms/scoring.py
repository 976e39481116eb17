"""Score: the composite shared by streaming and backfill.

    RawEvent -> ParseEvents -> Infer (RunInference, keyed by event) -> FormatPredictions
                     \\              \\
                      +-> dead letters (parse | validate | infer) -> FormatDeadLetters

Every event leaves on exactly one of the two outputs. The model handler retries a failing batch element by element
(model_handlers.base), so only elements that fail alone are dead-lettered; a batch that fails even so (e.g. the
shared model's process died) comes back from RunInference's exception handling and is dead-lettered per element.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from model_handlers.base import RETRYABLE, InferenceFailure, IsolatingModelHandler
from transforms.dead_letter import DEAD_LETTERS, INFER, DeadLetter, format_dead_letter
from transforms.events import DEFAULT_MAX_EVENT_BYTES, JSONL, ParseEvents
from transforms.predictions import PREDICTION_LOG, Decorate, FormatPredictionLogsFn, FormatPredictionsFn


class ScoringOutputs(NamedTuple):
    predictions: beam.PCollection  # OutputMessage
    dead_letters: beam.PCollection  # OutputMessage


class _SplitInferenceFailures(beam.DoFn):
    def process(self, keyed_result):  # (EventRef, PredictionResult)
        ref, result = keyed_result
        if isinstance(result.inference, InferenceFailure):
            failure = result.inference
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter(ref.raw, INFER, failure.error, failure.error_type, ref.event_id)
            )
        else:
            yield keyed_result


def _failed_batch_to_dead_letters(failed):
    """RunInference's (batch, (type, repr, traceback)) -> one dead letter per element of the batch."""
    batch, (error_class, error_repr, _traceback) = failed
    # Retryable: the batch failed outside the per-element scoring (model process lost, timeout), so nothing
    # says these events are bad.
    for ref, _features in batch:
        yield DeadLetter(ref.raw, INFER, f"{error_class.__name__}: {error_repr}", RETRYABLE, ref.event_id)


class EventKeyedHandler(KeyedModelHandler):
    """Beam's KeyedModelHandler, counting only what the model receives as inference bytes. Beam's own count
    pickles every key once per batch (here the raw payload and attributes) just to feed that metric: about 5 us
    an event, a twentieth of a backfill's time."""

    def get_num_bytes(self, batch) -> int:
        return self._unkeyed.get_num_bytes([example for _key, example in batch])


class DeduplicateEvents(beam.PTransform):
    """(EventRef, features) -> the same, the first of each event_id within `ttl_secs` of processing time.

    Beam's DeduplicatePerKey keeps a flag per event_id in keyed state, cleared by a timer; on Flink that state is
    checkpointed. The drops are counted (dedup/duplicates_dropped = seen - kept)."""

    def __init__(self, ttl_secs: int):
        super().__init__()
        self._ttl_secs = ttl_secs

    def expand(self, events):
        seen, kept = Metrics.counter("dedup", "events_seen"), Metrics.counter("dedup", "events_kept")

        def key(event):
            seen.inc()
            return event[0].event_id, event

        def unkey(keyed):
            kept.inc()
            return keyed[1]

        return (
            events
            | "KeyByEventId" >> beam.Map(key)
            | "DeduplicatePerKey" >> DeduplicatePerKey(processing_time_duration=Duration.of(self._ttl_secs))
            | "Unkey" >> beam.Map(unkey)
        )


class Score(beam.PTransform):
    """PCollection[RawEvent] -> ScoringOutputs(predictions, dead_letters), both PCollection[OutputMessage].

    `input_format`: payloads are JSON objects (JSONL) or serialized tf.train.Examples (TFRECORD).
    `output_format`: prediction bodies are JSON (JSONL) or serialized PredictionLogs (PREDICTION_LOG); dead
    letters are JSON either way.
    `timestamp_attribute`: the message attribute an event's time is taken from (streaming).
    `deduplicate_ttl_secs`: when given, an event_id seen again within this long is dropped before inference.
    """

    def __init__(
        self,
        handler: IsolatingModelHandler,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        decorate: Decorate | None = None,
        input_format: str = JSONL,
        output_format: str = JSONL,
        timestamp_attribute: str | None = None,
        deduplicate_ttl_secs: int | None = None,
    ):
        super().__init__()
        self._handler = handler
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
        events = parsed.events
        if self._deduplicate_ttl_secs:
            events = events | "Deduplicate" >> DeduplicateEvents(self._deduplicate_ttl_secs)
        results, failed = events | "Infer" >> RunInference(
            EventKeyedHandler(self._handler)
        ).with_exception_handling()
        split = results | "SplitInferenceFailures" >> beam.ParDo(_SplitInferenceFailures()).with_outputs(
            DEAD_LETTERS, main="scored"
        )
        failed_batches = failed.failed_inferences | "UnbatchFailedBatches" >> beam.FlatMap(
            _failed_batch_to_dead_letters
        )
        if self._output_format == PREDICTION_LOG:
            format_fn = FormatPredictionLogsFn(interface)
        else:
            format_fn = FormatPredictionsFn(interface, self._decorate)
        predictions = split.scored | "FormatPredictions" >> beam.ParDo(format_fn)
        dead_letters = (
            (parsed.dead_letters, split.dead_letters, failed_batches)
            | "CollectDeadLetters" >> beam.Flatten()
            | "FormatDeadLetters" >> beam.Map(format_dead_letter, interface.name)
        )
        return ScoringOutputs(predictions, dead_letters)
