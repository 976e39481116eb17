"""In-process inference through tfx-bsl: the model's classify/regress signature run by TFX's own model handler.

`--inference=tfx_bsl` scores with the handler tfx-bsl's `RunInference` uses (TFX's BulkInferrer runs on it), built
by `tfx_bsl.public.beam.run_inference.CreateModelHandler` from an `InferenceSpecType` naming the version's path and
its `classify` (fraud) or `regress` (price) signature. It takes `tf.train.Example`s and answers with PredictionLogs.

Why an adapter rather than tfx-bsl's RunInference transform in `Score`: wrapped in the project's
IsolatingModelHandler, the tfx-bsl handler gets the same batching flags, the same per-element isolation of a
failing batch, the same dead letters and predictions, and the same version stamping as the other two paths; the
Score composite does not change. Each batch of validated feature dicts becomes tf.Examples (`to_example`, from the
interface) and each PredictionLog's result is read back with `rows_from_example_results`.

tfx-bsl loads the SavedModel into a tf.compat.v1 Session (it reads the SignatureDefs from saved_model.pb, which is
why the export marks the method names). One model per worker process, shared by its threads; cross-process sharing
is not offered here (a Session does not cross a process boundary).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from model_handlers.base import Scored
from model_handlers.errors import SignatureMismatchError
from model_handlers.following import FollowedModel
from model_handlers.interface import CLASSIFY, ModelInterface
from model_handlers.saved_model import RepositoryModelHandler, warmup_logs

_LOGGER = logging.getLogger(__name__)


def check_example_signature(path: str, interface: ModelInterface) -> None:
    """Fail fast, naming the fields, when the version has no classify/regress signature of the interface's kind."""
    from tensorflow.python.saved_model import loader_impl  # parses saved_model.pb, as tfx-bsl itself does

    from model_handlers.tf_serving_protocol import tf_dtype_name

    signatures = loader_impl.parse_saved_model(path).meta_graphs[0].signature_def
    name = interface.example_signature_name
    if name not in signatures:
        raise SignatureMismatchError(f"{path} has no signature {name!r}; it has {sorted(signatures)}")
    signature = signatures[name]
    problems = interface.example_signature_problems(
        {key: tf_dtype_name(info.dtype) for key, info in signature.inputs.items()},
        list(signature.outputs),
        signature.method_name,
    )
    if problems:
        raise SignatureMismatchError(
            f"the {name!r} signature of {path} is not the {interface.name!r} model's {name} signature: "
            + "; ".join(problems)
        )


class TfxBslModel:
    """tfx-bsl's model handler and the Session it loaded."""

    def __init__(self, handler, session):
        self.handler = handler
        self.session = session

    def predict(self, examples: list) -> list:
        return list(self.handler.run_inference(examples, self.session))


class TfxBslHandler(RepositoryModelHandler):
    """Scores batches of validated feature dicts with tfx-bsl's handler on `<model_dir>/<name>/<version>/`."""

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
        warmup: bool = True,
    ):
        """
        Args:
          interface: the model's features and outputs.
          model_dir: root of the model repository (local path or gs://).
          model_version: pin a version; the newest is taken when None (resolved once, here).
          version_label, fallback_label, refresh_secs: take the version a label names in the repository
            (labels.json) instead, and follow it (as SavedModelHandler does).
          min_batch_size, max_batch_size, max_batch_duration_secs: Beam's BatchElements knobs.
          warmup: replay the warm-up file's classify/regress requests on load.
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
        )

    def inference_spec(self, version: int):
        from tfx_bsl.public.proto import model_spec_pb2

        return model_spec_pb2.InferenceSpecType(
            saved_model_spec=model_spec_pb2.SavedModelSpec(
                model_path=self.path_of(version), signature_name=[self.interface.example_signature_name]
            )
        )

    def load_version(self, version: int) -> TfxBslModel:
        from tfx_bsl.public.beam.run_inference import CreateModelHandler

        start = time.perf_counter()
        path = self.path_of(version)
        check_example_signature(path, self.interface)
        handler = CreateModelHandler(self.inference_spec(version))
        model = TfxBslModel(handler, handler.load_model())
        loaded = time.perf_counter()
        warmed = 0
        if self._warmup:
            log_type = f"{self.interface.example_signature_name}_log"
            for log in warmup_logs(path):
                if log.WhichOneof("log_type") == log_type:
                    model.predict(list(getattr(log, log_type).request.input.example_list.examples))
                    warmed += 1
        _LOGGER.info(
            "tfx-bsl loaded %s version %s (%s signature) in %.2fs, %d warm-up requests in %.2fs (pid %d)",
            self.interface.name,
            version,
            self.interface.example_signature_name,
            loaded - start,
            warmed,
            time.perf_counter() - loaded,
            os.getpid(),
        )
        return model

    def predict(self, batch: Sequence[Mapping[str, Any]], model: FollowedModel) -> Scored:
        version, logs = self.predict_with(model, [self.interface.to_example(row) for row in batch])
        log_type = f"{self.interface.example_signature_name}_log"
        results = []
        for log in logs:
            result = getattr(log, log_type).response.result
            # tfx-bsl logs one example per PredictionLog, so each result holds exactly one answer.
            results.extend(
                result.classifications if self.interface.example_signature_name == CLASSIFY else result.regressions
            )
        if len(results) != len(batch):
            raise ValueError(f"tfx-bsl returned {len(results)} results for a batch of {len(batch)}")
        return Scored(self.interface.rows_from_example_results(results), version)
