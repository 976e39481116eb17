"""Write a trained model in TF Serving's layout, atomically: the SavedModel, its signatures and its warm-up file.

The SavedModel's `serving_default` signature takes exactly the interface's features (rank-1 tensors named by
feature) and returns exactly its outputs (float32, rank 1). Beside it stands TF Serving's tf.Example signature,
`classify` (`scores` and `classes`, [batch, 2]) or `regress` (`outputs`, [batch]) as the interface declares,
taking serialized `tf.train.Example`s as `inputs` and parsing them with the interface's `example_feature_spec()`
into the same graph. `assets.extra/tf_serving_warmup_requests` holds requests for both signatures.

`staged` gives a hidden temporary directory next to the final place and renames it into place only when the
export is complete, so a half-written version never appears (TF Serving ignores non-numeric directory names).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils  # no public API rewrites the fingerprint
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, regression_pb2

from model_handlers import interface as mi

WARMUP_BATCH_SIZES = (1, 32, 1, 32)
_TF_DTYPES = {mi.STRING: tf.string, mi.FLOAT: tf.float32, mi.INT: tf.int64}


def _classify_outputs(interface: mi.ModelInterface, value):
    # The model's one output is the score of the positive (last) class.
    classes = tf.tile(tf.constant([list(interface.class_labels)]), [tf.shape(value)[0], 1])
    return {mi.CLASSIFY_SCORES: tf.stack([1.0 - value, value], axis=1), mi.CLASSIFY_CLASSES: classes}


def _regress_outputs(interface: mi.ModelInterface, value):
    return {mi.REGRESS_OUTPUTS: value}


def _classify_log(spec: dict, examples: dict):
    request = classification_pb2.ClassificationRequest(model_spec=spec, input=examples)
    return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))


def _regress_log(spec: dict, examples: dict):
    request = regression_pb2.RegressionRequest(model_spec=spec, input=examples)
    return prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))


# What each TF Serving tf.Example method answers, and how its warm-up request is logged.
_EXAMPLE_OUTPUTS = {mi.CLASSIFY: _classify_outputs, mi.REGRESS: _regress_outputs}
_EXAMPLE_WARMUP_LOGS = {mi.CLASSIFY: _classify_log, mi.REGRESS: _regress_log}


def save(model, interface: mi.ModelInterface, export_dir: Path) -> None:
    """Save `model` (a tf.Module with `serve`) to `export_dir` with the serving and the tf.Example signatures."""
    serve = tf.function(
        model.serve,
        input_signature=[{f.name: tf.TensorSpec([None], _TF_DTYPES[f.dtype], name=f.name) for f in interface.features}],
    )
    signatures = {
        interface.signature_name: serve.get_concrete_function(),
        interface.example_signature_name: _example_signature(model, interface),
    }
    tf.saved_model.save(model, str(export_dir), signatures=signatures)
    _set_example_method_name(export_dir, interface)


def _example_signature(model, interface: mi.ModelInterface):
    """TF Serving's classify or regress signature: serialized tf.Examples in, parsed with the interface's spec, and
    the serving function's answer in the method's output keys."""
    spec = interface.example_feature_spec()
    (output,) = interface.outputs
    outputs = _EXAMPLE_OUTPUTS[interface.example_signature_name]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=mi.EXAMPLE_INPUTS)])
    def from_examples(inputs):
        return outputs(interface, model.serve(tf.io.parse_example(inputs, spec))[output.name])

    return from_examples.get_concrete_function()


def _set_example_method_name(export_dir: Path, interface: mi.ModelInterface) -> None:
    """Marks the tf.Example signature as TF Serving's classify or regress method in `saved_model.pb`.

    Why a rewrite: TF2's `tf.saved_model.save` writes every signature with method_name tensorflow/serving/predict
    and has no way to ask for another, while TF Serving's Classify/Regress and tfx-bsl's RunInference look for
    the classify/regress method. The alternative, tf.compat.v1's SavedModelBuilder with
    `classification_signature_def`, would mean rebuilding the trained tf.Module as a TF1 graph and session. The
    method name is only a label on the SignatureDef (inputs, outputs and graph stay as TF2 wrote them), so it is
    set with the protos, and the fingerprint, a checksum of saved_model.pb, is written again to match.
    """
    path = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[interface.example_signature_name].method_name = interface.example_method_name
    path.write_bytes(saved_model.SerializeToString())
    fingerprinting_utils.write_fingerprint(str(export_dir))


def write_warmup_requests(
    path: Path, interface: mi.ModelInterface, events: Sequence[dict], batch_sizes=WARMUP_BATCH_SIZES
):
    """TF Serving's warm-up file: a TFRecord of PredictionLog records, a PredictRequest for `serving_default` and
    a ClassificationRequest or RegressionRequest for the tf.Example signature per batch size, so that whichever
    API a client uses, its first request does not pay for tracing."""
    example_log = _EXAMPLE_WARMUP_LOGS[interface.example_signature_name]
    path.parent.mkdir(parents=True, exist_ok=True)
    start = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in batch_sizes:
            batch = list(events[start : start + size])
            start += size
            request = predict_pb2.PredictRequest()
            request.model_spec.name = interface.name
            request.model_spec.signature_name = interface.signature_name
            for name, column in interface.to_columns(batch).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(column))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())

            # The event's features as a tf.Example (`to_example`, from the same interface), without its event_id.
            spec = dict(name=interface.name, signature_name=interface.example_signature_name)
            examples = dict(example_list=dict(examples=[interface.to_example(event) for event in batch]))
            writer.write(example_log(spec, examples).SerializeToString())


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A fresh directory beside `final` to export into; renamed to `final` (replacing an older one) when the block
    completes, removed when it fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model server may run as another user
        yield tmp
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, final: Path):
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{time.time_ns()}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
