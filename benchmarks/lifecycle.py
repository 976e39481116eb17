"""The model lifecycle's cost: latency through a hot swap against the steady state in the same run, and the memory
held while two versions are loaded.

    python -m benchmarks.lifecycle --model_dir=models [--out=benchmarks/results] [--quick]

Builds a repository of its own from `--model_dir` (fraud 1, and 2 trained with another seed, once, in
`<out>/lifecycle-models`), then:

1. memory and batch latency, in a fresh process (`--part=handler`): the handler follows `stable` while the label
   moves between 1 and 2 every few seconds, the new version loading beside the serving one (and the old copy
   collected at the swap; a full collection alone is timed too). RSS (from
   /proc/self/status) after TensorFlow is imported, with one version loaded, right after the second has loaded
   beside it, and after each swap once the old copy is released (a copy that leaked would show as growth).
   Meanwhile one thread scores batches of 256 as fast as it can: batch latency while a version loads
   (`through a swap`) against batches with no load running (`steady`), p50/p99.
2. the streaming pipeline on the DirectRunner through the Pub/Sub emulator, with `--model_version_label=stable
   --model_refresh_secs=1`: events at a fixed rate, stable moved every few seconds; publish-to-prediction latency
   of events published within SWAP_WINDOW_SECS after a move (`through a swap`) against the rest (`steady`), p50/p99,
   and how long each move took to show in the predictions.

Writes OUT/lifecycle.json (every sample), OUT/lifecycle-summary.json (without the samples) and OUT/lifecycle.png,
and prints the figures. The machine is shared: read
the ratios of the same run. Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import log, machine_facts, percentile, python_module, ratio, run_json_child
from plumbing import cli

# Latency of events published this long after a label moved counts as "through a swap": the refresh interval, the
# load beside the serving copy, and the batches in flight.
SWAP_WINDOW_SECS = 4.0
PROFILES = {
    "full": {"handler_swaps": 12, "swap_every_secs": 3.0, "stream_secs": 90, "rate": 40, "stream_swap_every_secs": 10},
    "quick": {"handler_swaps": 3, "swap_every_secs": 2.0, "stream_secs": 30, "rate": 40, "stream_swap_every_secs": 8},
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def lifecycle_repo(model_dir: Path, out: Path) -> Path:
    """fraud 1 (a copy of model_dir's) and 2 (trained with seed 1), kept under `out` between runs."""
    repo = out / "lifecycle-models"
    if not (repo / "fraud" / "1").exists():
        shutil.copytree(model_dir / "fraud" / "1", repo / "fraud" / "1")
    if not (repo / "fraud" / "2" / "saved_model.pb").exists():
        log("training fraud version 2 (seed 1) for the lifecycle benchmark, once")
        command = python_module(
            "training.train", f"--model_dir={repo}", "--models=fraud", "--model_version=2", "--seed=1"
        )
        subprocess.run(command, check=True, capture_output=True)
    return repo


def move_stable(repo: Path, version: int) -> None:
    from model_handlers import labels

    labels.write(str(repo), "fraud", {"stable": version}, expected=labels.read(str(repo), "fraud"))


# --- part 1: in one process ----------------------------------------------------------------------------------------


def handler_part(repo: Path, swaps: int, swap_every_secs: float) -> dict:
    import tensorflow  # noqa: F401  # the baseline includes TensorFlow itself

    from localdev.traffic import make_traffic
    from model_handlers.following import FollowedModel
    from model_handlers.interface import FRAUD
    from model_handlers.saved_model import SavedModelHandler

    move_stable(repo, 1)
    gc.collect()
    baseline = rss_mb()
    handler = SavedModelHandler(FRAUD, str(repo), version_label="stable")
    loads: list[dict] = []

    def load(version: int):
        start = time.monotonic()
        copy = handler.load_version(version)
        loads.append({"version": version, "start": start, "end": time.monotonic(), "rss_mb": rss_mb()})
        return copy

    follower = FollowedModel("fraud", handler._resolve, load)  # pylint: disable=protected-access
    one_version = rss_mb()
    rows = [json.loads(m.payload) for m in make_traffic(FRAUD, 256, 0.0, seed=5)]
    columns = FRAUD.to_columns([{k: v for k, v in row.items() if k != "event_id"} for row in rows])
    batches: list[tuple[float, float, int]] = []  # (start, seconds, version)
    stop = threading.Event()

    def score() -> None:
        while not stop.is_set():
            start = time.monotonic()
            version, _, _ = follower.predict(columns)
            batches.append((start, time.monotonic() - start, version))

    scorer = threading.Thread(target=score, daemon=True)
    scorer.start()
    after_release = []
    swaps_at: list[tuple[float, float]] = []  # each refresh: the load beside, the swap, the old copy collected
    time.sleep(swap_every_secs)
    for i in range(swaps):
        move_stable(repo, 2 if i % 2 == 0 else 1)
        begin = time.monotonic()
        follower.refresh()  # loads beside the serving copy, swaps, collects the old: what the follower's thread does
        swaps_at.append((begin, time.monotonic()))
        after_release.append(rss_mb())
        time.sleep(swap_every_secs)
    # What a swap's collection of the old copy costs on its own: a full collection, nothing to free.
    begin = time.monotonic()
    gc.collect()
    full_collection_secs = time.monotonic() - begin
    stop.set()
    scorer.join()

    def overlaps_a_load(start: float, seconds: float) -> bool:
        return any(start < end and start + seconds > begin for begin, end in swaps_at)

    through = [s * 1000 for start, s, _ in batches if overlaps_a_load(start, s)]
    steady = [s * 1000 for start, s, _ in batches if not overlaps_a_load(start, s)]
    return {
        "rss_mb": {
            "tensorflow_imported": baseline,
            "one_version": one_version,
            "two_versions": [item["rss_mb"] for item in loads[1:]],
            "after_release": after_release,
        },
        "loads_secs": [item["end"] - item["start"] for item in loads],
        "refresh_secs": [end - begin for begin, end in swaps_at],
        "full_collection_secs": full_collection_secs,
        "batch_ms": {"through_a_swap": through, "steady": steady},
        "batch_size": len(rows),
    }


# --- part 2: the streaming pipeline ---------------------------------------------------------------------------------


def streaming_part(repo: Path, logs: Path, stream_secs: float, rate: float, swap_every_secs: float) -> dict:
    from localdev.pubsub_emulator import PubsubEmulator
    from localdev.streaming import StreamingRun
    from localdev.traffic import make_traffic
    from model_handlers.interface import FRAUD

    move_stable(repo, 1)
    messages = make_traffic(FRAUD, int(stream_secs * rate), 0.0, seed=17)
    args = ["--model_version_label=stable", "--model_refresh_secs=1"]
    moves: list[tuple[float, int]] = []  # (wall time, version)
    with PubsubEmulator(project="bench-project", log_path=str(logs / "lifecycle-emulator.log")) as emulator:
        with StreamingRun(emulator, "fraud", repo, logs, args, prefix="lifecycle-") as run:
            run.publish(messages[:1])
            if not run.wait_for_outputs(1, timeout_secs=180):
                raise RuntimeError(f"the pipeline produced nothing; see {run.log_path}")
            stop = threading.Event()

            def mover() -> None:
                version = 1
                while not stop.wait(swap_every_secs):
                    version = 3 - version
                    move_stable(repo, version)
                    moves.append((time.time(), version))

            thread = threading.Thread(target=mover, daemon=True)
            thread.start()
            run.publish(messages[1:], rate_per_sec=rate)
            stop.set()
            thread.join()
            run.wait_for_outputs(len(messages), timeout_secs=120)
            predictions = run.predictions
    samples = []
    for p in predictions:
        if p.attributes.get("seq") == "0":
            continue
        published = int(p.attributes["published_at"]) / 1000
        since_move = min((published - t for t, _ in moves if t <= published), default=None)
        samples.append(
            {
                "published_at": published,
                "latency_ms": (p.received_at - published) * 1000,
                "version": p.body["model_version"],
                "through_a_swap": since_move is not None and since_move < SWAP_WINDOW_SECS,
            }
        )
    shown = []
    for moved_at, version in moves:
        after = [
            p.received_at for p in predictions if p.received_at >= moved_at and p.body["model_version"] == str(version)
        ]
        shown.append(min(after) - moved_at if after else None)
    return {"samples": samples, "moves": moves, "switch_shown_after_secs": shown, "events": len(messages)}


# --- the command ---------------------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}


def summarize(handler: dict, streaming: dict) -> dict:
    memory = handler["rss_mb"]
    base = memory["tensorflow_imported"]
    through = percentiles(handler["batch_ms"]["through_a_swap"])
    steady = percentiles(handler["batch_ms"]["steady"])
    stream_through = percentiles([s["latency_ms"] for s in streaming["samples"] if s["through_a_swap"]])
    stream_steady = percentiles([s["latency_ms"] for s in streaming["samples"] if not s["through_a_swap"]])
    shown = [s for s in streaming["switch_shown_after_secs"] if s is not None]
    return {
        "memory_mb": {
            "one_version": memory["one_version"] - base,
            "second_copy_adds": memory["two_versions"][0] - memory["one_version"],
            "two_versions_max": max(memory["two_versions"]) - base,
            "after_release_first": memory["after_release"][0] - base,
            "after_release_last": memory["after_release"][-1] - base,
            # Freed pages stay with the allocator and serve the next load: RSS plateaus rather than drops.
            "growth_per_swap_after_the_first": (
                (memory["after_release"][-1] - memory["after_release"][0]) / (len(memory["after_release"]) - 1)
                if len(memory["after_release"]) > 1
                else None
            ),
        },
        "handler_batch_ms": {
            "through_a_swap": through,
            "steady": steady,
            "p99_ratio": ratio(through["p99"], steady["p99"]),
        },
        "streaming_latency_ms": {
            "through_a_swap": stream_through,
            "steady": stream_steady,
            "p99_ratio": ratio(stream_through["p99"], stream_steady["p99"]),
        },
        "switch_shown_after_secs": {
            "median": percentile(shown, 50),
            "max": max(shown) if shown else None,
            "n": len(shown),
        },
        "swaps_not_shown": len(streaming["switch_shown_after_secs"]) - len(shown),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, memory) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    samples = results["streaming"]["samples"]
    start = min(s["published_at"] for s in samples)
    for through, colour, label in ((False, "tab:blue", "steady"), (True, "tab:orange", "through a swap")):
        chosen = [s for s in samples if s["through_a_swap"] == through]
        latency.scatter(
            [s["published_at"] - start for s in chosen], [s["latency_ms"] for s in chosen], s=4, c=colour, label=label
        )
    for moved_at, version in results["streaming"]["moves"]:
        latency.axvline(moved_at - start, color="grey", lw=0.8, ls="--")
        latency.text(moved_at - start, latency.get_ylim()[1] * 0.95, f"v{version}", fontsize=8)
    latency.set(
        xlabel="published at (s)",
        ylabel="publish -> prediction (ms)",
        yscale="log",
        title="streaming (DirectRunner), stable moved every few seconds",
    )
    latency.legend(loc="upper left")
    rss = results["handler"]["rss_mb"]
    base = rss["tensorflow_imported"]
    swaps = range(1, len(rss["after_release"]) + 1)
    memory.axhline(rss["one_version"] - base, color="tab:blue", label="one version")
    memory.plot(swaps, [x - base for x in rss["two_versions"]], "o-", color="tab:orange", label="two (the next loaded)")
    memory.plot(
        swaps, [x - base for x in rss["after_release"]], "x--", color="tab:green", label="after the old is released"
    )
    memory.set(
        xlabel="swap", ylabel="RSS above TensorFlow imported (MiB)", title="memory through swaps, fraud", ylim=(0, None)
    )
    memory.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="fewer swaps, a 30 s stream")
    parser.add_argument("--part", choices=["handler"], help=argparse.SUPPRESS)  # the child process's part
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--json_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    if args.part == "handler":
        result = handler_part(Path(args.repo), profile["handler_swaps"], profile["swap_every_secs"])
        Path(args.json_out).write_text(json.dumps(result))
        return 0

    out = Path(args.out)
    logs = out / "logs-lifecycle"
    logs.mkdir(parents=True, exist_ok=True)
    repo = lifecycle_repo(Path(args.model_dir), out)
    log(f"lifecycle benchmark ({'quick' if args.quick else 'full'}) on {repo}; logs in {logs}")
    log(f"memory and batch latency through {profile['handler_swaps']} swaps (fresh process)")
    handler = run_json_child(
        python_module(
            "benchmarks.lifecycle",
            "--part=handler",
            f"--repo={repo}",
            f"--json_out={logs / 'handler.json'}",
            *(["--quick"] if args.quick else []),
        ),
        logs / "handler.log",
        logs / "handler.json",
        timeout=600,
    )
    log(
        f"streaming for {profile['stream_secs']} s at {profile['rate']}/s, stable moved every "
        f"{profile['stream_swap_every_secs']} s"
    )
    streaming = streaming_part(repo, logs, profile["stream_secs"], profile["rate"], profile["stream_swap_every_secs"])
    results = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.lifecycle", *(argv or sys.argv[1:])]),
        "machine": machine_facts(),
        "profile": profile,
        "swap_window_secs": SWAP_WINDOW_SECS,
        "handler": handler,
        "streaming": streaming,
    }
    results["summary"] = summarize(handler, streaming)
    (out / "lifecycle.json").write_text(json.dumps(results, indent=1))
    # Without the per-batch and per-event samples: small enough to keep beside the README's figures.
    summary = {key: value for key, value in results.items() if key not in ("handler", "streaming")}
    summary["handler"] = {key: value for key, value in handler.items() if key != "batch_ms"}
    summary["streaming"] = {key: value for key, value in streaming.items() if key != "samples"}
    (out / "lifecycle-summary.json").write_text(json.dumps(summary, indent=1))
    plot(results, out / "lifecycle.png")
    print(json.dumps(results["summary"], indent=2))
    log(f"wrote {out / 'lifecycle.json'} and {out / 'lifecycle.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
