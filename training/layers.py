"""The TensorFlow pieces both demo models are built from: text features, hashed embeddings and a small MLP.

Everything here works on raw feature tensors inside the graph, so the exported SavedModel carries its own
preprocessing and a client sends raw features. `Net` is the shape both models share (scaled numeric columns and
encoded categorical/text columns, concatenated into an MLP that yields one logit); each recipe's model fills in
its own columns. Weights come from a numpy RNG, so a seed fixes the initial model exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def any_match(text, pattern: str):
    """1.0 where `pattern` occurs anywhere in `text` (RE2, case already folded), else 0.0."""
    return tf.cast(tf.strings.regex_full_match(text, f"(?s).*(?:{pattern}).*"), tf.float32)


def normalise_text(text):
    """Lowercase (UTF-8 aware) and turn every run of non letters/digits into one space."""
    return tf.strings.regex_replace(tf.strings.lower(text, encoding="utf-8"), r"[^\p{L}\p{N}]+", " ")


def fold(value):
    """Strip and lowercase (UTF-8 aware): the key a categorical value is hashed by."""
    return tf.strings.lower(tf.strings.strip(value), encoding="utf-8")


def log1p_length(text):
    return tf.math.log1p(tf.cast(tf.strings.length(text), tf.float32))


def embed(table, key):
    """The row of `table` that `key` hashes to."""
    return tf.gather(table, tf.strings.to_hash_bucket_fast(key, table.shape[0]))


def bag(table, text, max_tokens: int):
    """Mean-by-sqrt(n) of hashed token embeddings of normalised text (first `max_tokens` tokens)."""
    tokens = tf.strings.split(text)[:, :max_tokens]
    ids = tf.strings.to_hash_bucket_fast(tokens.flat_values, table.shape[0])
    summed = tf.math.unsorted_segment_sum(tf.gather(table, ids), tokens.value_rowids(), tokens.nrows())
    counts = tf.cast(tokens.row_lengths(), tf.float32)
    return summed / tf.sqrt(tf.maximum(counts, 1.0))[:, None]


def mlp(layers, x):
    """Dense layers with ReLU between them; the last has one unit, returned as a rank-1 logit."""
    for i, (w, b) in enumerate(layers):
        x = tf.matmul(x, w) + b
        if i < len(layers) - 1:
            x = tf.nn.relu(x)
    return tf.squeeze(x, axis=1)


class Net(tf.Module):
    """A model over raw features: `raw_numeric` columns, standardised with constants from the training data, next
    to the `encoded` categorical/text columns, into the MLP in `self.layers`. Subclasses build their tables and
    layers in `__init__` (in a fixed order: each draws from the seeded RNG) and define `serve`."""

    def __init__(self, seed: int, name: str):
        super().__init__(name=name)
        self._rng = np.random.default_rng(seed)

    def raw_numeric(self, x):
        """[batch, n_numeric] float32 columns before scaling; `set_numeric_stats` learns their scale."""
        raise NotImplementedError

    def encoded(self, x) -> list:
        """The [batch, k] float32 columns that need no scaling (embeddings, one-hot codes)."""
        raise NotImplementedError

    def logits(self, x):
        return mlp(self.layers, tf.concat([self._scaled(self.raw_numeric(x)), *self.encoded(x)], axis=1))

    def set_numeric_stats(self, raw: np.ndarray):
        std = raw.std(axis=0)
        self.numeric_mean = tf.constant(raw.mean(axis=0).astype(np.float32))
        self.numeric_std = tf.constant(np.where(std < 1e-6, 1.0, std).astype(np.float32))

    def _scaled(self, raw):
        return (raw - self.numeric_mean) / self.numeric_std

    def _table(self, buckets: int, dim: int, name: str):
        return tf.Variable(self._rng.normal(0.0, 0.05, (buckets, dim)).astype(np.float32), name=name)

    def _dense(self, sizes: Sequence[int], out_bias: float, name: str):
        """Glorot-uniform weights; the output layer's bias starts at `out_bias` (the target's prior)."""
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w = self._rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
            b = np.full((fan_out,), out_bias if i == len(sizes) - 2 else 0.0, dtype=np.float32)
            layers.append((tf.Variable(w, name=f"{name}_w{i}"), tf.Variable(b, name=f"{name}_b{i}")))
        return layers
