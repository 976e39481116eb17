"""Blue-green model rollout and rollback through TF Serving's version labels, as a patch of its models.config.

TF Serving serves the versions models.config pins and resolves labels to them; clients ask for a label
(`stable`, or `canary` for a candidate beside it). A rollout is two config changes, because TF Serving refuses to
point an existing label at a version it has not loaded yet:

  1. load:   add version N to the model's pinned versions; wait until every TF Serving pod reports it AVAILABLE;
  2. switch: point the label at N. For `stable`, the old stable becomes `previous` and stays loaded, so that
             `--rollback` (stable back to previous) is one instant config change; versions no label names unload.

Each change is a merge patch of the ConfigMap's models.config carrying the resourceVersion that was read, so a
concurrent edit fails instead of being overwritten. TF Serving re-reads the file every
--model_config_file_poll_wait_seconds (the ConfigMap is mounted without subPath so the kubelet updates it).

A model repository's labels (`<model_dir>/<name>/labels.json`, which pipelines scoring in process follow) move in
the same two steps: the version must load, match the model's interface and run its warm-up requests, then the
label moves (repository_rollout); after a cluster rollout, repository_in_step copies models.config's labels there.
The moves themselves are model_handlers/labels.py's, the same for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deploy import MANIFESTS_DIR
from model_handlers.labels import LabelError, moved
from model_handlers.labels import rolled_back as labels_rolled_back

CONFIG_MAP = "tf-serving-models"
KEY = "models.config"
FIELD_MANAGER = "marketplace-deploy-rollout"
SOURCE_FILE = MANIFESTS_DIR / "base" / "tf-serving" / "models.config"
HEADER_END = "model_config_list {"


class RolloutError(RuntimeError):
    pass


def parse(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def render(config, header: str) -> str:
    """The config as text, after the original file's leading comment block (which says what the file is)."""
    from google.protobuf import text_format

    return header + text_format.MessageToString(config)


def header_of(text: str) -> str:
    index = text.find(HEADER_END)
    return text[:index] if index > 0 else ""


def _model(config, name: str):
    for model in config.model_config_list.config:
        if model.name == name:
            return model
    names = [m.name for m in config.model_config_list.config]
    raise RolloutError(f"models.config serves no model {name!r}; it serves {names}")


def _set_versions(model, versions) -> None:
    del model.model_version_policy.specific.versions[:]
    model.model_version_policy.specific.versions.extend(sorted(set(versions)))


def _prune(model) -> None:
    """Serve exactly the versions some label names: the rest unload."""
    _set_versions(model, model.version_labels.values())


def with_version_loaded(config, name: str, version: int):
    """Step 1: the model also serves `version` (no label changes)."""
    if version < 1:
        raise RolloutError(f"model versions are positive integers, got {version}")
    new = type(config)()
    new.CopyFrom(config)
    model = _model(new, name)
    _set_versions(model, [*model.model_version_policy.specific.versions, version])
    return new


def _with_labels(config, name: str, move: Callable[[dict[str, int]], dict[str, int]]):
    """A copy of the config whose model `name` has the labels `move` makes of its current ones (model_handlers.
    labels defines the moves, for TF Serving and model repositories alike), serving exactly the labelled versions."""
    new = type(config)()
    new.CopyFrom(config)
    model = _model(new, name)
    try:
        labels = move(dict(model.version_labels))
    except LabelError as error:
        raise RolloutError(f"{name}: {error}") from error
    model.version_labels.clear()
    model.version_labels.update(labels)
    _prune(model)
    return new


def with_label(config, name: str, label: str, version: int):
    """Step 2: `label` points at `version`; moving `stable` keeps the old one as `previous`."""
    if version not in _model(config, name).model_version_policy.specific.versions:
        raise RolloutError(f"version {version} of {name} is not loaded: load it first (step 1)")
    return _with_labels(config, name, lambda labels: moved(labels, label, version))


def rolled_back(config, name: str, label: str = "stable"):
    """stable goes back to previous (which is still loaded); for canary, the candidate is withdrawn."""
    return _with_labels(config, name, lambda labels: labels_rolled_back(labels, label))


def labels_of(config, name: str) -> dict[str, int]:
    return dict(_model(config, name).version_labels)


def patch_body(text: str, resource_version: str) -> dict:
    """A merge patch of models.config, valid only against the version of the ConfigMap that was read."""
    return {"metadata": {"resourceVersion": resource_version}, "data": {KEY: text}}


def read(core, namespace: str) -> tuple[str, str]:
    config_map = core.read_namespaced_config_map(CONFIG_MAP, namespace)
    return config_map.data[KEY], config_map.metadata.resource_version


