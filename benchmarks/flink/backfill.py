"""The same JSON Lines files through the fraud backfill on Flink (batch) and on the DirectRunner, each run a fresh
process: end to end, steady state and fixed cost from two sizes, as benchmarks.backfill computes them."""

from __future__ import annotations

from pathlib import Path

from benchmarks import backfill
from benchmarks.common import log, median, ratio
from benchmarks.flink.cluster import TaskManagerKeeper
from benchmarks.flink.knobs import MODEL


def run_backfill(
    flink,
    model_dir: str,
    workdir: Path,
    n_small: int,
    n_big: int,
    repeats: int,
    variants: bool,
    keeper: TaskManagerKeeper,
) -> dict:
    """The same files through the fraud backfill on the DirectRunner and on Flink (batch), each run a fresh
    process; medians of `repeats`; steady state and fixed cost from the two sizes (benchmarks.backfill)."""
    paths = backfill.write_inputs(workdir, MODEL, [n_small, n_big])
    runners = {"direct_runner": [], "flink": flink.pipeline_args(streaming=False)}
    samples: dict = {name: {"small": [], "big": []} for name in runners}
    for r in range(repeats):
        for name, extra in runners.items():
            for kind, n in (("small", n_small), ("big", n_big)):
                if name == "flink":
                    keeper.before_job()
                one = _run_once(
                    paths[n],
                    n,
                    model_dir,
                    workdir,
                    f"flink-backfill-{name}-{n}-r{r}",
                    extra,
                    f"backfill {name} N={n:,} repeat {r + 1}/{repeats}",
                )
                samples[name][kind].append(one)
    result: dict = {"n_small": n_small, "n_big": n_big, "repeats": repeats}
    for name in runners:
        t_small = median([s["run_wait_secs"] for s in samples[name]["small"]])
        t_big = median([s["run_wait_secs"] for s in samples[name]["big"]])
        steady, fixed = backfill.steady_state(n_small, t_small, n_big, t_big)
        result[name] = {
            "extra_args": runners[name],
            "samples": samples[name],
            "median_secs_small": t_small,
            "median_secs_big": t_big,
            "end_to_end_events_per_sec": n_big / t_big,
            "steady_events_per_sec": steady,
            "fixed_secs": fixed,
        }
    if variants:
        extra = [*runners["flink"], "--parallelism=2", "--sdk_worker_parallelism=2"]
        keeper.before_job()
        one = _run_once(
            paths[n_big],
            n_big,
            model_dir,
            workdir,
            f"flink-backfill-p2-{n_big}",
            extra,
            f"backfill flink --parallelism=2 N={n_big:,}",
        )
        result["flink_parallelism_2"] = {
            "extra_args": extra,
            "run": one,
            "end_to_end_events_per_sec": one["events_per_sec"],
        }
    result["flink_over_direct_runner_end_to_end"] = ratio(
        result["flink"]["end_to_end_events_per_sec"], result["direct_runner"]["end_to_end_events_per_sec"]
    )
    result["flink_over_direct_runner_steady"] = ratio(
        result["flink"]["steady_events_per_sec"], result["direct_runner"]["steady_events_per_sec"]
    )
    return result


def _run_once(path: Path, n: int, model_dir: str, workdir: Path, label: str, extra: list[str], what: str) -> dict:
    """One timed run in a fresh process (outputs verified by benchmarks.backfill), and its progress line."""
    one = backfill.run_once(MODEL, path, n, model_dir, workdir, label, extra, timeout=900)
    log(
        f"{what}: run+wait {one['run_wait_secs']:.1f}s ({one['events_per_sec']:,.0f} events/s end to end), "
        f"outputs verified"
    )
    return one
