"""The TF Serving stand-in's request handling: TF Serving's PredictionService and ModelService over a repository of
SavedModels (`<model_dir>/<name>/<version>/`), with its status codes and the bounds a request's tensors are checked
against before anything is allocated for them.

localdev.model_server builds these and registers them on a gRPC server; see its docstring for what is served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# Dimensions a request's tensor may have: what a numpy array holds, 32 in numpy 1 (64 in numpy 2), below TF's 254
# (TensorShape::MaxDimensions(), tensorflow/core/framework/tensor_shape.h). No model here takes more than 2.
MAX_DIMS = 32
# What one string element costs beyond its bytes: the array's pointer and the Python bytes object around them.
STRING_ELEMENT_BYTES = np.dtype(object).itemsize + sys.getsizeof(b"")


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Version:
    number: int
    loaded: object  # the tf.saved_model.load result, kept alive for its signatures
    signature_defs: dict  # signature name -> SignatureDef proto, as TF Serving reads them from saved_model.pb


@dataclasses.dataclass
class ServedModel:
    name: str
    base_path: Path
    versions: dict[int, Version]
    labels: dict[str, int] = dataclasses.field(default_factory=dict)


def _load_version(path: Path, number: int) -> Version:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    signature_defs = dict(saved_model.meta_graphs[0].signature_def)
    signature_defs.pop("__saved_model_init_op", None)
    return Version(number, tf.saved_model.load(str(path)), signature_defs)


def _dtype_name(dtype_enum: int) -> str:
    """float32 for DT_FLOAT, as TF Serving names types in its messages; a number TF does not know, as a number."""
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(dtype_enum).name
    except TypeError:
        return f"data type {dtype_enum}"


@functools.cache
def _tensor_types() -> dict:
    """DataType -> (numpy dtype, the TensorProto field of its values) for what a request may carry: the types whose
    values decode at their own width (no transient wider copy), the models' float32, int64 and string among them."""
    from tensorflow.core.framework import types_pb2

    return {
        types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
        types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
        types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
        types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
        types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
        types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
        types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
        types_pb2.DT_STRING: (np.dtype(object), "string_val"),
    }


def decode_tensor(proto, max_bytes: int, name: str = "") -> tuple[np.ndarray, int]:
    """A request's TensorProto -> (array, the bytes it takes), allocating at most `max_bytes` for it.

    TF's own Tensor::FromProto (tensorflow/core/framework/tensor.cc, FromProtoField) allocates the element count its
    shape names, then fills what the values sent do not cover with the last value, or zeros: a 17-byte TensorProto
    of shape [10000000] and one value becomes 40 MB of float32, in TF Serving as in tf.make_ndarray. Here the shape
    is checked first: a known rank, at most MAX_DIMS dimensions, none negative, its size (element count x dtype
    size, zero dimensions counted as 1) within `max_bytes`; then the content: tensor_content of exactly that size,
    or exactly one value per element. Only then is anything allocated. Every refusal is INVALID_ARGUMENT, worded as
    TF Serving's "tensor parsing error: <input>" (servables/tensorflow/tfrt_predict_util.cc:77) with the reason.
    """

    def refuse(reason: str) -> ServingError:
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {name}: {reason}")

    if proto.dtype not in _tensor_types():
        raise refuse(f"{_dtype_name(proto.dtype)} is not a type this server decodes")
    dtype, field = _tensor_types()[proto.dtype]
    if proto.tensor_shape.unknown_rank:
        raise refuse("a tensor's shape must have a known rank")
    if len(proto.tensor_shape.dim) > MAX_DIMS:
        raise refuse(f"{len(proto.tensor_shape.dim)} dimensions, more than {MAX_DIMS}")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise refuse(f"shape {shape} has a negative dimension")
    strings = dtype.kind == "O"
    element_bytes = STRING_ELEMENT_BYTES if strings else dtype.itemsize
    # The dimensions other than 0 are bounded too: numpy will not shape even an empty array beyond its address space.
    span = math.prod(size or 1 for size in shape) * element_bytes
    if span > max_bytes:
        what = "takes" if 0 not in shape else "is empty, but its other dimensions span"
        raise refuse(f"shape {shape} {what} {span} bytes, more than the {max_bytes} left of a request's bound")
    count = math.prod(shape)
    nbytes = count * element_bytes
    if proto.tensor_content:
        if strings:
            raise refuse("string values go in string_val, not tensor_content")
        if len(proto.tensor_content) != nbytes:
            raise refuse(f"shape {shape} needs {nbytes} bytes of tensor_content, got {len(proto.tensor_content)}")
        # tensor_content is little-endian; on a little-endian machine the view is not copied.
        array = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
        return array.reshape(shape), nbytes
    values = getattr(proto, field)
    if len(values) != count:
        raise refuse(
            f"shape {shape} has {count} elements but the request carries {len(values)} {field} values (TF would "
            "fill in the rest; this server does not)"
        )
    if strings:
        nbytes += sum(len(value) for value in values)
        if nbytes > max_bytes:
            raise refuse(f"{count} strings take {nbytes} bytes, more than the {max_bytes} left of a request's bound")
    # fromiter fills the array one value at a time: no list of Python objects as large as the tensor in between.
    return np.fromiter(values, dtype=dtype, count=count).reshape(shape), nbytes


