"""In-process inference: the exported SavedModel loaded inside the Beam worker, one copy shared per worker.

Beam's stock TF handlers load with Keras' `load_model`, which refuses TF SavedModels under Keras 3
(apache/beam#30616). This one loads with `tf.saved_model.load` and calls the serving signature, which takes raw
features: preprocessing lives in the graph.

Sharing: RunInference keeps one model per worker process, shared by its threads (Beam's `Shared`). With
`share_across_processes=True` (or `model_copies=N`) Beam's `MultiProcessShared` keeps one copy (or N) per machine,
served to every SDK worker process through a proxy; that is why the loaded model's API is one method taking and
returning plain numpy columns, which cross a process boundary cheaply.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics

from model_handlers import repository
from model_handlers.base import IsolatingModelHandler, Scored
from model_handlers.errors import SignatureMismatchError
from model_handlers.following import SWAPPED, FollowedModel
from model_handlers.interface import ModelInterface
from transforms.messages import ErrorType

_LOGGER = logging.getLogger(__name__)


class LoadedSavedModel:
    """One loaded SavedModel and its serving signature."""

    def __init__(self, path: str, interface: ModelInterface):
        import tensorflow as tf

        self.path = path
        self._loaded = tf.saved_model.load(path)
        if interface.signature_name not in self._loaded.signatures:
            raise SignatureMismatchError(
                f"{path} has no signature {interface.signature_name!r}; it has {sorted(self._loaded.signatures)}"
            )
        self._signature = self._loaded.signatures[interface.signature_name]
        check_signature(self._signature, interface, path)

    def predict(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = self._signature(**{name: tf.constant(values) for name, values in columns.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def pid(self) -> int:
        """The process holding this copy (tests use it to prove cross-process sharing)."""
        return os.getpid()


def check_signature(signature, interface: ModelInterface, path: str) -> None:
    """Fail fast, naming the fields, when the exported signature does not take the interface's features."""
    _, inputs = signature.structured_input_signature
    problems = interface.signature_problems(
        {name: spec.dtype.name for name, spec in inputs.items()}, list(signature.structured_outputs)
    )
    if problems:
        raise SignatureMismatchError(
            f"the {interface.signature_name!r} signature of {path} does not match the {interface.name!r} schema: "
            + "; ".join(problems)
        )


def warmup_logs(path: str):
    """The PredictionLog records of a version's TF Serving warm-up file (none, with a warning, if it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_path = f"{path}/{repository.WARMUP_FILE}"
    if not tf.io.gfile.exists(warmup_path):
        _LOGGER.warning("%s has no warm-up requests; the first batch will pay for graph tracing", path)
        return
    for record in tf.data.TFRecordDataset(warmup_path).as_numpy_iterator():
        yield prediction_log_pb2.PredictionLog.FromString(record)


def warm_up(model: LoadedSavedModel, path: str) -> int:
    """Replays the exported TF Serving warm-up requests for serving_default, so the first real batch is not the
    slow one. The file's classify/regress requests are for the tf.Example signature, which this handler never
    calls: skipped."""
    import tensorflow as tf

    count = 0
    for log in warmup_logs(path):
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        model.predict({name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
        count += 1
    return count


class RepositoryModelHandler(IsolatingModelHandler):
    """A handler that scores with a version of its model from the repository: a pinned one, the newest when the
    pipeline starts, or the one a label names. With `refresh_secs`, a label is followed while the pipeline runs
    (model_handlers/following.py): the loaded model is a FollowedModel, and every prediction names the version
    that made it. Subclasses implement `load_version`."""

    def __init__(
        self,
        interface: ModelInterface,
        model_dir: str,
        *,
        model_version: int | None,
        warmup: bool,
        version_label: str | None = None,
        fallback_label: str | None = None,
        refresh_secs: float = 0,
        **model_handler_kwargs,
    ):
        super().__init__(interface, **model_handler_kwargs)
        self._model_dir = model_dir
        self._pinned = model_version
        self._label, self._fallback_label = version_label, fallback_label
        self._refresh_secs = refresh_secs if version_label else 0
        # Resolved here too, in the launcher, so that a missing model or label stops the job before it starts.
        self._version = self._resolve()
        self._warmup = warmup

    def _resolve(self) -> int:
        return repository.resolve_version(
            self._model_dir, self.interface.name, self._pinned, self._label, self._fallback_label
        )

    def path_of(self, version: int) -> str:
        return repository.version_path(self._model_dir, self.interface.name, version)

    @property
    def version(self) -> int:
        """The version resolved when the handler was made (a followed label may have moved since)."""
        return self._version

    @property
    def model_version(self) -> str:
        return str(self._version)

    def describe(self) -> str:
        label = ""
        if self._label:
            fallback = f", else {self._fallback_label!r}" if self._fallback_label else ""
            every = f", followed every {self._refresh_secs:g}s" if self._refresh_secs else ""
            label = f" (label {self._label!r}{fallback}{every})"
        return f"model {self.interface.name!r} version {self._version}{label} from {self.path_of(self._version)}"

    def load_version(self, version: int) -> Any:
        """One version loaded, its signature checked and warmed up: a copy with a `predict` method."""
        raise NotImplementedError(type(self))

    def load_model(self) -> FollowedModel:
        # Without a label the version stays the one resolved in the launcher: the newest then, not the newest when
        # some worker happens to load.
        if not self._label:
            return FollowedModel(self.interface.name, lambda: self._version, self.load_version)
        return FollowedModel(
            self.interface.name, self._resolve, self.load_version, self._refresh_secs, fallbacks=self._fallbacks
        )

    def _fallbacks(self) -> list[int]:
        """What a worker starting on a broken labelled version serves instead: the fallback label's version, then,
        following `stable`, the version stable named before (`previous`)."""
        from model_handlers import labels

        found = labels.read(self._model_dir, self.interface.name)
        names = [self._fallback_label] + ([labels.PREVIOUS] if self._label == "stable" else [])
        return [found[name] for name in names if name in found]

    def predict_with(self, model: FollowedModel, *args) -> tuple[str, Any]:
        """The serving copy's answer and the version that gave it; counts what the follower did meanwhile."""
        version, answer, news = model.predict(*args)
        namespace = self.get_metrics_namespace()
        for item in news:
            Metrics.counter(namespace, "model_swaps" if item.kind == SWAPPED else "model_versions_refused").inc()
        Metrics.gauge(namespace, "serving_model_version").set(version)
        return str(version), answer