def write(core, namespace: str, text: str, resource_version: str) -> str:
    try:
        updated = core.patch_namespaced_config_map(
            CONFIG_MAP,
            namespace,
            patch_body(text, resource_version),
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )
    except Exception as error:
        if getattr(error, "status", None) == 409:
            raise RolloutError("models.config changed while this rollout ran; run it again") from error
        raise
    return updated.metadata.resource_version


VersionState = Callable[[str, int], dict[str, str]]  # (model, version) -> {pod: state}


def wait_available(
    states: VersionState, name: str, version: int, timeout_s: float, interval_s: float = 10, sleep=time.sleep, log=print
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        by_pod = states(name, version)
        if by_pod and all(state == "AVAILABLE" for state in by_pod.values()):
            log(f"{name} version {version} is AVAILABLE on {len(by_pod)} pod(s)")
            return
        if time.monotonic() >= deadline:
            raise RolloutError(
                f"{name} version {version} is not AVAILABLE everywhere after {timeout_s:.0f} s: {by_pod}. It stays "
                "loaded without a label; check the version directory, or run the rollout again"
            )
        log(f"waiting for {name} version {version}: {by_pod or 'no ready TF Serving pods'}")
        sleep(interval_s)


def rollout(
    core,
    namespace: str,
    name: str,
    version: int | None,
    *,
    label: str = "stable",
    rollback: bool = False,
    states: VersionState | None = None,
    timeout_s: float = 600,
    interval_s: float = 10,
    sleep=time.sleep,
    log=print,
) -> str:
    """Runs a rollout (or rollback) against the live ConfigMap; returns the final models.config text."""
    text, resource_version = read(core, namespace)
    header = header_of(text)
    config = parse(text)
    if rollback:
        final = rolled_back(config, name, label)
        write(core, namespace, render(final, header), resource_version)
        log(f"{name}: {label} rolled back; labels now {dict(_model(final, name).version_labels)}")
        return render(final, header)
    loaded = with_version_loaded(config, name, version)
    if loaded != config:
        resource_version = write(core, namespace, render(loaded, header), resource_version)
        log(
            f"{name}: loading version {version} beside {sorted(_model(config, name).model_version_policy.specific.versions)}"
        )
    if states is not None:
        wait_available(states, name, version, timeout_s, interval_s, sleep, log)
    final = with_label(loaded, name, label, version)
    write(core, namespace, render(final, header), resource_version)
    log(f"{name}: {label} -> version {version}; labels now {dict(_model(final, name).version_labels)}")
    return render(final, header)


def check_loads(model_dir: str, name: str, version: int) -> None:
    """What TF Serving's AVAILABLE stands for, for a repository: the version loads, its signature matches the
    model's interface, and its warm-up requests run."""
    from model_handlers import repository
    from model_handlers.errors import UsageError
    from model_handlers.interface import MODELS
    from model_handlers.saved_model import LoadedSavedModel, warm_up

    path = repository.version_path(model_dir, name, version)
    try:
        warm_up(LoadedSavedModel(path, MODELS[name]), path)
    except UsageError as error:
        raise RolloutError(f"{name} version {version} cannot serve: {error}") from error


def repository_rollout(
    model_dir: str,
    name: str,
    version: int | None,
    *,
    label: str = "stable",
    rollback: bool = False,
    check: Callable[[str, str, int], None] | None = check_loads,
    log=print,
) -> dict[str, int]:
    """The same steps on a model repository's labels (model_handlers/labels.py): the version must exist and load
    (`check`) before a label moves to it; a rollback is one move. Returns the labels written."""
    from model_handlers import labels, repository

    try:
        current = labels.read(model_dir, name)
        available = repository.available_versions(model_dir, name)
        if rollback:
            new = labels.rolled_back(current, label)
        else:
            if version not in available:
                raise RolloutError(f"{name} has no version {version} under {model_dir!r}; it has {available}")
            if check is not None:
                check(model_dir, name, version)
                log(f"{name} version {version} loads and matches its interface")
            new = labels.moved(current, label, version)
        missing = sorted(set(new.values()) - set(available))
        if missing:
            raise RolloutError(f"{name}: labels {new} would name versions {missing}, which {model_dir!r} no longer has")
        labels.write(model_dir, name, new, expected=current)
    except labels.LabelError as error:
        raise RolloutError(f"{name}: {error}") from error
    log(f"{name}: labels in {labels.labels_path(model_dir, name)} now {new}")
    return new


def repository_in_step(model_dir: str, name: str, config_text: str, log=print) -> dict[str, int]:
    """After a cluster rollout: the repository's labels for `name` become models.config's."""
    from model_handlers import labels

    new = labels_of(parse(config_text), name)
    labels.write(model_dir, name, new, expected=labels.read(model_dir, name))
    log(f"{name}: labels in {labels.labels_path(model_dir, name)} now {new}, as in TF Serving's models.config")
    return new
