"""The backfill ends: ReadEventFiles from JSON Lines or TFRecord files of tf.train.Examples, WriteJsonLines for
predictions and dead letters, WriteTFRecords for PredictionLogs.

Paths are local or gs:// globs. Lines and records are read as bytes, so one that is not UTF-8 or not an Example
becomes a dead letter rather than a crashed pipeline.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import ReadFromText, ReadFromTFRecord, WriteToText, WriteToTFRecord
from apache_beam.io.filesystem import CompressionTypes

from transforms.events import JSONL, TFRECORD, RawEvent


class ReadEventFiles(beam.PTransform):
    """PBegin -> PCollection[RawEvent], one per line (JSONL) or per TFRecord record (TFRECORD), with no attributes.
    TFRecord files may be compressed: gzip or deflate, told by the file name's extension (.gz, .deflate)."""

    def __init__(self, file_pattern: str, input_format: str = JSONL):
        super().__init__()
        if input_format not in (JSONL, TFRECORD):
            raise ValueError(f"input_format must be {JSONL!r} or {TFRECORD!r}, got {input_format!r}")
        self._file_pattern = file_pattern
        self._input_format = input_format

    def expand(self, pbegin):
        if self._input_format == TFRECORD:
            read = "ReadRecords" >> ReadFromTFRecord(
                self._file_pattern, coder=coders.BytesCoder(), compression_type=CompressionTypes.AUTO
            )
        else:
            read = "ReadLines" >> ReadFromText(self._file_pattern, coder=coders.BytesCoder())
        return pbegin | read | "ToRawEvents" >> beam.Map(lambda payload: RawEvent(payload, {}))


class WriteJsonLines(beam.PTransform):
    """PCollection[OutputMessage] -> `<prefix>-SSSSS-of-NNNNN.jsonl`, the message bodies one per line."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def expand(self, messages):
        return (
            messages
            | "ToLines" >> beam.Map(lambda message: message.data)
            | "WriteLines" >> WriteToText(self._prefix, file_name_suffix=".jsonl", coder=coders.BytesCoder())
        )


class WriteTFRecords(beam.PTransform):
    """PCollection[OutputMessage] -> `<prefix>-SSSSS-of-NNNNN.tfrecord`, the message bodies one record each
    (PredictionLogs, readable by TFX and tf.data)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def expand(self, messages):
        return (
            messages
            | "ToRecords" >> beam.Map(lambda message: message.data)
            | "WriteRecords" >> WriteToTFRecord(self._prefix, coder=coders.BytesCoder(), file_name_suffix=".tfrecord")
        )
