"""Shared pytest fixtures, and the suite's layers.

Layers, by what a test needs (pytest.ini declares the markers; `make test-unit` runs the first alone):
- unit: nothing outside the process; the whole layer runs in under a minute;
- `integration`: a real outside piece: trained models, the Pub/Sub emulator, a model server process, kubectl,
  Maven or hadolint;
- `flink` (and integration): a real local Flink cluster.
A test is marked by the fixtures it asks for, so a new test that needs a real piece cannot land in the unit layer.
"""

from __future__ import annotations

import pytest

INTEGRATION_FIXTURES = frozenset(
    {
        "model_dir",
        "emulator",
        "serving_repo",
        "model_server",
        "flink",
        "fraud_versions",
        "lifecycle_repo",
        "lifecycle_server",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "flink" in item.fixturenames or item.get_closest_marker("flink"):
            item.add_marker(pytest.mark.flink)
            item.add_marker(pytest.mark.integration)
        elif INTEGRATION_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.integration)


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
def fraud_versions(model_dir, tmp_path_factory):
    """fraud at version 1 (model_dir's), 2 (trained again with another seed: genuinely different answers) and a
    broken 3 (price's SavedModel under fraud's name: it loads, but does not match fraud's interface). Built once per
    session; tests copy it (lifecycle_repo) before moving labels."""
    import shutil

    from training import train

    root = tmp_path_factory.mktemp("fraud-versions")
    shutil.copytree(model_dir / "fraud" / "1", root / "fraud" / "1")
    train.build(root, names=("fraud",), version=2, force=False, seed=1)
    shutil.copytree(model_dir / "price" / "1", root / "fraud" / "3")
    return root


@pytest.fixture
def lifecycle_repo(fraud_versions, tmp_path):
    """A copy of fraud_versions of the test's own, labelled stable = 1."""
    import shutil

    from model_handlers import labels

    root = tmp_path / "lifecycle-repo"
    shutil.copytree(fraud_versions, root)
    labels.write(str(root), "fraud", {"stable": 1}, expected={})
    return root


@pytest.fixture(scope="session")
def emulator():
    """The real Pub/Sub emulator on a free loopback port for the whole session; PUBSUB_EMULATOR_HOST points at it.

    No skip: where gcloud or Java is missing this fails with the reason, in CI as anywhere else.
    """
    from localdev.pubsub_emulator import PubsubEmulator

    with PubsubEmulator(project="test-project") as running:
        yield running


SERVING_CONFIG = """
model_config_list {
  config {
    name: "fraud"
    base_path: "fraud"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "price"
    base_path: "price"
    model_platform: "tensorflow"
  }
}
"""


@pytest.fixture(scope="session")
def serving_repo(model_dir, tmp_path_factory):
    """A TF Serving model repository: fraud versions 1 and 2 (a copy of 1), price version 1, and a
    models.config in TF Serving's text format labelling fraud 1 `stable` and 2 `canary`."""
    import shutil

    root = tmp_path_factory.mktemp("serving")
    shutil.copytree(model_dir / "fraud" / "1", root / "fraud" / "1")
    shutil.copytree(model_dir / "fraud" / "1", root / "fraud" / "2")
    shutil.copytree(model_dir / "price" / "1", root / "price" / "1")
    (root / "models.config").write_text(SERVING_CONFIG)
    return root


@pytest.fixture(scope="session")
def model_server(serving_repo, tmp_path_factory):
    """The TF Serving stand-in as a real process for the session: `.target` is its host:port."""
    from localdev.model_server import ModelServerProcess
    from plumbing.ports import free_port

    log = tmp_path_factory.mktemp("model-server") / "server.log"
    with ModelServerProcess(
        serving_repo, free_port(), log, [f"--model_config_file={serving_repo}/models.config"]
    ) as server:
        yield server


@pytest.fixture
def lifecycle_server(fraud_versions, tmp_path):
    """The TF Serving stand-in serving fraud 1 and 2 (genuinely different), re-reading its models.config every half
    second, as TF Serving does with --model_config_file_poll_wait_seconds."""
    import shutil

    from lifecycle_checks import write_serving_config

    from localdev.model_server import ModelServerProcess
    from plumbing.ports import free_port

    root = tmp_path / "serving"
    for version in ("1", "2"):
        shutil.copytree(fraud_versions / "fraud" / version, root / "fraud" / version)
    config = root / "models.config"
    write_serving_config(config, stable=1, canary=2)
    args = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.5"]
    with ModelServerProcess(root, free_port(), tmp_path / "server.log", args) as server:
        server.config = config
        server.repo = root
        yield server
