"""Typed records over the benchmarks' JSON: how a result file is read back, and how a summary is written.

The raw sections of results.json and flink.json are written as the measuring code builds them (every sample, in
the shape the README and docs/benchmarks/ quote). The code that reads them back (summaries, tables, plots)
reads them through frozen dataclasses instead of chains of `.get()`: `load(Record, data)` fills the fields a
record declares from a JSON object and leaves out every other key; a missing key reads as the field's default,
None for a figure (not measured) and an empty record for a nested one, so a partial run (an interrupted one, or
`--only=` a few sections) reads like a full one with blanks. `dump(record)` writes a record back as the JSON
object it came from, keys in field order.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar

R = TypeVar("R")


def load(cls: type[R], data: Any) -> R:
    """`cls` from a JSON object; anything that is not one (None, a number) reads as the empty record."""
    if not isinstance(data, dict):
        data = {}
    hints = _hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        if data[field.name] is None and field.default_factory is not dataclasses.MISSING:
            continue  # null where a nested record is declared with `empty()`: read as the empty record
        values[field.name] = _convert(hints[field.name], data[field.name])
    return cls(**values)


def dump(record) -> dict:
    """The JSON object of a record (nested records as objects), keys in the order the fields are declared."""
    return dataclasses.asdict(record)


def dump_present(record) -> dict:
    """Like `dump`, without the fields that are None: for a record whose JSON names only what was measured."""
    return {k: v for k, v in dump(record).items() if v is not None}


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _convert(hint, value):
    """A JSON value as the field's type: records, and lists and dicts of them, are loaded; anything else is kept."""
    if value is None:
        return None
    record = _record_type(hint)
    if record is not None:
        return load(record, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list):
        return [_convert(args[0], v) for v in value]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _convert(args[1], v) for k, v in value.items()}
    return value


def _record_type(hint) -> type | None:
    """The dataclass in `X`, `X | None` or `Optional[X]`; None when the hint names no dataclass."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def empty(cls: type[R]):
    """A default factory for a nested record: missing reads as a record of blanks, so no None checks downstream."""
    return dataclasses.field(default_factory=cls)
