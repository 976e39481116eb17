"""In-process scoring on a GPU against the CPU: batches of 1, 32, 256 and 2048, with one and two model copies.

    make bench-gpu                                      # on a machine with an NVIDIA GPU: one command, all of it
    python -m benchmarks.gpu --model_dir=models --out=benchmarks/results/gpu [--secs=3]
    python -m benchmarks.gpu --plot benchmarks/results/gpu/gpu.json     # the plot again (needs matplotlib)

Each cell (device x copies) runs in a fresh child process, so that the CPU cells cannot see the GPU
(CUDA_VISIBLE_DEVICES is emptied) and each starts from a cold TensorFlow. A child loads the fraud and price models
as the pipeline does (`SavedModelHandler.load_version`, warm-up included) `copies` times, then, per batch size,
scores the same prepared numpy columns from `copies` threads at once, one copy each, for `--secs`: what
`--model_copies=N` gives a machine's SDK workers. Reported per cell and batch: events/s (all threads), the median
and p99 call latency, and the GPUs TensorFlow saw (it places the signature's ops on the first one).

Writes gpu.json (and gpu.png where matplotlib is installed) and prints the table. Without a GPU the GPU cells are
reported as skipped, with the reason, and the CPU cells still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from plumbing import cli

BATCH_SIZES = (1, 32, 256, 2048)
COPIES = (1, 2)
MODELS = ("fraud", "price")


def _score(model, columns, secs: float) -> list[float]:
    """Latencies of back-to-back calls for `secs` (after a few untimed ones)."""
    for _ in range(5):
        model.predict(columns)
    latencies, end = [], time.perf_counter() + secs
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        model.predict(columns)
        latencies.append(time.perf_counter() - t0)
    return latencies


def _score_all(copies: list, columns, secs: float) -> list[float]:
    """Every copy scoring `columns` from a thread of its own at once; all their call latencies."""
    latencies: list[list[float]] = [[] for _ in copies]
    threads = [
        threading.Thread(target=lambda model=model, out=out: out.extend(_score(model, columns, secs)))
        for model, out in zip(copies, latencies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [x for per_copy in latencies for x in per_copy]


def child(model_dir: str, copies: int, secs: float, out: str) -> None:
    """One cell: every model and batch size with `copies` copies scored at once, on whatever device TF finds."""
    import numpy as np
    import tensorflow as tf

    from localdev.traffic import make_traffic
    from model_handlers.interface import MODELS as INTERFACES
    from model_handlers.saved_model import SavedModelHandler

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    result = {"gpus": gpus, "copies": copies, "models": {}}
    for name in MODELS:
        interface = INTERFACES[name]
        handler = SavedModelHandler(interface, model_dir)
        t0 = time.perf_counter()
        loaded = [handler.load_version(handler.version) for _ in range(copies)]
        load_secs = time.perf_counter() - t0
        rows = [json.loads(m.payload) for m in make_traffic(interface, max(BATCH_SIZES), 0.0, seed=7)]
        by_batch = {}
        for batch in BATCH_SIZES:
            columns = interface.to_columns(rows[:batch])
            every = np.array(_score_all(loaded, columns, secs))
            calls = len(every)
            by_batch[str(batch)] = {
                "events_per_sec": calls * batch / secs,
                "calls": calls,
                "median_ms": float(np.median(every) * 1000),
                "p99_ms": float(np.percentile(every, 99) * 1000),
            }
            print(
                f"{'gpu' if gpus else 'cpu'} copies={copies} {name} batch {batch}: "
                f"{by_batch[str(batch)]['events_per_sec']:,.0f} events/s, median {by_batch[str(batch)]['median_ms']:.2f} ms",
                flush=True,
            )
        result["models"][name] = {"load_secs": load_secs, "by_batch": by_batch}
    Path(out).write_text(json.dumps(result, indent=1))


def run(model_dir: str, out_dir: Path, secs: float) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(sys.argv), "secs_per_batch": secs, "cells": {}}
    for device in ("cpu", "gpu"):
        for copies in COPIES:
            cell = f"{device}_copies_{copies}"
            env = dict(os.environ)
            if device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""  # TensorFlow sees no GPU at all
            path = out_dir / f"{cell}.json"
            path.unlink(missing_ok=True)
            command = [sys.executable, "-m", "benchmarks.gpu", "--child", f"--model_dir={model_dir}"]
            command += [f"--copies={copies}", f"--secs={secs}", f"--out={path}"]
            done = subprocess.run(command, env=env, check=False)
            if done.returncode != 0 or not path.exists():
                results["cells"][cell] = {"skipped": f"the child exited with {done.returncode}"}
                continue
            measured = json.loads(path.read_text())
            if device == "gpu" and not measured["gpus"]:
                results["cells"][cell] = {"skipped": "TensorFlow finds no GPU on this machine"}
                continue
            results["cells"][cell] = measured
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=1))
    return results


def table(results: dict) -> str:
    lines = ["| model | batch | " + " | ".join(results["cells"]) + " |"]
    lines.append("|---|---:|" + "---:|" * len(results["cells"]))
    for name in MODELS:
        for batch in BATCH_SIZES:
            cells = []
            for cell in results["cells"].values():
                figures = cell.get("models", {}).get(name, {}).get("by_batch", {}).get(str(batch))
                cells.append(
                    f"{figures['events_per_sec']:,.0f}/s ({figures['median_ms']:.2f} ms)" if figures else "skipped"
                )
            lines.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4))
    for ax, name in zip(axes, MODELS):
        for cell, figures in results["cells"].items():
            by_batch = figures.get("models", {}).get(name, {}).get("by_batch")
            if by_batch:
                ax.plot(BATCH_SIZES, [by_batch[str(b)]["events_per_sec"] for b in BATCH_SIZES], marker="o", label=cell)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="events/s", title=f"{name}: in-process scoring")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> None:
    parser = cli.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--out", default="benchmarks/results/gpu")
    parser.add_argument("--secs", type=float, default=3.0, help="seconds of scoring per batch size and cell")
    parser.add_argument("--plot", metavar="GPU_JSON", help="only draw the plot of an earlier run's gpu.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(os.path.abspath(args.model_dir), args.copies, args.secs, args.out)
        return
    if args.plot:
        results = json.loads(Path(args.plot).read_text())
        out_dir = Path(args.plot).parent
    else:
        out_dir = Path(args.out)
        results = run(os.path.abspath(args.model_dir), out_dir, args.secs)
    print(table(results))
    for cell, figures in results["cells"].items():
        if "skipped" in figures:
            print(f"{cell}: skipped: {figures['skipped']}")
    drawn = plot(results, out_dir / "gpu.png")
    print(f"wrote {out_dir / 'gpu.json'}" + (f" and {out_dir / 'gpu.png'}" if drawn else " (no matplotlib: no plot)"))


if __name__ == "__main__":
    cli.run(main)
