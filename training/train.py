"""Train the two demo models on synthetic data and export them in TF Serving's layout.

    python -m training.train --model_dir=DIR [--models=fraud,price] [--model_version=1] [--force] [--seed=0]

This is the entry point (`make models`); it decides what to build and reports. Each model lands in
`DIR/<name>/<version>/`: a TF SavedModel with the interface's serving signature and TF Serving's tf.Example
signature (see `training.export`), plus `assets.extra/tf_serving_warmup_requests` and `assets.extra/quality.json`
(held-out metrics and training parameters, see `training.evaluate`). All preprocessing (string normalisation,
hashing, word flags, numeric scaling with constants from the training data) is inside the graph, so a client sends
raw features. How each model is built, trained and judged is its recipe's business (`training.trainer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model_handlers import interface as mi
from plumbing import cli
from training import evaluate, runtime


def build(
    model_dir,
    names: Sequence[str] = ("fraud", "price"),
    version: int = 1,
    force: bool = False,
    seed: int = 0,
    n: dict | None = None,
    log: Callable = print,
) -> dict:
    """Train and export each named model to `<model_dir>/<name>/<version>/`; returns {name: quality dict}.

    A model whose version directory exists is skipped unless `force` (its recorded quality is returned, with
    "skipped": True). `n` overrides the number of generated events per model.
    """
    model_dir = Path(model_dir)
    results = {}
    for name in names:
        if name not in mi.MODELS:
            raise ValueError(f"unknown model {name!r}; known: {sorted(mi.MODELS)}")
        interface = mi.MODELS[name]
        final = model_dir / interface.name / str(int(version))
        if final.exists() and not force:
            log(f"{name}: {final} exists, skipped (use --force to rebuild)")
            results[name] = {**evaluate.read_quality(final), "skipped": True}
            continue
        results[name] = _train(interface, int(version), seed, (n or {}).get(name), final, log)
    return results


def _train(interface: mi.ModelInterface, version: int, seed: int, n: int | None, final: Path, log: Callable) -> dict:
    runtime.tensorflow()
    # Imported here, after the runtime is set up, and only when a model is trained: the trainer and the recipes
    # import TensorFlow at their top, and skipping an existing model (or `--help`) should not pay for that.
    from training import trainer

    return trainer.train_one(interface, version, seed, n, final, log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="model repository root: <model_dir>/<name>/<version>/")
    parser.add_argument("--models", default="fraud,price", help="comma-separated model names")
    parser.add_argument("--model_version", type=int, default=1, help="the version to build")
    parser.add_argument("--force", action="store_true", help="rebuild a version that already exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra/inter-op threads")
    parser.add_argument("--no_latency", action="store_true", help="skip the serving latency measurement")
    args = parser.parse_args(argv)
    runtime.tensorflow(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    results = build(args.model_dir, names, args.model_version, args.force, args.seed)
    print(f"built {', '.join(names)} in {time.perf_counter() - started:.1f}s")
    if not args.no_latency:
        for name in names:
            path = Path(args.model_dir) / name / str(args.model_version)
            latency = evaluate.measure_latency(path, mi.MODELS[name])
            print(
                f"{name}: serving_default median latency "
                + ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in latency.items())
            )
    return 0 if results else 1


if __name__ == "__main__":
    cli.run(main)
