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

Production uses the official TF Serving image (see deploy/). Two switches make faults real for tests and
benchmarks: `--delay_secs` (a slow server, or a remote GPU's latency) and `--max_concurrent_requests` (beyond it,
RESOURCE_EXHAUSTED, as TF Serving answers when its batching queue is full).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import grpc

from plumbing.process import ManagedProcess

_LOGGER = logging.getLogger("localdev.model_server")

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# What the server prints once the port is bound and every model is loaded: ModelServerProcess waits for it.
READY_LINE = b"TF Serving stand-in serving"


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

    def __init__(self, repository: ModelRepository, delay_secs: float, max_concurrent: int | None):
        self._repository = repository
        self._delay_secs = delay_secs
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None

    @contextlib.contextmanager
    def _admitted(self, context):
        if self._slots is not None and not self._slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the server is at --max_concurrent_requests; retry later")
        try:
            if self._delay_secs:
                time.sleep(self._delay_secs)
            yield
        except ServingError as error:
            context.abort(error.code, error.message)
        finally:
            if self._slots is not None:
                self._slots.release()

    def Predict(self, request, context):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        with self._admitted(context):
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
            for key, proto in request.inputs.items():
                wanted = signature_def.inputs[key].dtype
                if proto.dtype != wanted:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Expects arg[{key}] to be {tf.dtypes.as_dtype(wanted).name} but "
                        f"{tf.dtypes.as_dtype(proto.dtype).name} is provided",
                    )
                inputs[key] = tf.constant(tf.make_ndarray(proto))
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

        with self._admitted(context):
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

        with self._admitted(context):
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

        with self._admitted(context):
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
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.threads),
        options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ],
    )
    prediction = PredictionService(repository, args.delay_secs, args.max_concurrent_requests)
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
    if args.tls_cert_file:
        credentials = grpc.ssl_server_credentials(
            [(Path(args.tls_key_file).read_bytes(), Path(args.tls_cert_file).read_bytes())]
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise SystemExit(f"error: cannot listen on {address}")
    server.start()
    models = ", ".join(
        f"{m.name} (versions {sorted(m.versions)}, labels {m.labels or {}})" for m in repository.models.values()
    )
    print(f"{READY_LINE.decode()} {models} on {args.host}:{bound}", flush=True)

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--model_config_file", help="model_config_list in TF Serving's text format (version labels)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--tls_cert_file", help="PEM certificate: serve over TLS")
    parser.add_argument("--tls_key_file", help="PEM private key for --tls_cert_file")
    parser.add_argument("--delay_secs", type=float, default=0.0, help="added to every request (fault injection)")
    parser.add_argument("--max_concurrent_requests", type=int, help="beyond it, RESOURCE_EXHAUSTED")
    args = parser.parse_args(argv)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls_cert_file and --tls_key_file go together")
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
