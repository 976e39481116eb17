"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A model repository with both demo models (fraud, price) at version 1, trained once per test session.

    Layout: <model_dir>/<name>/1/ (TF Serving's). Takes about 30 s on 2 cores.
    """
    from training import train

    root = tmp_path_factory.mktemp("models")
    train.build(root, names=("fraud", "price"), version=1, force=False, seed=0)
    return root


@pytest.fixture(scope="session")
def emulator():
    """The real Pub/Sub emulator on a free loopback port for the whole session; PUBSUB_EMULATOR_HOST points at it.

    No skip: where gcloud or Java is missing this fails with the reason, in CI as anywhere else.
    """
    from localdev.pubsub_emulator import PubsubEmulator

    with PubsubEmulator(project="test-project") as running:
        yield running
