"""The backfill ends: ReadEventFiles from JSON Lines, WriteJsonLines for predictions and dead letters.

Paths are local or gs:// globs. Lines are read as bytes, so a line that is not UTF-8 becomes a dead letter
rather than a crashed pipeline.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import ReadFromText, WriteToText

from transforms.events import RawEvent


class ReadEventFiles(beam.PTransform):
    """PBegin -> PCollection[RawEvent], one per line, with no attributes."""

    def __init__(self, file_pattern: str):
        super().__init__()
        self._file_pattern = file_pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadLines" >> ReadFromText(self._file_pattern, coder=coders.BytesCoder())
            | "ToRawEvents" >> beam.Map(lambda line: RawEvent(line, {}))
        )


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
