"""Signature ceiling: the raw serving-signature rate of each model, numpy columns prepared in advance; and what
each step of the pipeline's per-event work costs outside Beam.

    python -m benchmarks.ceiling --model_dir=DIR --json_out=F [--models=fraud,price] [--batch_sizes=1,32,256]

Runs in its own process (the benchmark keeps TensorFlow out of its own). The model is loaded as the pipeline loads
it (`SavedModelHandler.load_version`, warm-up included) and called through `LoadedSavedModel.predict`, which is what
one RunInference batch costs at least: events/s = batch size / median call latency.

Stage costs (microseconds per event, median of a few passes over 2,560 valid events, batches of 256): the
project's own functions as the pipeline calls them, without Beam: parse_event, predict_rows (to_columns +
LoadedSavedModel.predict + one output dict per row, as the handler does), the keyed handler's get_num_bytes
(RunInference calls it per batch for its metrics) and format_prediction. Their sum against the pipeline's
steady-state cost per event shows what the runner adds.
"""

from __future__ import annotations

import argparse
import json
import time

from localdev.traffic import make_traffic
from model_handlers.interface import MODELS
from plumbing import cli
from transforms.predictions import rfc3339


def measure(model, columns, min_calls: int, min_secs: float, warmup_calls: int = 10) -> list[float]:
    for _ in range(warmup_calls):
        model.predict(columns)
    latencies, start = [], time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - start < min_secs:
        t0 = time.perf_counter()
        model.predict(columns)
        latencies.append(time.perf_counter() - t0)
    return latencies


def stage_costs(interface, handler, model, passes: int = 5, batch_size: int = 256) -> dict:
    """Median microseconds per event of each step of the pipeline's per-event work, outside Beam."""
    import functools
    import statistics

    from apache_beam.ml.inference.base import PredictionResult

    from model_handlers.base import EventKeyedHandler
    from transforms.events import parse_event
    from transforms.messages import EventRef, RawEvent
    from transforms.predictions import format_prediction

    decorate = None
    if interface.name == "fraud":
        from pipelines.fraud_detection import is_fraud

        decorate = functools.partial(is_fraud, threshold=0.5)
    raws = [RawEvent(m.payload, {}) for m in make_traffic(interface, 10 * batch_size, 0.0, seed=9)]
    keyed = EventKeyedHandler(handler)  # what the pipeline's RunInference uses
    names = [output.name for output in interface.outputs]

    def predict_rows(batch):  # what the handler does per batch: columns in, one output dict per row out
        outputs = model.predict(interface.to_columns(batch))
        return [dict(zip(names, row)) for row in zip(*(outputs[name].tolist() for name in names))]

    samples = {
        "parse_event": [],
        "to_columns": [],
        "signature": [],
        "predict_rows": [],
        "keyed_get_num_bytes": [],
        "format_prediction": [],
    }
    for _ in range(passes):
        t0 = time.perf_counter()
        parsed = [parse_event(raw, interface) for raw in raws]
        samples["parse_event"].append(time.perf_counter() - t0)
        batches = [parsed[i : i + batch_size] for i in range(0, len(parsed), batch_size)]
        rows = [[features for _, features in batch] for batch in batches]
        t0 = time.perf_counter()
        columns = [interface.to_columns(r) for r in rows]
        samples["to_columns"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in columns:
            model.predict(c)
        samples["signature"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outputs = [predict_rows(r) for r in rows]
        samples["predict_rows"].append(time.perf_counter() - t0)
        refs = [
            [
                (EventRef(event_id, raw), features)
                for (event_id, features), raw in zip(batch, raws[i * batch_size : (i + 1) * batch_size])
            ]
            for i, batch in enumerate(batches)
        ]
        t0 = time.perf_counter()
        for batch in refs:
            keyed.get_num_bytes(batch)
        samples["keyed_get_num_bytes"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scored_at = rfc3339(int(time.time() * 1000))
        for batch, out in zip(refs, outputs):
            for (ref, features), inference in zip(batch, out):
                format_prediction(ref, PredictionResult(features, inference, "1"), interface, decorate, scored_at)
        samples["format_prediction"].append(time.perf_counter() - t0)
    n = len(raws)
    us = {name: statistics.median(values) / n * 1e6 for name, values in samples.items()}
    us["total_outside_beam"] = (
        us["parse_event"] + us["predict_rows"] + us["keyed_get_num_bytes"] + us["format_prediction"]
    )
    return {"us_per_event": us, "events": n, "passes": passes}


def main(argv=None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--json_out", required=True)
    parser.add_argument("--models", default="fraud,price")
    parser.add_argument("--batch_sizes", default="1,32,256")
    parser.add_argument("--min_calls", type=int, default=100)
    parser.add_argument("--min_secs", type=float, default=1.5)
    args = parser.parse_args(argv)

    import statistics

    from model_handlers.saved_model import SavedModelHandler

    results = {}
    for name in args.models.split(","):
        interface = MODELS[name]
        t0 = time.perf_counter()
        handler = SavedModelHandler(interface, args.model_dir)
        model = handler.load_version(handler.version)
        load_secs = time.perf_counter() - t0
        rows = []
        for message in make_traffic(interface, max(int(b) for b in args.batch_sizes.split(",")), 0.0, seed=7):
            rows.append(json.loads(message.payload))
        by_batch = {}
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            columns = interface.to_columns(rows[:batch_size])
            latencies = measure(model, columns, args.min_calls, args.min_secs)
            med = statistics.median(latencies)
            by_batch[str(batch_size)] = {
                "batch_size": batch_size,
                "median_latency_ms": med * 1000,
                "events_per_sec": batch_size / med,
                "calls": len(latencies),
                "latencies_ms": [round(x * 1000, 4) for x in latencies],
            }
            print(
                f"{name} batch {batch_size}: {med * 1000:.2f} ms median, {batch_size / med:,.0f} events/s", flush=True
            )
        stages = stage_costs(interface, handler, model)
        print(
            f"{name} stages (us/event): " + ", ".join(f"{k} {v:.1f}" for k, v in stages["us_per_event"].items()),
            flush=True,
        )
        results[name] = {
            "model_version": handler.model_version,
            "load_secs_incl_tf_import": load_secs,
            "by_batch": by_batch,
            "stages": stages,
        }
    with open(args.json_out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    cli.run(main)
