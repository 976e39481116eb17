"""A development stand-in for TensorFlow Serving that speaks its real gRPC protocol.

    python -m localdev.model_server --model_dir=models --port=8500 [--model_config_file=models.config]

The `tensorflow_model_server` binary is in none of the package registries these machines reach, yet the pipeline's
gRPC client must work unchanged against real TF Serving. So this server implements TF Serving's services with the
protos and stubs from `tensorflow-serving-api`, over the same repository layout (`<model_dir>/<name>/<version>/`):

- PredictionService: Predict, GetModelMetadata (signature_def), Classify and Regress (for signatures whose
  method is classify or regress);
- ModelService: GetModelStatus, HandleReloadConfigRequest (version labels);
- every version of every model is served; version labels come from a `model_config_list` config file in TF
  Serving's text format, re-read every `--model_config_file_poll_wait_seconds`;
- TF Serving's status codes: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for a wrong input or an
  unknown version label, FAILED_PRECONDITION for an unknown signature.

Security and limits, with TF Serving's flags and meanings (the sources are cited at LIMITS and SSLConfig below):

- `--ssl_config_file`: a text-format `tensorflow.serving.SSLConfig` (server_key, server_cert, custom_ca: PEM text,
  not paths; client_verify). It serves TLS; with `client_verify: true` it also requires a client certificate
  signed by custom_ca (mutual TLS). `--tls_cert_file/--tls_key_file` are the stand-in's shorthand for an SSLConfig
  of those two files alone (server TLS, no client certificate);
- `--grpc_max_threads` (TF Serving's default, 4 per CPU): requests handled at once. One more is refused with
  RESOURCE_EXHAUSTED at once, never queued, as TF Serving's gRPC thread quota does;
- messages at most 64 MiB each way (TF Serving: 2 GiB), changed with TF Serving's `--grpc_channel_arguments`;
- a request's tensors are checked before anything is allocated for them: known types, a shape whose size fits the
  receive limit, and exactly as many values as the shape has elements. Anything else is INVALID_ARGUMENT.

Production uses the official TF Serving image (see deploy/). Two switches make faults real for tests and
benchmarks: `--delay_secs` (a slow server, or a remote GPU's latency) and a small `--grpc_max_threads`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from plumbing.process import ManagedProcess

_LOGGER = logging.getLogger("localdev.model_server")

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# What the server prints once the port is bound and every model is loaded: ModelServerProcess waits for it.
READY_LINE = b"TF Serving stand-in serving"

# LIMITS. TF Serving's defaults, in tensorflow/serving (commit 9d981c5), tensorflow_serving/model_servers/:
# - messages: server.cc:397 `builder.SetMaxMessageSize(std::numeric_limits<int32_t>::max())`, receive and send: 2 GiB,
#   in effect no bound (protobuf's own ceiling). The stand-in takes 64 MiB instead: 4x the pipeline's largest request
#   at its defaults (--max_batch_size 256 x --max_event_bytes 64 KiB = 16 MiB), 16x gRPC's 4 MiB default. Either
#   is changed with TF Serving's flag for gRPC settings, --grpc_channel_arguments (server.cc:398-410).
# - threads: server.h:46 `grpc_max_threads = 4.0 * port::NumSchedulableCPUs()`, the gRPC ResourceQuota's thread limit
#   (server.cc:412-414). gRPC's synchronous server answers a request that finds no thread RESOURCE_EXHAUSTED,
#   "Server Threadpool Exhausted" (grpc, src/cpp/server/server_cc.cc, resource_exhausted_handler_), rather than
#   queueing it. Here one executor thread per request, and gRPC Python's maximum_concurrent_rpcs at the same number
#   refuses the next one with RESOURCE_EXHAUSTED: nothing waits in the executor's (unbounded) queue.
# - batching: off unless --enable_batching (server.h:59); a full batching queue answers UNAVAILABLE (TensorFlow's
#   shared_batch_scheduler.h, "The batch scheduling queue to which this task was submitted is full"). The stand-in
#   does not batch.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_CHANNEL_ARGUMENTS = {
    "grpc.max_receive_message_length": DEFAULT_MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": DEFAULT_MAX_MESSAGE_BYTES,
}
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


def read_config(path: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(Path(path).read_text(), config)
    return config


@functools.cache
def ssl_config_class():
    """TF Serving's tensorflow.serving.SSLConfig (tensorflow_serving/config/ssl_config.proto: server_key = 1,
    server_cert = 2, custom_ca = 3, client_verify = 4), built from its descriptor: tensorflow-serving-api does not
    ship that proto, and a file TF Serving reads must parse here the same way."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    message = file.message_type.add(name="SSLConfig")
    kinds = {"server_key": field.TYPE_STRING, "server_cert": field.TYPE_STRING}
    kinds |= {"custom_ca": field.TYPE_STRING, "client_verify": field.TYPE_BOOL}
    for number, (name, kind) in enumerate(kinds.items(), start=1):
        message.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()  # its own pool: no clash should a later package ship the proto
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


