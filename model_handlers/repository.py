"""The model repository layout shared with TF Serving: `<model_dir>/<name>/<version>/saved_model.pb`.

Versions are positive integers, as TF Serving requires; each version directory is immutable once written.
Paths may be local or any filesystem TensorFlow's gfile knows (gs://...).
"""

from __future__ import annotations

import posixpath

WARMUP_FILE = posixpath.join("assets.extra", "tf_serving_warmup_requests")


class ModelNotFoundError(FileNotFoundError):
    pass


def _join(*parts: str) -> str:
    return posixpath.join(*[str(p) for p in parts])


def available_versions(model_dir: str, name: str) -> list[int]:
    """Versions of `name` under `model_dir` that hold a SavedModel, oldest first."""
    import tensorflow as tf

    base = _join(model_dir, name)
    if not tf.io.gfile.isdir(base):
        return []
    versions = []
    for entry in tf.io.gfile.listdir(base):
        entry = entry.rstrip("/")
        if entry.isdigit() and tf.io.gfile.exists(_join(base, entry, "saved_model.pb")):
            versions.append(int(entry))
    return sorted(versions)


def resolve_version(model_dir: str, name: str, version: int | None = None) -> int:
    """The pinned `version` if it exists, else the newest one; a clear error when there is none."""
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


def version_path(model_dir: str, name: str, version: int) -> str:
    return _join(model_dir, name, str(version))
