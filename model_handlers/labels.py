"""Version labels (stable, canary, previous), for TF Serving's models.config and for a model repository alike.

TF Serving keeps `version_labels` in its models.config; a model repository (`<model_dir>/<name>/`, local or
gs://) keeps the same mapping beside its versions, in `<model_dir>/<name>/labels.json`, so that a pipeline scoring
in process resolves `--model_version_label` as TF Serving does. The moves are the same for both, and defined once
here: pointing `stable` at a new version keeps the old one as `previous`, so that a rollback is one instant move;
promoting the canary to stable withdraws the canary label.

A label file is replaced whole, never edited in place: a reader sees the old file or the new one, never half of
either (a local rename; a Cloud Storage object is replaced on close). A rollout that finds the file changed
since it read it refuses to write, as the cluster rollout refuses a ConfigMap changed under it.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

LABELS = ("stable", "canary")  # the labels a rollout moves
PREVIOUS = "previous"  # where `stable` was before it last moved
LABELS_FILE = "labels.json"


class LabelError(ValueError):
    """A label move that cannot be made (no previous, an unknown label, a version that is not there)."""


def moved(labels: dict[str, int], label: str, version: int) -> dict[str, int]:
    """The labels after `label` points at `version`: the old stable becomes previous; a promoted canary goes."""
    if label not in LABELS:
        raise LabelError(f"the label must be one of {LABELS}, got {label!r}")
    if version < 1:
        raise LabelError(f"model versions are positive integers, got {version}")
    new = dict(labels)
    if label == "stable":
        old = new.get("stable")
        if old == version:
            raise LabelError(f"stable is already version {version}")
        if old is not None:
            new[PREVIOUS] = old
        if new.get("canary") == version:
            del new["canary"]  # promoted: the candidate is now stable
    new[label] = version
    return new


def rolled_back(labels: dict[str, int], label: str = "stable") -> dict[str, int]:
    """stable back to previous; for canary, the candidate withdrawn."""
    new = dict(labels)
    if label == "canary":
        if "canary" not in new:
            raise LabelError("there is no canary to withdraw")
        del new["canary"]
        return new
    if PREVIOUS not in new:
        raise LabelError("no previous version is recorded, so there is nothing to roll back to")
    new["stable"] = new.pop(PREVIOUS)
    return new


def labels_path(model_dir: str, name: str) -> str:
    return posixpath.join(str(model_dir), name, LABELS_FILE)


def parse(text: str, where: str) -> dict[str, int]:
    """A label file's content, checked: {label: positive version} over the known labels."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabelError(f"{where} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise LabelError(f"{where} must be an object of label -> version, got {type(data).__name__}")
    for label, version in data.items():
        if label not in (*LABELS, PREVIOUS):
            raise LabelError(f"{where}: unknown label {label!r}; labels are {(*LABELS, PREVIOUS)}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LabelError(f"{where}: label {label!r} must name a positive version, got {version!r}")
    return data


def read(model_dir: str, name: str) -> dict[str, int]:
    """The repository's labels for `name`; {} when it has no label file."""
    from apache_beam.io.filesystems import FileSystems

    path = labels_path(model_dir, name)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as handle:
        return parse(handle.read().decode("utf-8"), path)


def write(model_dir: str, name: str, labels: dict[str, int], *, expected: dict[str, int]) -> None:
    """Replaces the label file whole, if it still holds `expected` (what the caller read before deciding)."""
    from apache_beam.io.filesystems import FileSystems

    if read(model_dir, name) != expected:
        raise LabelError(f"{labels_path(model_dir, name)} changed while this rollout ran; run it again")
    text = json.dumps(dict(sorted(labels.items())), indent=2) + "\n"
    path = labels_path(model_dir, name)
    if "://" not in path:
        # A temporary file beside it, then a rename: atomic on one filesystem.
        directory = os.path.dirname(path)
        handle, temporary = tempfile.mkstemp(prefix=".labels-", suffix=".json", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return
    # An object store replaces the object when the upload completes: readers see the old one until then.
    with FileSystems.create(path, mime_type="application/json") as out:
        out.write(text.encode("utf-8"))
