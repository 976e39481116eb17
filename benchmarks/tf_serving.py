"""TF Serving over gRPC against in-process inference: what batching and requests in flight buy.

    python -m benchmarks.tf_serving --model_dir=DIR --target=HOST:PORT --json_out=F [--secs=2]

For each model, batch size (1, 32, 256) and number of batches in flight K (1, 4), K threads share one loaded model
(in_process, SavedModelHandler) or one gRPC client (tf_serving, TFServingHandler with max_in_flight=K), as the
threads of a Beam worker share them through RunInference, and call the handler's real `run_inference` on prepared
batches of validated events for a fixed time. Reported per cell: events/s, and batch latency p50/p99 as each
caller sees it. This isolates the path to the model: parsing, Beam and I/O, the same on both paths, are measured
by the backfill section. The server is the local TF Serving stand-in (localdev/model_server.py) on the same cores,
so here the gRPC path pays for both client and server.

`run_grid` starts the server and runs this module in a fresh process; `table` and `plot` render the results.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from benchmarks.common import log, percentile, python_module, ratio, run_json_child
from plumbing import cli

BATCH_SIZES = (1, 32, 256)
IN_FLIGHT = (1, 4)
PATHS = ("in_process", "tf_serving")


def _measure(handler, model, batches: list, in_flight: int, secs: float) -> dict:
    """K threads calling run_inference until `secs` have passed; every batch's latency recorded."""
    latencies: list[list[float]] = [[] for _ in range(in_flight)]
    events = [0] * in_flight
    stop = time.perf_counter() + secs

    def caller(index: int) -> None:
        i = index
        while time.perf_counter() < stop:
            batch = batches[i % len(batches)]
            started = time.perf_counter()
            results = handler.run_inference(batch, model)
            latencies[index].append(time.perf_counter() - started)
            events[index] += len(results)
            i += in_flight

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [x for per_thread in latencies for x in per_thread]
    return {
        "events": sum(events),
        "secs": elapsed,
        "events_per_sec": sum(events) / elapsed,
        "batches": len(flat),
        "batch_latency_p50_ms": percentile(flat, 50) * 1000,
        "batch_latency_p99_ms": percentile(flat, 99) * 1000,
    }


def main(argv=None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--target", required=True, help="the TF Serving stand-in, host:port")
    parser.add_argument("--json_out", required=True)
    parser.add_argument("--secs", type=float, default=2.0, help="measuring time per cell")
    args = parser.parse_args(argv)

    from model_handlers.interface import MODELS
    from model_handlers.saved_model import SavedModelHandler
    from model_handlers.tf_serving import TFServingHandler
    from training.data import generate

    cells = []
    for name in ("fraud", "price"):
        interface = MODELS[name]
        events, _ = generate(interface, 4096, seed=31)
        rows = [{k: v for k, v in e.items() if k != "event_id"} for e in events]
        for in_flight in IN_FLIGHT:
            handlers = {
                "in_process": SavedModelHandler(interface, args.model_dir),
                "tf_serving": TFServingHandler(interface, args.target, max_in_flight=in_flight),
            }
            for path, handler in handlers.items():
                model = handler.load_model()
                for batch_size in BATCH_SIZES:
                    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
                    handler.run_inference(batches[0], model)  # first call outside the clock
                    cell = {
                        "model": name,
                        "path": path,
                        "batch_size": batch_size,
                        "in_flight": in_flight,
                        **_measure(handler, model, batches, in_flight, args.secs),
                    }
                    cells.append(cell)
                    log(
                        f"  {name} {path:10s} batch {batch_size:3d} in flight {in_flight}: "
                        f"{cell['events_per_sec']:9,.0f} events/s, batch p50 {cell['batch_latency_p50_ms']:.1f} ms, "
                        f"p99 {cell['batch_latency_p99_ms']:.1f} ms"
                    )
    Path(args.json_out).write_text(json.dumps({"cells": cells, "secs_per_cell": args.secs}))


def run_grid(model_dir: str, workdir: Path, secs: float) -> dict:
    """Starts the TF Serving stand-in, measures the grid in a fresh process, returns cells and ratios."""
    from localdev.model_server import ModelServerProcess
    from localdev.pubsub_emulator import free_port

    with ModelServerProcess(model_dir, free_port(), workdir / "logs" / "model-server.log") as server:
        grid = run_json_child(
            python_module(
                "benchmarks.tf_serving",
                f"--model_dir={model_dir}",
                f"--target={server.target}",
                f"--json_out={workdir / 'tf_serving.json'}",
                f"--secs={secs}",
            ),
            workdir / "logs" / "tf_serving.log",
            workdir / "tf_serving.json",
            timeout=900,
        )
    grid["ratios"] = ratios(grid["cells"])
    return grid


def ratios(cells: list[dict]) -> dict:
    rate = {(c["model"], c["path"], c["batch_size"], c["in_flight"]): c["events_per_sec"] for c in cells}
    out = {}
    for (model, path, batch, in_flight), value in rate.items():
        if path == "tf_serving":
            out[f"{model}_b{batch}_k{in_flight}_tf_serving_over_in_process"] = ratio(
                value, rate.get((model, "in_process", batch, in_flight))
            )
        if in_flight == IN_FLIGHT[-1]:
            out[f"{model}_{path}_b{batch}_k{in_flight}_over_k1"] = ratio(value, rate.get((model, path, batch, 1)))
        if batch == BATCH_SIZES[-1]:
            out[f"{model}_{path}_k{in_flight}_b{batch}_over_b1"] = ratio(value, rate.get((model, path, 1, in_flight)))
    return out


def table(grid: dict) -> str:
    by = {(c["model"], c["path"], c["batch_size"], c["in_flight"]): c for c in grid["cells"]}
    lines = [
        "path to the model: events/s (batch latency p50 / p99 ms), K threads sharing one model or client",
        f"  {'model':6s} {'batch':>5s} {'in flight':>9s} {'in_process':>28s} {'tf_serving (gRPC)':>28s} {'gRPC/local':>10s}",
    ]
    for model in sorted({c["model"] for c in grid["cells"]}):
        for batch in BATCH_SIZES:
            for in_flight in IN_FLIGHT:
                local, remote = (
                    by.get((model, "in_process", batch, in_flight)),
                    by.get((model, "tf_serving", batch, in_flight)),
                )
                if local and remote:
                    lines.append(
                        f"  {model:6s} {batch:5d} {in_flight:9d} {_cell(local):>28s} {_cell(remote):>28s} "
                        f"{remote['events_per_sec'] / local['events_per_sec']:9.2f}x"
                    )
    return "\n".join(lines)


def _cell(cell: dict) -> str:
    return f"{cell['events_per_sec']:,.0f} ({cell['batch_latency_p50_ms']:.1f} / {cell['batch_latency_p99_ms']:.1f})"


def plot(grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({c["model"] for c in grid["cells"]})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for path_name, marker in (("in_process", "o"), ("tf_serving", "s")):
            for in_flight, style in zip(IN_FLIGHT, ("-", "--")):
                points = sorted(
                    (c["batch_size"], c["events_per_sec"])
                    for c in grid["cells"]
                    if c["model"] == model and c["path"] == path_name and c["in_flight"] == in_flight
                )
                if points:
                    ax.plot(*zip(*points), style, marker=marker, label=f"{path_name}, {in_flight} in flight")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch size",
            ylabel="events/s",
            title=f"{model}: path to the model, events/s",
        )
        ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main)
