"""The model repository layout shared with TF Serving: `<model_dir>/<name>/<version>/saved_model.pb`.

Versions are positive integers, as TF Serving requires; each version directory is immutable once written.
Paths may be local or any filesystem Beam knows (gs://...); listing uses Beam's FileSystems rather than
tf.io.gfile so that a launcher resolving a version does not pay for importing TensorFlow.
"""

from __future__ import annotations

import posixpath

from model_handlers.errors import ModelNotFoundError

WARMUP_FILE = posixpath.join("assets.extra", "tf_serving_warmup_requests")


def _join(*parts: str) -> str:
    return posixpath.join(*[str(p) for p in parts])


def available_versions(model_dir: str, name: str) -> list[int]:
    """Versions of `name` under `model_dir` that hold a SavedModel, oldest first."""
    from apache_beam.io.filesystems import FileSystems

    base = _join(model_dir, name)
    matches = FileSystems.match([_join(base, "*", "saved_model.pb")])[0].metadata_list
    versions = set()
    for metadata in matches:
        version = posixpath.basename(posixpath.dirname(metadata.path))
        if version.isdigit():
            versions.add(int(version))
    return sorted(versions)


def resolve_version(
    model_dir: str, name: str, version: int | None = None, label: str | None = None, fallback_label: str | None = None
) -> int:
    """The pinned `version`, or the one `label` names (model_handlers/labels.py; `fallback_label`'s when the label
    is not set), if it exists, else the newest one; a clear error when there is none."""
    if label is not None:
        version = _labelled(model_dir, name, label, fallback_label)
    versions = available_versions(model_dir, name)
    if not versions:
        raise ModelNotFoundError(
            f"no versions of model {name!r} under {_join(model_dir, name)!r}: expected "
            f"{_join(model_dir, name, '<version>', 'saved_model.pb')}. Build the demo models with `make models`."
        )
    if version is None:
        return versions[-1]
    if version not in versions:
        raise ModelNotFoundError(f"model {name!r} has no version {version} under {model_dir!r}; it has {versions}")
    return version


def _labelled(model_dir: str, name: str, label: str, fallback_label: str | None) -> int:
    from model_handlers import labels

    try:
        found = labels.read(model_dir, name)
    except labels.LabelError as error:
        raise ModelNotFoundError(str(error)) from error
    if label not in found and fallback_label is not None:
        label = fallback_label
    if label not in found:
        raise ModelNotFoundError(
            f"model {name!r} has no label {label!r} in {labels.labels_path(model_dir, name)} (it has {found}); "
            f"move one with `python -m deploy rollout-model --model_dir={model_dir} --model {name} --version N`"
        )
    return found[label]


def version_path(model_dir: str, name: str, version: int) -> str:
    return _join(model_dir, name, str(version))
