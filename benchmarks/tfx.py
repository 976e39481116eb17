"""JSON Lines through the project's handler against TFRecord through tfx-bsl: backfill throughput, same events.

For each model, the same valid events are written twice, as JSON Lines and as a TFRecord file of tf.train.Examples
(`ModelInterface.to_example`, with the event_id), and each file is backfilled by the real pipeline in a fresh
process (benchmarks.backfill.run_once, outputs counted):

- `jsonl_in_process`: `--input_format=jsonl --output_format=jsonl --inference=in_process` (the default path);
- `tfrecord_tfx_bsl`: `--input_format=tfrecord --output_format=prediction_log --inference=tfx_bsl`.

Two sizes per path separate the fixed cost from the steady state, as in benchmarks.backfill. The ratio is
tfx_bsl / in_process events/s. One run per size; the machine is shared and noisy, so read the ratio, not the digits.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.backfill import run_once, steady_state, write_inputs
from benchmarks.common import log
from model_handlers.interface import MODELS

PATHS = {
    "jsonl_in_process": ["--input_format=jsonl", "--output_format=jsonl", "--inference=in_process"],
    "tfrecord_tfx_bsl": ["--input_format=tfrecord", "--output_format=prediction_log", "--inference=tfx_bsl"],
}


def write_tfrecord(json_lines: Path, path: Path) -> Path:
    """The events of a JSON Lines file as a TFRecord file of tf.train.Examples, in the same order."""
    import tensorflow as tf

    interface = MODELS[json_lines.name.split("-")[0]]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for line in json_lines.read_bytes().splitlines():
            event = json.loads(line)
            writer.write(interface.to_example(event, event["event_id"]).SerializeToString())
    return path


def run(model_dir: str, workdir: Path, n_small: int, n_big: int, models=("fraud", "price")) -> dict:
    results = {"n_small": n_small, "n_big": n_big, "paths": {name: args for name, args in PATHS.items()}, "models": {}}
    for model in models:
        jsonl = write_inputs(workdir, model, [n_small, n_big], seed=13)
        inputs = {
            "jsonl_in_process": jsonl,
            "tfrecord_tfx_bsl": {n: write_tfrecord(p, p.with_suffix(".tfrecord")) for n, p in jsonl.items()},
        }
        per_model = {}
        for name, extra in PATHS.items():
            small, big = (
                run_once(model, inputs[name][n], n, model_dir, workdir, f"tfx-{model}-{name}-{n}", extra)
                for n in (n_small, n_big)
            )
            steady, fixed = steady_state(n_small, small["run_wait_secs"], n_big, big["run_wait_secs"])
            per_model[name] = {
                "end_to_end_events_per_sec": big["events_per_sec"],
                "steady_events_per_sec": steady,
                "fixed_secs": fixed,
                "samples": {"small": small, "big": big},
            }
            log(
                f"tfx {model} {name}: N={n_big:,} {big['events_per_sec']:,.0f} events/s end to end, fixed "
                f"{_fmt(fixed, '.1f')}s, steady {_fmt(steady, ',.0f')} events/s, outputs verified"
            )
        base, tfx = per_model["jsonl_in_process"], per_model["tfrecord_tfx_bsl"]
        per_model["ratio_end_to_end"] = tfx["end_to_end_events_per_sec"] / base["end_to_end_events_per_sec"]
        per_model["ratio_steady"] = (
            tfx["steady_events_per_sec"] / base["steady_events_per_sec"]
            if tfx["steady_events_per_sec"] and base["steady_events_per_sec"]
            else None
        )
        results["models"][model] = per_model
    return results


def table(results: dict) -> str:
    lines = [
        f"backfill, N={results['n_big']:,}: JSON Lines + project handler vs TFRecord + tfx-bsl (events/s)",
        f"{'model':<7}{'path':<20}{'end to end':>12}{'steady':>10}{'fixed s':>9}",
    ]
    for model, per_model in results["models"].items():
        for name in PATHS:
            r = per_model[name]
            lines.append(
                f"{model:<7}{name:<20}{r['end_to_end_events_per_sec']:>12,.0f}"
                f"{_fmt(r['steady_events_per_sec'], ',.0f'):>10}{_fmt(r['fixed_secs'], '.1f'):>9}"
            )
        lines.append(
            f"{model:<7}{'ratio tfx/handler':<20}{per_model['ratio_end_to_end']:>12.2f}"
            f"{_fmt(per_model['ratio_steady'], '.2f'):>10}"
        )
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
