"""The fraud model's recipe: a listing/transaction classifier trained on log loss and judged by ROC AUC.

`FraudModel.serve` maps raw features to `fraud_probability`. Its numeric columns compare the price with the
usual price of the listing's category (a table learned from the training data and frozen into the graph), flag
new, unrated or photo-less sellers, and match the scam phrases in `PATTERNS` in the title and description.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model_handlers import interface as mi
from training import layers, metrics
from training.recipe import Built, Hyperparameters, Recipe, Split

PATTERNS = {
    "off_platform_payment": r"wire transfer|western union|moneygram|gift ?cards?|bitcoin|crypto|deposit first",
    "contact_outside": r"whatsapp|telegram|e-?mail me|not through the app|text me",
    "pressure": r"urgent|asap|today only|must sell|need the money|abroad",
    "counterfeit": r"replica|1:1|aaa quality|\bcopy\b|looks original|\bfake\b",
    "hype": r"!!!|\bcheap\b",
}
CATEGORY_BUCKETS = 1024
N_NUMERIC = 13 + len(PATTERNS)  # the columns of FraudModel.raw_numeric


class FraudModel(layers.Net):
    """Listing/transaction -> fraud logit; `serve` maps raw features to `fraud_probability`."""

    def __init__(self, seed: int, base_rate: float, category_log_price: np.ndarray):
        super().__init__(seed, name="fraud_model")
        self.category_log_price = tf.constant(category_log_price.astype(np.float32))
        self.category_embedding = self._table(256, 4, "category_embedding")
        self.shipping_embedding = self._table(64, 4, "shipping_embedding")
        self.payment_embedding = self._table(64, 4, "payment_embedding")
        self.text_embedding = self._table(4096, 8, "text_embedding")
        width = N_NUMERIC + 4 + 4 + 4 + 8
        # Starting at the base rate's logit spares the first epoch from learning the prior.
        self.layers = self._dense([width, 32, 16, 1], float(np.log(base_rate / (1 - base_rate))), "mlp")

    def raw_numeric(self, x):
        price = tf.math.log1p(tf.maximum(x["price"], 0.0))
        category_bucket = tf.strings.to_hash_bucket_fast(layers.fold(x["category"]), CATEGORY_BUCKETS)
        expected = tf.gather(self.category_log_price, category_bucket)
        age = tf.cast(x["seller_account_age_days"], tf.float32)
        sales = tf.cast(x["seller_num_sales"], tf.float32)
        images = tf.cast(x["num_images"], tf.float32)
        rating = x["seller_rating"]
        title = tf.strings.lower(x["title"], encoding="utf-8")
        description = tf.strings.lower(x["description"], encoding="utf-8")
        text = tf.strings.join([title, description], separator=" \n ")
        columns = [
            price,
            price - expected,
            tf.math.log1p(tf.maximum(age, 0.0)),
            tf.cast(age < 30, tf.float32),
            tf.math.log1p(tf.maximum(sales, 0.0)),
            tf.cast(sales <= 0, tf.float32),
            rating,
            tf.cast(rating <= 0, tf.float32),
            tf.math.log1p(tf.maximum(images, 0.0)),
            tf.cast(images <= 1, tf.float32),
            tf.math.log1p(tf.maximum(x["buyer_seller_distance_km"], 0.0)),
            layers.log1p_length(x["title"]),
            layers.log1p_length(x["description"]),
        ] + [layers.any_match(text, pattern) for pattern in PATTERNS.values()]
        return tf.stack(columns, axis=1)

    def encoded(self, x):
        text = layers.normalise_text(tf.strings.join([x["title"], x["description"]], separator=" "))
        return [
            layers.embed(self.category_embedding, layers.fold(x["category"])),
            layers.embed(self.shipping_embedding, layers.fold(x["shipping_method"])),
            layers.embed(self.payment_embedding, layers.fold(x["payment_method"])),
            layers.bag(self.text_embedding, text, 48),
        ]

    def serve(self, x):
        return {"fraud_probability": tf.sigmoid(self.logits(x))}


def category_log_price(columns: dict) -> np.ndarray:
    """Median log1p(price) per category hash bucket in the training data (the overall median for empty buckets):
    the "usual price" a listing's price is compared with."""
    lp = np.log1p(np.maximum(columns["price"].astype(np.float64), 0))
    # The same folding and hashing as the graph's, so a bucket here is the bucket the model looks up.
    keys = np.array([c.decode("utf-8").strip().lower().encode("utf-8") for c in columns["category"]], dtype=object)
    buckets = tf.strings.to_hash_bucket_fast(keys, CATEGORY_BUCKETS).numpy()
    table = np.full(CATEGORY_BUCKETS, np.median(lp))
    for bucket in np.unique(buckets):
        table[bucket] = np.median(lp[buckets == bucket])
    return table


class FraudRecipe(Recipe):
    interface = mi.FRAUD
    default_n = 100_000
    hyperparameters = Hyperparameters(epochs=6, batch_size=512, learning_rate=3e-3)

    def build(self, columns: dict, labels: np.ndarray, seed: int) -> Built:
        base_rate = float(np.clip(labels.mean(), 1e-4, 0.5))
        model = FraudModel(seed, base_rate, category_log_price(columns))

        def loss(batch, y):
            return tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(y, tf.float32), logits=model.logits(batch))
            )

        return Built(model, loss, labels)

    def judge(self, split: Split, predictions: np.ndarray) -> dict:
        return {
            "roc_auc": metrics.roc_auc(split.y_test, predictions),
            "log_loss": metrics.log_loss(split.y_test, predictions),
            "positive_rate_test": float(split.y_test.mean()),
            "mean_probability_test": float(predictions.mean()),
        }

    def summary(self, quality: dict) -> str:
        return (
            f"held-out ROC AUC {quality['roc_auc']:.4f}, log loss {quality['log_loss']:.4f}, "
            f"positive rate {quality['positive_rate_test']:.4f}"
        )


RECIPE = FraudRecipe()
