"""The price model's recipe: a regressor of log1p(price) trained on squared error and judged by RMSLE against
a category-median baseline.

`PriceModel.serve` maps raw features to `suggested_price` in EUR. It reads the category path at three depths,
the brand, the condition, and the words in the name and description (`PATTERNS` flags the ones that move a
second-hand price: "new with tags", "vintage", "for parts", ...).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model_handlers import interface as mi
from training import layers, metrics
from training.recipe import Built, Hyperparameters, Recipe, Split

PATTERNS = {
    "new_with_tags": r"\bnwt\b|\bbnwt\b|new with tags",
    "brand_new": r"brand new|never used|never worn|new in (?:box|package)|\bnib\b",
    "vintage": r"vintage|retro|\b[5-9]0s\b",
    "bundle": r"bundle|\blot of\b|\bset of\b",
    "authentic": r"authentic|genuine",
    "for_parts": r"for parts|broken|not working|repair",
    "sealed": r"sealed",
    "worn": r"stain|damage|heavily used|pilling|visible wear|as is",
}
N_NUMERIC = 5 + len(PATTERNS)  # the columns of PriceModel.raw_numeric
MAX_PRICE = 1_000_000.0  # serve clips the suggestion to [0, MAX_PRICE] EUR


class PriceModel(layers.Net):
    """Listing -> log1p(price); `serve` maps raw features to `suggested_price` in EUR."""

    def __init__(self, seed: int, mean_log_price: float):
        super().__init__(seed, name="price_model")
        self.category1_embedding = self._table(256, 8, "category1_embedding")
        self.category2_embedding = self._table(1024, 8, "category2_embedding")
        self.category3_embedding = self._table(4096, 16, "category3_embedding")
        self.brand_embedding = self._table(4096, 16, "brand_embedding")
        self.name_embedding = self._table(16384, 16, "name_embedding")
        self.description_embedding = self._table(16384, 16, "description_embedding")
        width = N_NUMERIC + 5 + 8 + 8 + 16 + 16 + 16 + 16
        # Starting at the mean log-price spares the first epoch from learning the level.
        self.layers = self._dense([width, 64, 32, 1], mean_log_price, "mlp")

    @staticmethod
    def _description(x):
        # Mercari's placeholder for "no description" says nothing about the item.
        description = layers.fold(x["item_description"])
        return tf.where(tf.equal(description, "no description yet"), "", description)

    def raw_numeric(self, x):
        name = tf.strings.lower(x["name"], encoding="utf-8")
        description = self._description(x)
        text = tf.strings.join([name, description], separator=" \n ")
        columns = [
            tf.cast(tf.equal(x["shipping"], 1), tf.float32),
            layers.log1p_length(name),
            layers.log1p_length(description),
            tf.cast(tf.equal(description, ""), tf.float32),
            tf.cast(tf.equal(tf.strings.strip(x["brand_name"]), ""), tf.float32),
        ] + [layers.any_match(text, pattern) for pattern in PATTERNS.values()]
        return tf.stack(columns, axis=1)

    def encoded(self, x):
        category = layers.fold(x["category_name"])
        level1 = tf.strings.regex_replace(category, r"/.*", "")
        level2 = tf.strings.regex_replace(category, r"^([^/]*/[^/]*).*$", r"\1")
        return [
            tf.one_hot(tf.clip_by_value(x["item_condition_id"], 1, 5) - 1, 5, dtype=tf.float32),
            layers.embed(self.category1_embedding, level1),
            layers.embed(self.category2_embedding, level2),
            layers.embed(self.category3_embedding, category),
            layers.embed(self.brand_embedding, layers.fold(x["brand_name"])),
            layers.bag(self.name_embedding, layers.normalise_text(x["name"]), 32),
            layers.bag(self.description_embedding, layers.normalise_text(self._description(x)), 64),
        ]

    def serve(self, x):
        log_price = tf.clip_by_value(self.logits(x), 0.0, float(np.log1p(MAX_PRICE)))
        return {"suggested_price": tf.math.expm1(log_price)}


def category_median_baseline(train_events, train_prices, test_events) -> np.ndarray:
    """What the model must beat: the median training price of the event's category_name (overall median if new)."""
    by_category: dict[str, list[float]] = {}
    for event, price in zip(train_events, train_prices):
        by_category.setdefault(event["category_name"], []).append(price)
    medians = {c: float(np.median(p)) for c, p in by_category.items()}
    fallback = float(np.median(train_prices))
    return np.array([medians.get(e["category_name"], fallback) for e in test_events])


class PriceRecipe(Recipe):
    interface = mi.PRICE
    default_n = 100_000
    hyperparameters = Hyperparameters(epochs=6, batch_size=512, learning_rate=3e-3)

    def build(self, columns: dict, labels: np.ndarray, seed: int) -> Built:
        model = PriceModel(seed, float(np.mean(np.log1p(labels))))

        def loss(batch, y):
            return tf.reduce_mean(tf.square(model.logits(batch) - y))

        # Squared error on log1p(price) is what RMSLE, the judge, measures.
        return Built(model, loss, np.log1p(labels))

    def judge(self, split: Split, predictions: np.ndarray) -> dict:
        baseline = category_median_baseline(split.train_events, split.y_train, split.test_events)
        rmsle = metrics.rmsle(split.y_test, predictions)
        baseline_rmsle = metrics.rmsle(split.y_test, baseline)
        return {
            "rmsle": rmsle,
            "baseline_rmsle": baseline_rmsle,
            "baseline": "median price of the event's category_name in the training data",
            "rmsle_ratio_to_baseline": rmsle / baseline_rmsle,
        }

    def summary(self, quality: dict) -> str:
        return (
            f"held-out RMSLE {quality['rmsle']:.4f} vs category-median baseline "
            f"{quality['baseline_rmsle']:.4f} (ratio {quality['rmsle_ratio_to_baseline']:.3f})"
        )


RECIPE = PriceRecipe()