class ModelRepository:
    """The models being served, their versions, and their version labels."""

    def __init__(self, model_dir: str, config=None):
        self._lock = threading.Lock()
        self.models: dict[str, ServedModel] = {}
        entries = (
            [
                (c.name, Path(model_dir) / c.base_path if not os.path.isabs(c.base_path) else Path(c.base_path))
                for c in config.model_config_list.config
            ]
            if config is not None
            else [(p.name, p) for p in sorted(Path(model_dir).iterdir()) if p.is_dir()]
        )
        for name, base_path in entries:
            numbers = sorted(
                int(p.name) for p in base_path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()
            )
            if not numbers:
                if config is not None:
                    raise ValueError(f"model {name!r}: no versions under {base_path}")
                continue
            self.models[name] = ServedModel(name, base_path, {n: _load_version(base_path / str(n), n) for n in numbers})
        if not self.models:
            raise ValueError(f"no models under {model_dir}: expected <model_dir>/<name>/<version>/saved_model.pb")
        if config is not None:
            self.apply_labels(config)

    def apply_labels(self, config) -> None:
        """Version labels from a ModelServerConfig; a label may only point at a version being served."""
        labels = {}
        for entry in config.model_config_list.config:
            model = self.models.get(entry.name)
            if model is None:
                raise ValueError(f"config names model {entry.name!r}, which is not served")
            for label, number in entry.version_labels.items():
                if number not in model.versions:
                    raise ValueError(
                        f"label {label!r} of model {entry.name!r} points at version {number}, which is not available"
                    )
            labels[entry.name] = dict(entry.version_labels)
        with self._lock:
            for name, model in self.models.items():
                model.labels = labels.get(name, {})

    def resolve(self, model_spec) -> tuple[ServedModel, Version]:
        model = self.models.get(model_spec.name)
        if model is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({model_spec.name})")
        if model_spec.HasField("version"):
            number = model_spec.version.value
            if number not in model.versions:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({model.name}, {number})"
                )
        elif model_spec.version_label:
            with self._lock:
                number = model.labels.get(model_spec.version_label)
            if number is None:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {model_spec.version_label}",
                )
        else:
            number = max(model.versions)
        return model, model.versions[number]


def _signature(version: Version, model_spec, method: str | None = None):
    name = model_spec.signature_name or "serving_default"
    if name not in version.signature_defs:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    signature_def = version.signature_defs[name]
    if method is not None and signature_def.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expected {kind} signature method_name to be {method}. Was: {signature_def.method_name}",
        )
    return name, signature_def, version.loaded.signatures[name]


def _run(function, inputs: dict):
    import tensorflow as tf

    try:
        return {key: value.numpy() for key, value in function(**inputs).items()}
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0]) from None