class SavedModelHandler(RepositoryModelHandler):
    """Scores batches of validated feature dicts with `<model_dir>/<name>/<version>/` loaded in-process."""

    def __init__(
        self,
        interface: ModelInterface,
        model_dir: str,
        *,
        model_version: int | None = None,
        version_label: str | None = None,
        fallback_label: str | None = None,
        refresh_secs: float = 0,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
        share_across_processes: bool = False,
        model_copies: int | None = None,
        warmup: bool = True,
    ):
        """
        Args:
          interface: the model's features and outputs.
          model_dir: root of the model repository (local path or gs://).
          model_version: pin a version; the newest is taken when None. Resolved once, here, at pipeline
            construction: a version that appears later is not picked up by a running pipeline.
          version_label: take the version this label names in the repository (labels.json) instead;
            `fallback_label`'s while the label is not set (a canary falls back to stable).
          refresh_secs: follow the label, checking it this often, and swap versions without a restart (0: resolve
            it once, here).
          min_batch_size, max_batch_size, max_batch_duration_secs: Beam's BatchElements knobs.
          share_across_processes: one copy per machine across SDK worker processes instead of one per process.
          model_copies: how many copies per machine when sharing across processes (implies sharing).
          warmup: replay `assets.extra/tf_serving_warmup_requests` on load.
        """
        super().__init__(
            interface,
            model_dir,
            model_version=model_version,
            version_label=version_label,
            fallback_label=fallback_label,
            refresh_secs=refresh_secs,
            warmup=warmup,
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=share_across_processes,
            model_copies=model_copies,
        )

    def load_version(self, version: int) -> LoadedSavedModel:
        start = time.perf_counter()
        path = self.path_of(version)
        model = LoadedSavedModel(path, self.interface)
        loaded = time.perf_counter()
        warmed = warm_up(model, path) if self._warmup else 0
        _LOGGER.info(
            "loaded %s version %s in %.2fs, %d warm-up requests in %.2fs (pid %d)",
            self.interface.name,
            version,
            loaded - start,
            warmed,
            time.perf_counter() - loaded,
            os.getpid(),
        )
        return model

    def predict(self, batch: Sequence[Mapping[str, Any]], model: FollowedModel) -> Scored:
        version, outputs = self.predict_with(model, self.interface.to_columns(batch))
        return Scored(self.interface.rows_from_outputs(outputs, len(batch)), version)

    def classify_error(self, error: BaseException) -> ErrorType:
        import tensorflow as tf

        # Out of memory may pass with a smaller batch or a calmer machine; anything else will fail again.
        if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)):
            return ErrorType.RETRYABLE
        return ErrorType.PERMANENT
