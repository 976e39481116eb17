"""Benchmarks, one command, one machine:

    python -m benchmarks.run --model_dir=DIR [--out=benchmarks/results] [--quick]

1. signature ceiling: the serving signature alone at batch 1, 32, 256 (fraud and price);
2. backfill through the real pipelines on the DirectRunner (fraud and price): end-to-end events/s, fixed cost
   and steady-state events/s from a big and a small input, medians over repeats, each run a fresh process, output
   line counts verified; plus the 2-worker multi_processing and multi_threading variants (fraud, once), and a
   large fraud backfill (400k events) with two worker processes, end to end;
3. streaming through the Pub/Sub emulator on the DirectRunner (fraud): sustained throughput, p50/p99 latency;
4. the baseline, a plain google-cloud-pubsub consumer (benchmarks/plain_consumer.py), measured the same way;
5. TF Serving over gRPC against in-process (benchmarks/tf_serving.py): events/s and batch latency p50/p99 on the
   path to the model, at batch sizes 1, 32, 256 with 1 and 4 batches in flight, both models;
6. TFX interop (benchmarks/tfx.py): backfill events/s of JSON Lines through the project's handler against the
   same events as TFRecord through tfx-bsl (PredictionLogs out), both models, and the ratio;
7. flink (benchmarks/flink/; not in the default set: --only=flink): the fraud pipeline on a real local Flink
   cluster (localdev.flink): streaming drain throughput and latency p50/p99 at half of it, for a few settings of
   the runner's knobs; the plain consumer on the same emulator; backfill on Flink against the DirectRunner; and
   where the time goes. Writes OUT/flink.json and OUT/flink.png (and, run with other sections, a `flink` key in
   results.json). --flink_state_dir and --flink_port_offset run it beside another local cluster.

Writes OUT/results.json (machine facts, every raw sample, medians, ratios), OUT/results.png, OUT/grpc.png and
OUT/logs/, prints
progress and a table. Everything it starts (emulator, pipelines, consumer) stops on exit, Ctrl-C or SIGTERM.
The machine is shared and noisy: read medians and ratios, not single runs. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import backfill, flink, report, streaming, tf_serving, tfx
from benchmarks.common import log, machine_facts, python_module, run_json_child
from plumbing import cli

# Each knob's value in the two profiles, side by side: (full, quick). quick: smaller inputs, one repeat, no
# variants, one Flink setting.
_PROFILE_VALUES = {
    "ceiling_min_secs": (1.5, 0.3),
    "ceiling_min_calls": (100, 30),
    "backfill_n_small": (2_000, 2_000),
    "backfill_n_big": (100_000, 20_000),
    "backfill_repeats": (3, 1),
    "variants": (True, False),
    "backfill_n_large": (400_000, 0),
    "stream_beam_events": (3_000, 500),
    "stream_plain_events": (10_000, 3_000),
    "latency_secs": (30, 8),
    "grpc_secs_per_cell": (3.0, 0.7),
    "tfx_n_small": (2_000, 1_000),
    "tfx_n_big": (100_000, 5_000),
    "flink_backlog_events": (20_000, 3_000),
    "flink_plain_events": (10_000, 3_000),
    "flink_latency_secs": (40, 8),
    "flink_light_secs": (20, 6),
    "flink_scale_out": (True, True),
    "flink_repeats": (3, 1),
    "flink_configs": (
        (
            "default",
            "beam_defaults",
            "no_flush_limit",
            "bundle_200ms",
            "bundle_1000ms",
            "checkpoint_1s",
            "batch_1000",
        ),
        ("default",),
    ),
    "flink_backfill_n_small": (2_000, 1_000),
    "flink_backfill_n_big": (100_000, 10_000),
    "flink_backfill_repeats": (2, 1),
    "flink_variants": (True, False),
    "flink_pyspy_secs": (8, 4),
}
PROFILES = {
    name: {knob: values[i] for knob, values in _PROFILE_VALUES.items()} for i, name in enumerate(("full", "quick"))
}
SECTIONS = ("ceiling", "backfill", "variants", "large", "streaming", "grpc", "tfx", "flink")
# flink needs Java and Maven (the local cluster) and takes a while (full: about 25 min): asked for by name.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "flink")


def _terminate(signum, _frame):
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `with` and `finally` stops what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="model repository with fraud/ and price/ (make models)")
    parser.add_argument("--out", default="benchmarks/results", help="where results.json, results.png, logs/ go")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, one repeat, no variants (a smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all but flink)",
    )
    parser.add_argument(
        "--flink_state_dir",
        help="flink: the local cluster's state directory (default: "
        "build/flink); a new one reuses build/flink's installed Flink and job server",
    )
    parser.add_argument(
        "--flink_port_offset",
        type=int,
        default=0,
        help="flink: added to every port of the "
        "local cluster (8081, 6123, 8099, 8098, 8097, 8096), to run beside another one",
    )
    parser.add_argument(
        "--flink_configs",
        help="flink: comma-separated runner settings to measure, of "
        f"{','.join(flink.CONFIGS)} (default: the profile's)",
    )
    parser.add_argument("--keep_workdir", action="store_true", help="keep the generated inputs (printed path)")
    args = parser.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")

    from model_handlers.repository import ModelNotFoundError, resolve_version

    model_dir = os.path.abspath(args.model_dir)
    try:
        versions = {name: resolve_version(model_dir, name) for name in ("fraud", "price")}
    except ModelNotFoundError as error:
        print(
            f"error: {error}\nbuild the demo models first: python -m training.train --model_dir={args.model_dir}",
            file=sys.stderr,
        )
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    profile = dict(PROFILES["quick" if args.quick else "full"])
    out = Path(args.out)
    # Only Flink: its own logs directory, so an earlier full run's logs stay beside its results.json.
    logs = out / ("logs-flink" if sections == ["flink"] else "logs")
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="marketplace-bench-"))
    (workdir / "logs").symlink_to(logs.resolve(), target_is_directory=True)

    started = time.monotonic()
    results: dict = {
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "sections": sections,
        "machine": machine_facts(),
        "config": {
            **profile,
            "model_dir": model_dir,
            "model_versions": versions,
            "max_batch_size": 256,
            "runner": "DirectRunner (batch: FnApiRunner; streaming: BundleBasedDirectRunner)",
        },
        "notes": [
            "backfill end to end = N_big / median(run+wait of N_big); steady = (N_big - N_small) / "
            "(median t_big - median t_small); fixed = median t_small - N_small / steady",
            "run+wait is timed inside a fresh process after importing the pipeline module; process_wall_secs "
            "adds interpreter start, imports and exit",
            "streaming throughput = outputs (predictions + dead letters) / (first publish -> last output); "
            "latency = prediction received - published_at attribute, at half the sustained rate",
            "variants (--direct_num_workers=2): one run at each size; steady/fixed from two single samples are "
            "rough, multi_processing's fixed cost (worker start, TF import per worker) varies from run to run",
            "the benchmark's own publisher and collectors, the emulator (JVM) and the system under test share the cores",
        ],
    }
    log(
        f"benchmarks ({'quick' if args.quick else 'full'}), models {versions} from {model_dir}; "
        f"{results['machine']['nproc']} cores, load {results['machine']['loadavg_at_start']}; logs in {logs}"
    )
    status = 0
    try:
        if "ceiling" in sections:
            log("signature ceiling (fresh process: TF import, load with warm-up, batches 1/32/256)")
            results["ceiling"] = run_json_child(
                python_module(
                    "benchmarks.ceiling",
                    f"--model_dir={model_dir}",
                    f"--json_out={workdir / 'ceiling.json'}",
                    f"--min_secs={profile['ceiling_min_secs']}",
                    f"--min_calls={profile['ceiling_min_calls']}",
                ),
                logs / "ceiling.log",
                workdir / "ceiling.json",
                timeout=300,
            )
            for model, r in results["ceiling"].items():
                log(
                    f"ceiling {model}: "
                    + ", ".join(
                        f"b{b['batch_size']} {b['median_latency_ms']:.2f} ms = {b['events_per_sec']:,.0f}/s"
                        for b in r["by_batch"].values()
                    )
                )
        if "backfill" in sections or "variants" in sections:
            results["backfill"] = {}
        if "backfill" in sections:
            for model in ("fraud", "price"):
                log(
                    f"backfill {model}: N={profile['backfill_n_small']:,} and N={profile['backfill_n_big']:,}, "
                    f"{profile['backfill_repeats']} repeat(s), each a fresh process"
                )
                suite = backfill.run_suite(
                    model,
                    model_dir,
                    workdir,
                    profile["backfill_n_small"],
                    profile["backfill_n_big"],
                    profile["backfill_repeats"],
                )
                results["backfill"][model] = suite
                log(
                    f"backfill {model}: {suite['end_to_end_events_per_sec']:,.0f} events/s end to end, fixed "
                    f"{_num(suite['fixed_secs'], '.1f')}s, steady {_num(suite['steady_events_per_sec'], ',.0f')} events/s"
                )
        if "variants" in sections and profile["variants"]:
            log(
                "backfill fraud variants, once each at both sizes: --direct_num_workers=2 with multi_processing, "
                "then multi_threading"
            )
            results["backfill"]["variants"] = backfill.run_variants(
                "fraud", model_dir, workdir, profile["backfill_n_small"], profile["backfill_n_big"]
            )
        if "large" in sections and profile["backfill_n_large"]:
            n = profile["backfill_n_large"]
            log(f"large backfill: fraud, N={n:,}, two worker processes (the setting for big backfills), once")
            large = backfill.run_large("fraud", model_dir, workdir, n, backfill.VARIANTS["multi_processing_2"])
            results.setdefault("backfill", {})["large"] = large
            log(f"large backfill: {large['events_per_sec']:,.0f} events/s end to end, outputs verified")
        if "streaming" in sections:
            log("streaming through the Pub/Sub emulator: Beam pipeline on the DirectRunner, then the plain consumer")
            results["streaming"] = {}  # filled as each system finishes, so an interruption keeps what was measured
            streaming.run_streaming(
                model_dir,
                workdir,
                profile["stream_beam_events"],
                profile["stream_plain_events"],
                profile["latency_secs"],
                results=results["streaming"],
            )
        if "grpc" in sections:
            log("TF Serving over gRPC vs in-process: batch 1/32/256, 1 and 4 batches in flight (fresh process)")
            results["grpc"] = tf_serving.run_grid(model_dir, workdir, profile["grpc_secs_per_cell"])
        if "tfx" in sections:
            log("TFX interop: JSON Lines + project handler vs TFRecord + tfx-bsl, same events, fresh processes")
            results["tfx"] = tfx.run(model_dir, workdir, profile["tfx_n_small"], profile["tfx_n_big"])
        if "flink" in sections:
            log(
                "Flink: streaming drain + latency per runner setting, the plain consumer, backfill on Flink vs "
                "the DirectRunner, and where the time goes"
            )
            results["flink"] = {}  # filled as it goes, so an interruption keeps what was measured
            flink.run(
                model_dir,
                workdir,
                profile,
                flink.FlinkSetup(args.flink_state_dir, args.flink_port_offset),
                results["flink"],
                configs=args.flink_configs.split(",") if args.flink_configs else None,
                ceiling=results.get("ceiling"),
            )
    except KeyboardInterrupt:
        log("interrupted: stopped everything started; writing partial results")
        results["error"] = "interrupted"
        status = 130
    except Exception as error:  # pylint: disable=broad-except  # write what was measured, then fail loudly
        results["error"] = f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        status = 1
    finally:
        if args.keep_workdir:
            log(f"inputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    results["total_wall_secs"] = time.monotonic() - started
    if "flink" in results:
        results["flink"]["summary"] = flink.summarize(
            results["flink"], flink.direct_streaming_figures(results, out)
        ).to_json()
        for key in ("error", "traceback"):
            if key in results:
                results["flink"][key] = results[key]
        flink.write(results["flink"], results, out)
    if sections == ["flink"]:
        # Only Flink: flink.json and flink.png; results.json and results.png of an earlier full run stay.
        print()
        print(flink.table(results["flink"]))
        print(f"total {results['total_wall_secs']:.0f}s; wrote {out / 'flink.json'} and {out / 'flink.png'}")
        if status == 1:
            print(f"\nFAILED: {results['error']}\n{results['traceback']}", file=sys.stderr)
        return status
    results["summary"] = report.summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        report.plot(results, out / "results.png")
    except Exception as error:  # pylint: disable=broad-except
        log(f"could not draw results.png: {error}")
    if results.get("grpc", {}).get("cells"):
        try:
            tf_serving.plot(results["grpc"], out / "grpc.png")
        except Exception as error:  # pylint: disable=broad-except
            log(f"could not draw grpc.png: {error}")
    print()
    print(report.table(results))
    if results.get("grpc", {}).get("cells"):
        print()
        print(tf_serving.table(results["grpc"]))
    if results.get("tfx", {}).get("models"):
        print()
        print(tfx.table(results["tfx"]))
    if "flink" in results:
        print()
        print(flink.table(results["flink"]))
    print()
    target = results["summary"]["target"]
    print(
        f"target {target['what']}: end to end {_verdict(target['met_end_to_end'], target['end_to_end_events_per_sec'])}"
        f"; steady state {_verdict(target['met_steady_state'], target['steady_events_per_sec'])}"
        f"; large backfill, 2 worker processes, end to end "
        f"{_verdict(target['met_large_backfill_end_to_end'], target['large_backfill_events_per_sec'])}"
    )
    print(f"total {results['total_wall_secs']:.0f}s; wrote {out / 'results.json'} and {out / 'results.png'}")
    if status == 1:
        print(f"\nFAILED: {results['error']}\n{results['traceback']}", file=sys.stderr)
    return status


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(met, value) -> str:
    if met is None:
        return "not measured"
    return f"{'met' if met else 'NOT met'} ({value:,.0f} events/s)"


if __name__ == "__main__":
    cli.run(main)
