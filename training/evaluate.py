"""Judge an exported model from the outside: score events through its serving signature, keep its quality record
(`assets.extra/quality.json`: held-out metrics and training parameters) beside it, and time its calls.

Cheap to import: TensorFlow is reached through `training.runtime` only where a model is loaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_handlers import interface as mi
from training import data, runtime

QUALITY_FILE = "quality.json"


def quality_path(version_dir) -> Path:
    return Path(version_dir) / "assets.extra" / QUALITY_FILE


def write_quality(version_dir, quality: dict) -> None:
    path = quality_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(quality, indent=2) + "\n")


def read_quality(version_dir) -> dict:
    """The recorded quality of an export; empty when it has none."""
    path = quality_path(version_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def predict(signature, interface: mi.ModelInterface, events: Sequence[dict], batch_size: int = 4096) -> np.ndarray:
    """Run `events` through a serving signature; returns the first output as a numpy array."""
    output = interface.outputs[0].name
    parts = []
    for start in range(0, len(events), batch_size):
        columns = interface.to_columns(events[start : start + batch_size])
        parts.append(signature(**columns)[output].numpy())
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def measure_latency(path, interface: mi.ModelInterface, batch_sizes=(1, 32, 256), repeats: int = 200) -> dict:
    """Median wall milliseconds of one serving-signature call on numpy columns, per batch size."""
    tf = runtime.tensorflow()
    signature = tf.saved_model.load(str(path)).signatures[interface.signature_name]
    events, _ = data.generate(interface, max(batch_sizes), seed=12345)
    result = {}
    for size in batch_sizes:
        columns = interface.to_columns(events[:size])
        for _ in range(10):  # the first calls trace and allocate
            signature(**columns)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            signature(**columns)
            times.append(time.perf_counter() - start)
        result[size] = float(np.median(times) * 1000)
    return result
