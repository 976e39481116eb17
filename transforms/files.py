"""The backfill ends: ReadEventFiles from JSON Lines or TFRecord files of tf.train.Examples; WriteMessageBodies to
JSON Lines (predictions) or TFRecord files (PredictionLogs), and WriteDeadLetters to JSON Lines.

Paths are local or gs:// globs. Lines and records are read as bytes, so one that is not UTF-8 or not an Example
becomes a dead letter rather than a crashed pipeline.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import ReadFromText, ReadFromTFRecord, WriteToText, WriteToTFRecord
from apache_beam.io.filesystem import CompressionTypes

from transforms.dead_letter import dead_letter_json
from transforms.messages import DeadLetter, Format, OutputMessage, RawEvent


@beam.typehints.with_output_types(RawEvent)
class ReadEventFiles(beam.PTransform):
    """PBegin -> PCollection[RawEvent], one per line (JSONL) or per TFRecord record (TFRECORD), with no attributes.
    TFRecord files may be compressed: gzip or deflate, told by the file name's extension (.gz, .deflate)."""

    def __init__(self, file_pattern: str, input_format: Format = Format.JSONL):
        super().__init__()
        if input_format not in (Format.JSONL, Format.TFRECORD):
            raise ValueError(f"input_format must be {Format.JSONL!r} or {Format.TFRECORD!r}, got {input_format!r}")
        self._file_pattern = file_pattern
        self._input_format = input_format

    def expand(self, pbegin):
        if self._input_format == Format.TFRECORD:
            read = "ReadRecords" >> ReadFromTFRecord(
                self._file_pattern, coder=coders.BytesCoder(), compression_type=CompressionTypes.AUTO
            )
        else:
            read = "ReadLines" >> ReadFromText(self._file_pattern, coder=coders.BytesCoder())
        return pbegin | read | "ToRawEvents" >> beam.Map(lambda payload: RawEvent(payload, {}))


def _write_lines(prefix: str):
    return WriteToText(prefix, file_name_suffix=".jsonl", coder=coders.BytesCoder())


@beam.typehints.with_input_types(OutputMessage)
class WriteMessageBodies(beam.PTransform):
    """PCollection[OutputMessage] -> files of the message bodies: JSON Lines, one a line
    (`<prefix>-SSSSS-of-NNNNN.jsonl`), or TFRecord, one a record (`.tfrecord`: PredictionLogs, readable by TFX and
    tf.data)."""

    def __init__(self, prefix: str, output_format: Format = Format.JSONL):
        super().__init__()
        if output_format not in (Format.JSONL, Format.PREDICTION_LOG):
            raise ValueError(
                f"output_format must be {Format.JSONL!r} or {Format.PREDICTION_LOG!r}, got {output_format!r}"
            )
        self._prefix = prefix
        self._output_format = output_format

    def expand(self, messages):
        bodies = messages | "ToBodies" >> beam.Map(lambda message: message.data)
        if self._output_format == Format.PREDICTION_LOG:
            return bodies | "WriteRecords" >> WriteToTFRecord(
                self._prefix, coder=coders.BytesCoder(), file_name_suffix=".tfrecord"
            )
        return bodies | "WriteLines" >> _write_lines(self._prefix)


@beam.typehints.with_input_types(DeadLetter)
class WriteDeadLetters(beam.PTransform):
    """PCollection[DeadLetter] -> JSON Lines files (`<prefix>-SSSSS-of-NNNNN.jsonl`), one JSON object a line."""

    def __init__(self, prefix: str, model: str):
        super().__init__()
        self._prefix = prefix
        self._model = model

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToJson" >> beam.Map(dead_letter_json, self._model)
            | "WriteLines" >> _write_lines(self._prefix)
        )