def read_ssl_config(path: str):
    from google.protobuf import text_format

    try:
        return text_format.Parse(Path(path).read_text(), ssl_config_class()())
    except text_format.ParseError as error:
        raise ValueError(f"{path} is not a text-format SSLConfig: {error}") from None


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """What TF Serving's BuildServerCredentials (model_servers/server.cc:117-149) makes of an SSLConfig: its key and
    certificate; with client_verify, a client certificate required and verified against custom_ca
    (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY), else none asked for."""
    if not ssl_config.server_key or not ssl_config.server_cert:
        raise ValueError("the SSLConfig needs server_key and server_cert, as PEM text (not file names)")
    if ssl_config.client_verify and not ssl_config.custom_ca:
        # TF Serving would fall back to gRPC's default roots, a public CA set: any client with a certificate from
        # a public CA would pass. The stand-in asks for the CA that signs the clients instead.
        raise ValueError("client_verify needs custom_ca: the PEM of the CA that signs the client certificates")
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify,
    )


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


def serve(args) -> None:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    config = read_config(args.model_config_file) if args.model_config_file else None
    repository = ModelRepository(args.model_dir, config)
    channel_arguments = DEFAULT_CHANNEL_ARGUMENTS | dict(args.grpc_channel_arguments)
    # As many threads as requests handled at once, and gRPC refuses the one more (see LIMITS): none ever waits in
    # the executor's queue.
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.grpc_max_threads),
        options=list(channel_arguments.items()),
        maximum_concurrent_rpcs=args.grpc_max_threads,
    )
    max_tensor_bytes = channel_arguments["grpc.max_receive_message_length"]
    prediction = PredictionService(repository, args.delay_secs, max_tensor_bytes)
    # Register through the generated helpers, so method names and (de)serialisers are TF Serving's own.
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        type(
            "Servicer",
            (prediction_service_pb2_grpc.PredictionServiceServicer,),
            {name: getattr(prediction, name) for name in ("Predict", "GetModelMetadata", "Classify", "Regress")},
        )(),
        server,
    )
    model_service = ModelService(repository)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        type(
            "Servicer",
            (model_service_pb2_grpc.ModelServiceServicer,),
            {name: getattr(model_service, name) for name in ("GetModelStatus", "HandleReloadConfigRequest")},
        )(),
        server,
    )
    address = f"{args.host}:{args.port}"
    if args.ssl_config is not None:
        bound = server.add_secure_port(address, server_credentials(args.ssl_config))
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise SystemExit(f"error: cannot listen on {address}")
    server.start()
    models = ", ".join(
        f"{m.name} (versions {sorted(m.versions)}, labels {m.labels or {}})" for m in repository.models.values()
    )
    security = "plaintext" if args.ssl_config is None else "mutual TLS" if args.ssl_config.client_verify else "TLS"
    print(f"{READY_LINE.decode()} {models} on {args.host}:{bound} ({security})", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(args.model_config_file_poll_wait_seconds or 3600):
        if args.model_config_file and args.model_config_file_poll_wait_seconds:
            try:
                repository.apply_labels(read_config(args.model_config_file))
            except Exception as error:  # pylint: disable=broad-except
                _LOGGER.error("kept the previous version labels: %s", error)
    server.stop(grace=2).wait()


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments: key=value pairs, comma-separated; a value that reads as an integer is
    passed as one (model_servers/server.cc, parseGrpcChannelArgs and its use)."""
    pairs = []
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        try:
            pairs.append((key, int(value)))
        except ValueError:
            pairs.append((key, value))
    return pairs


def _schedulable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, checked, with `ssl_config` (an SSLConfig, or None for plaintext) added; exits 2 on a bad one."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--model_config_file", help="model_config_list in TF Serving's text format (version labels)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0)
    parser.add_argument(
        "--ssl_config_file",
        help="text-format tensorflow.serving.SSLConfig (server_key, server_cert, custom_ca: PEM text; client_verify)",
    )
    parser.add_argument("--tls_cert_file", help="PEM certificate: serve over TLS (an SSLConfig of it and the key)")
    parser.add_argument("--tls_key_file", help="PEM private key for --tls_cert_file")
    # --max_concurrent_requests: this flag's former name, kept for the callers that still use it.
    parser.add_argument(
        "--grpc_max_threads",
        "--max_concurrent_requests",
        type=int,
        default=4 * _schedulable_cpus(),
        help="requests handled at once; one more is RESOURCE_EXHAUSTED (default: TF Serving's, 4 per CPU)",
    )
    parser.add_argument(
        "--grpc_channel_arguments",
        type=channel_arguments,
        default=[],
        help="gRPC settings, key=value,...: e.g. grpc.max_receive_message_length, grpc.max_send_message_length "
        f"(default {DEFAULT_MAX_MESSAGE_BYTES} each)",
    )
    parser.add_argument("--delay_secs", type=float, default=0.0, help="added to every request (fault injection)")
    args = parser.parse_args(argv)
    if args.grpc_max_threads < 1:
        parser.error(f"--grpc_max_threads must be at least 1, got {args.grpc_max_threads}")
    for key, value in args.grpc_channel_arguments:
        if key in DEFAULT_CHANNEL_ARGUMENTS and not (isinstance(value, int) and value > 0):
            parser.error(f"{key} must be a positive number of bytes (the stand-in keeps its messages bounded)")
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls_cert_file and --tls_key_file go together")
    if args.tls_cert_file and args.ssl_config_file:
        parser.error("give --ssl_config_file or --tls_cert_file/--tls_key_file, not both")
    try:
        if args.ssl_config_file:
            args.ssl_config = read_ssl_config(args.ssl_config_file)
        elif args.tls_cert_file:
            server_cert, server_key = Path(args.tls_cert_file).read_text(), Path(args.tls_key_file).read_text()
            args.ssl_config = ssl_config_class()(server_key=server_key, server_cert=server_cert)
        else:
            args.ssl_config = None
        if args.ssl_config is not None:
            server_credentials(args.ssl_config)  # its checks, before the models load
    except (OSError, ValueError) as error:
        parser.error(f"TLS: {error}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args)


class ModelServerProcess(contextlib.AbstractContextManager):
    """Runs the stand-in as a real process on a fixed port, so that it can be killed and started again there."""

    def __init__(self, model_dir, port: int, log_path, args=()):
        self.model_dir, self.port, self.log_path, self.args = str(model_dir), port, Path(log_path), list(args)
        self.target = f"127.0.0.1:{port}"
        self._process: ManagedProcess | None = None

    def start(self, timeout_secs: float = 120) -> ModelServerProcess:
        # The log is appended to: a server killed and started again keeps one log with both runs.
        self._process = ManagedProcess(
            [
                sys.executable,
                "-m",
                "localdev.model_server",
                f"--model_dir={self.model_dir}",
                f"--port={self.port}",
                *self.args,
            ],
            self.log_path,
            name=f"the model server on {self.target}",
            append=True,
            error=RuntimeError,
        ).start()
        try:
            # Ready once it prints that it serves (after the port is bound and every model is loaded).
            self._process.wait_ready(
                lambda: self._process.logged(READY_LINE), timeout=timeout_secs, what=f"its line {READY_LINE.decode()!r}"
            )
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, as a crashed or evicted pod does."""
        if self._process is not None:
            self._process.stop(grace=30, sig=signal.SIGKILL)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=15)

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    main()
