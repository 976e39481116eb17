"""Train one model by its recipe and put its export in place: generate, split, fit, export, judge, publish.

The steps are the same for every model; what differs lives in the model's recipe (`training.fraud`,
`training.price`), chosen from `RECIPES` by the model's name. The held-out quality is measured on the exported
graph itself, reloaded as a server would load it, and written into the export before it is moved into place.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from model_handlers import interface as mi
from model_handlers import repository
from training import data, evaluate, export, fraud, price
from training.fit import fit
from training.recipe import Recipe, Split

HOLDOUT = 0.2
RECIPES: dict[str, Recipe] = {recipe.interface.name: recipe for recipe in (fraud.RECIPE, price.RECIPE)}


def recipe_for(interface: mi.ModelInterface) -> Recipe:
    if interface.name not in RECIPES:
        raise ValueError(f"no training recipe for model {interface.name!r}; have {sorted(RECIPES)}")
    return RECIPES[interface.name]


def train_one(interface: mi.ModelInterface, version: int, seed: int, n: int | None, final: Path, log: Callable) -> dict:
    """Train `interface`'s model on `n` generated events (the recipe's default when None), export it to `final`
    and return its quality record."""
    recipe = recipe_for(interface)
    n = recipe.default_n if n is None else n
    tf.random.set_seed(seed)
    started = time.perf_counter()
    events, labels = data.generate(interface, n, seed)
    split = Split.holdout(events, labels, seed, HOLDOUT)
    columns = interface.to_columns(split.train_events)
    log(
        f"{interface.name}: generated {n} events ({len(split.train_events)} train, {len(split.test_events)} held out) "
        f"in {time.perf_counter() - started:.1f}s"
    )

    built = recipe.build(columns, split.y_train, seed)
    fit(built, columns, recipe.hyperparameters, seed, log)

    with export.staged(final) as staging:
        export.save(built.model, interface, staging)
        signature = tf.saved_model.load(str(staging)).signatures[interface.signature_name]
        predictions = evaluate.predict(signature, interface, split.test_events)
        train_seconds = time.perf_counter() - started
        quality = {
            "model": interface.name,
            "version": version,
            "seed": seed,
            "n": n,
            "n_train": len(split.train_events),
            "n_test": len(split.test_events),
            **dataclasses.asdict(recipe.hyperparameters),
            "train_seconds": round(train_seconds, 2),
            **recipe.judge(split, predictions),
        }
        log(f"{interface.name}: {recipe.summary(quality)}")
        export.write_warmup_requests(staging / repository.WARMUP_FILE, interface, split.test_events)
        evaluate.write_quality(staging, quality)
    log(f"{interface.name}: exported {final} in {train_seconds:.1f}s total")
    return quality
