"""Fit a recipe's freshly built model to its training columns.

First the numeric scaling constants are taken from the training data (they become graph constants, so serving
applies the same scaling), then Adam runs over seeded shuffles of mini-batches in a plain TF loop. Keras supplies
only the optimizer: the model stays a plain `tf.Module`, whose SavedModel loads with `tf.saved_model.load` and no
Keras (Beam's stock TF handler loads through Keras, which cannot read SavedModels under Keras 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from training.recipe import Built, Hyperparameters


def fit(built: Built, columns: dict, hyperparameters: Hyperparameters, seed: int, log: Callable) -> None:
    model = built.model
    all_columns = {name: tf.constant(col) for name, col in columns.items()}
    model.set_numeric_stats(model.raw_numeric(all_columns).numpy())
    all_targets = tf.constant(built.targets.astype(np.float32))

    variables = list(model.trainable_variables)
    optimizer = keras.optimizers.Adam(hyperparameters.learning_rate)
    optimizer.build(variables)  # create the slots now: variables cannot be created inside the traced step

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def step(index):
        batch = {name: tf.gather(col, index) for name, col in all_columns.items()}
        with tf.GradientTape() as tape:
            loss = built.loss(batch, tf.gather(all_targets, index))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(seed)
    n, size, epochs = len(built.targets), hyperparameters.batch_size, hyperparameters.epochs
    for epoch in range(epochs):
        started, order, losses = time.perf_counter(), rng.permutation(n), []
        for start in range(0, n, size):
            losses.append(float(step(tf.constant(order[start : start + size], dtype=tf.int64))))
        log(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} ({time.perf_counter() - started:.1f}s)")