class PredictionService:
    """TF Serving's PredictionService."""

    def __init__(self, repository: ModelRepository, delay_secs: float, max_tensor_bytes: int):
        self._repository = repository
        self._delay_secs = delay_secs
        # What one request's tensors may take once decoded, all together: no more than its message may carry.
        self._max_tensor_bytes = max_tensor_bytes

    @contextlib.contextmanager
    def _answering(self, context):
        try:
            if self._delay_secs:
                time.sleep(self._delay_secs)
            yield
        except ServingError as error:
            context.abort(error.code, error.message)

    def Predict(self, request, context):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        with self._answering(context):
            model, version = self._repository.resolve(request.model_spec)
            name, signature_def, function = _signature(version, request.model_spec)
            expected, sent = set(signature_def.inputs), set(request.inputs)
            for alias in sorted(sent - expected):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set "
                    f"{{{','.join(sorted(expected))}}}.",
                )
            if expected != sent:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Request inputs do not match required inputs for model `{model.name}`. Send extra: {{}}. "
                    f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
                )
            inputs = {}
            left = self._max_tensor_bytes
            for key, proto in sorted(request.inputs.items()):
                wanted = signature_def.inputs[key].dtype
                if proto.dtype != wanted:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Expects arg[{key}] to be {tf.dtypes.as_dtype(wanted).name} but "
                        f"{_dtype_name(proto.dtype)} is provided",
                    )
                array, taken = decode_tensor(proto, left, key)
                left -= taken
                inputs[key] = tf.constant(array)
            outputs = _run(function, inputs)
            wanted_outputs = set(request.output_filter) or set(outputs)
            unknown = wanted_outputs - set(outputs)
            if unknown:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {sorted(unknown)[0]}",
                )
            response = predict_pb2.PredictResponse()
            self._fill_spec(response.model_spec, model, version, name)
            for key in sorted(wanted_outputs):
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

    def GetModelMetadata(self, request, context):
        from tensorflow_serving.apis import get_model_metadata_pb2

        with self._answering(context):
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
            model, version = self._repository.resolve(request.model_spec)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, signature_def in version.signature_defs.items():
                signatures.signature_def[key].CopyFrom(signature_def)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            self._fill_spec(response.model_spec, model, version, "")
            response.metadata["signature_def"].Pack(signatures)
            return response

    def Classify(self, request, context):
        from tensorflow_serving.apis import classification_pb2

        with self._answering(context):
            response = classification_pb2.ClassificationResponse()
            outputs = self._run_examples(request, CLASSIFY_METHOD, response)
            scores = outputs.get("scores")
            classes = outputs.get("classes")
            rows = len(scores) if scores is not None else len(classes)
            for i in range(rows):
                result = response.result.classifications.add()
                width = scores.shape[1] if scores is not None else classes.shape[1]
                for j in range(width):
                    label = classes[i][j].decode() if classes is not None else ""
                    result.classes.add(label=label, score=float(scores[i][j]) if scores is not None else 0.0)
            return response

    def Regress(self, request, context):
        from tensorflow_serving.apis import regression_pb2

        with self._answering(context):
            response = regression_pb2.RegressionResponse()
            outputs = self._run_examples(request, REGRESS_METHOD, response)
            for value in outputs["outputs"].reshape(-1):
                response.result.regressions.add(value=float(value))
            return response

    def _run_examples(self, request, method: str, response):
        """Classify and Regress alike: the signature of `method` run on the request's tf.Examples; fills the
        response's model_spec and returns the signature's outputs."""
        import tensorflow as tf

        model, version = self._repository.resolve(request.model_spec)
        name, signature_def, function = _signature(version, request.model_spec, method)
        examples = request.input.example_list.examples
        if not examples:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
        (input_key,) = signature_def.inputs  # classify/regress signatures take one tensor of serialized Examples
        serialized = tf.constant([example.SerializeToString() for example in examples])
        outputs = _run(function, {input_key: serialized})
        self._fill_spec(response.model_spec, model, version, name)
        return outputs

    @staticmethod
    def _fill_spec(spec, model: ServedModel, version: Version, signature_name: str) -> None:
        spec.name = model.name
        spec.version.value = version.number
        if signature_name:
            spec.signature_name = signature_name


class ModelService:
    """TF Serving's ModelService."""

    def __init__(self, repository: ModelRepository):
        self._repository = repository

    def GetModelStatus(self, request, context):
        from tensorflow_serving.apis import get_model_status_pb2

        model = self._repository.models.get(request.model_spec.name)
        if model is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {request.model_spec.name}")
        numbers = sorted(model.versions)
        if request.model_spec.HasField("version"):
            if request.model_spec.version.value not in model.versions:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {request.model_spec.version.value} of model {model.name}",
                )
            numbers = [request.model_spec.version.value]
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in numbers:
            response.model_version_status.add(version=number, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response

    def HandleReloadConfigRequest(self, request, context):
        from tensorflow_serving.apis import model_management_pb2

        try:
            self._repository.apply_labels(request.config)
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return model_management_pb2.ReloadConfigResponse()
