"""Backfill throughput through the real pipeline on the DirectRunner (FnApiRunner for batch): JSON Lines in and out.

Each run is a fresh `benchmarks.backfill_worker` process. A big and a small input separate the fixed cost
(TensorFlow import, model load, pipeline start) from the steady state:

    steady events/s = (N_big - N_small) / (t_big - t_small)      fixed secs = t_small - N_small / steady
"""

from __future__ import annotations

import glob
import shutil
import time
from pathlib import Path

from benchmarks.common import ChildError, log, median, python_module, run_json_child
from localdev.traffic import make_traffic
from model_handlers.interface import MODELS


class OutputMismatch(AssertionError):
    pass


def write_inputs(workdir: Path, model: str, sizes: list[int], seed: int = 11) -> dict[int, Path]:
    """One JSON Lines file per size, all valid events; smaller files are prefixes of the biggest."""
    lines = [m.payload for m in make_traffic(MODELS[model], max(sizes), malformed_fraction=0.0, seed=seed)]
    paths = {}
    for n in sorted(set(sizes)):
        path = workdir / f"{model}-{n}.jsonl"
        with open(path, "wb") as f:
            f.write(b"\n".join(lines[:n]) + b"\n")
        paths[n] = path
    return paths


def count_lines(prefix: Path) -> int:
    total = 0
    for name in glob.glob(f"{prefix}*"):
        with open(name, "rb") as f:
            total += sum(1 for _ in f)
    return total


def count_records(prefix: Path) -> int:
    """Records in the TFRecord files at `prefix*` (uncompressed), read by their framing: length (8 bytes), its
    CRC (4), data, data CRC (4). No TensorFlow import in the benchmark's own process."""
    total = 0
    for name in glob.glob(f"{prefix}*"):
        with open(name, "rb") as f:
            while header := f.read(12):
                f.seek(int.from_bytes(header[:8], "little") + 4, 1)
                total += 1
    return total


def run_once(
    model: str,
    input_path: Path,
    n_events: int,
    model_dir: str | None,
    workdir: Path,
    label: str,
    extra_args=(),
    timeout: float = 300,
    profile_out: Path | None = None,
) -> dict:
    out_dir = workdir / f"out-{label}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    json_out = workdir / f"{label}.json"
    command = python_module(
        "benchmarks.backfill_worker",
        f"--model={model}",
        f"--json_out={json_out}",
        *([f"--profile_out={profile_out}"] if profile_out else []),
        "--",
        f"--input={input_path}",
        f"--output={out_dir}/predictions",
        f"--dead_letter_output={out_dir}/dead-letters",
        *([f"--model_dir={model_dir}"] if model_dir else []),
        *extra_args,  # None: extra_args say where the model is
    )
    t0 = time.perf_counter()
    result = run_json_child(command, workdir / "logs" / f"{label}.log", json_out, timeout)
    result["process_wall_secs"] = time.perf_counter() - t0
    count_predictions = count_records if "--output_format=prediction_log" in extra_args else count_lines
    predictions, dead = count_predictions(out_dir / "predictions"), count_lines(out_dir / "dead-letters")
    result.update(n_events=n_events, predictions=predictions, dead_letters=dead, extra_args=list(extra_args))
    if predictions != n_events or dead != 0:
        raise OutputMismatch(
            f"backfill {label}: {n_events} valid events in, {predictions} predictions and {dead} dead letters out; "
            f"log {workdir / 'logs' / f'{label}.log'}"
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    result["events_per_sec"] = n_events / result["run_wait_secs"]
    return result


def steady_state(n_small: int, t_small: float, n_big: int, t_big: float) -> tuple[float | None, float | None]:
    """(steady events/s, fixed secs) from two runs; None when the big run was not slower (noise)."""
    if t_big <= t_small:
        return None, None
    steady = (n_big - n_small) / (t_big - t_small)
    return steady, t_small - n_small / steady


def run_suite(model: str, model_dir: str, workdir: Path, n_small: int, n_big: int, repeats: int) -> dict:
    paths = write_inputs(workdir, model, [n_small, n_big])
    samples = {"small": [], "big": []}
    for r in range(repeats):
        for kind, n in (("small", n_small), ("big", n_big)):
            result = run_once(model, paths[n], n, model_dir, workdir, f"backfill-{model}-{n}-r{r}")
            samples[kind].append(result)
            log(
                f"backfill {model} N={n:,} repeat {r + 1}/{repeats}: run+wait {result['run_wait_secs']:.2f}s "
                f"({result['events_per_sec']:,.0f} events/s end to end), outputs verified"
            )
    t_small = median([s["run_wait_secs"] for s in samples["small"]])
    t_big = median([s["run_wait_secs"] for s in samples["big"]])
    steady, fixed = steady_state(n_small, t_small, n_big, t_big)
    per_repeat = [
        steady_state(n_small, s["run_wait_secs"], n_big, b["run_wait_secs"])[0]
        for s, b in zip(samples["small"], samples["big"])
    ]
    return {
        "model": model,
        "n_small": n_small,
        "n_big": n_big,
        "repeats": repeats,
        "samples": samples,
        "median_secs_small": t_small,
        "median_secs_big": t_big,
        "end_to_end_events_per_sec": n_big / t_big,
        "fixed_secs": fixed,
        "steady_events_per_sec": steady,
        "steady_events_per_sec_per_repeat": per_repeat,
        "median_process_wall_secs_big": median([s["process_wall_secs"] for s in samples["big"]]),
    }


VARIANTS = {
    "multi_processing_2": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "multi_threading_2": ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
}


def run_variants(model: str, model_dir: str, workdir: Path, n_small: int, n_big: int) -> dict:
    """Each variant once at N_small and N_big (fresh processes), for its end-to-end and steady-state rates."""
    paths = write_inputs(workdir, model, [n_small, n_big])
    results = {}
    for name, extra in VARIANTS.items():
        try:
            small = run_once(
                model, paths[n_small], n_small, model_dir, workdir, f"variant-{model}-{name}-{n_small}", extra
            )
            big = run_once(model, paths[n_big], n_big, model_dir, workdir, f"variant-{model}-{name}-{n_big}", extra)
            steady, fixed = steady_state(n_small, small["run_wait_secs"], n_big, big["run_wait_secs"])
            result = {
                "extra_args": extra,
                "samples": {"small": [small], "big": [big]},
                "events_per_sec": big["events_per_sec"],
                "steady_events_per_sec": steady,
                "fixed_secs": fixed,
            }
            log(
                f"backfill {model} variant {name}: N={n_big:,} run+wait {big['run_wait_secs']:.2f}s "
                f"({big['events_per_sec']:,.0f} events/s end to end), fixed {_fmt(fixed, '.1f')}s, "
                f"steady {_fmt(steady, ',.0f')} events/s, outputs verified"
            )
        except (ChildError, OutputMismatch) as error:  # a variant that fails is recorded, not fatal
            result = {"error": str(error)[-2000:], "extra_args": extra}
            log(f"backfill {model} variant {name}: FAILED ({str(error).splitlines()[0]})")
        results[name] = result
    return results


def run_large(model: str, model_dir: str, workdir: Path, n: int, extra_args: list[str]) -> dict:
    """One end-to-end run at a backfill's real size, where the fixed cost is amortised."""
    path = write_inputs(workdir, model, [n], seed=12)[n]
    result = run_once(model, path, n, model_dir, workdir, f"large-{model}-{n}", extra_args, timeout=900)
    return {"n_events": n, "extra_args": extra_args, "events_per_sec": result["events_per_sec"], "run": result}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
