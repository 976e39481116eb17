"""One timed backfill run in a fresh process: `run(argv)` + `wait_until_finish()` of a model's pipeline.

    python -m benchmarks.backfill_worker --model=fraud --json_out=F -- --input=... --output=... --model_dir=...

Everything after `--` goes to the pipeline unchanged. The pipeline module is imported before the clock starts
(Beam's import is paid by any program that runs a pipeline); TensorFlow is imported inside, when the model loads,
so it is part of the measured fixed cost.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time

from localdev.streaming import PIPELINE_MODULES
from plumbing import cli


def main(argv=None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(PIPELINE_MODULES))
    parser.add_argument("--json_out", required=True)
    parser.add_argument("--profile_out", help="write cProfile stats of run+wait here")
    parser.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    pipeline_args = [a for a in args.pipeline_args if a != "--"]

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t_import = time.perf_counter()
    module = importlib.import_module(PIPELINE_MODULES[args.model])
    import_secs = time.perf_counter() - t_import

    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, t0 = os.times(), time.perf_counter()
    result = module.run(pipeline_args)
    result.wait_until_finish()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile_out)
    with open(args.json_out, "w") as f:
        json.dump(
            {
                "run_wait_secs": wall,
                "pipeline_import_secs": import_secs,
                # CPU seconds of this process (and of reaped children, e.g. multi-processing SDK workers)
                "cpu_user_secs": (cpu1.user - cpu0.user) + (cpu1.children_user - cpu0.children_user),
                "cpu_system_secs": (cpu1.system - cpu0.system) + (cpu1.children_system - cpu0.children_system),
                "metrics": _distributions(result, f"marketplace_{args.model}"),
            },
            f,
        )


def _distributions(result, namespace: str) -> dict:
    """The pipeline's distribution metrics in `namespace` (RunInference's batch latency and size among them)."""
    from apache_beam.metrics.metric import MetricsFilter

    found = {}
    for entry in result.metrics().query(MetricsFilter().with_namespace(namespace))["distributions"]:
        value = entry.committed
        if value is not None and value.count:
            found[entry.key.metric.name] = {
                "count": value.count,
                "mean": value.sum / value.count,
                "min": value.min,
                "max": value.max,
            }
    return found


if __name__ == "__main__":
    cli.run(main)
