"""The contract of a training recipe: everything training knows about one model, in one object.

A recipe names its model's interface, how many events it trains on, its hyperparameters, how to build the model
and its loss from the training columns, and how to judge the held-out predictions. `training.trainer` picks the
recipe from its registry by the model's name and runs the same steps for every model, so nothing outside a
recipe asks which model it is holding.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from model_handlers import interface as mi


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    # Field order is the order they are recorded in quality.json.
    epochs: int
    batch_size: int
    learning_rate: float


class Split(NamedTuple):
    """Generated events cut into the part the model learns from and the part it is judged on."""

    train_events: list
    test_events: list
    y_train: np.ndarray
    y_test: np.ndarray

    @classmethod
    def holdout(cls, events: list, labels: np.ndarray, seed: int, fraction: float) -> Split:
        """A seeded random `fraction` held out; both parts keep the generated order."""
        n = len(events)
        n_test = int(round(n * fraction))
        order = np.random.default_rng(seed).permutation(n)
        train_idx, test_idx = np.sort(order[n_test:]), np.sort(order[:n_test])
        return cls([events[i] for i in train_idx], [events[i] for i in test_idx], labels[train_idx], labels[test_idx])


class Built(NamedTuple):
    """A freshly initialised model, the loss training minimises, and the targets that loss compares against."""

    model: Any  # a training.layers.Net
    loss: Callable  # (batch of feature tensors, targets) -> scalar
    targets: np.ndarray


class Recipe(abc.ABC):
    interface: mi.ModelInterface
    default_n: int
    hyperparameters: Hyperparameters

    @abc.abstractmethod
    def build(self, columns: dict, labels: np.ndarray, seed: int) -> Built:
        """The model (deterministic for `seed`) and its loss, from the training columns and their labels."""

    @abc.abstractmethod
    def judge(self, split: Split, predictions: np.ndarray) -> dict:
        """Held-out quality of the exported model's `predictions` for `split.test_events`, for quality.json."""

    @abc.abstractmethod
    def summary(self, quality: dict) -> str:
        """One log line with the headline numbers of `judge`'s result."""
