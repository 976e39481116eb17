"""Remote inference: the model behind TensorFlow Serving, called over gRPC with TF Serving's own protos.

One `PredictionService/Predict` request per batch, on one channel and stub per worker process (RunInference's
`Shared` hands the client returned by `load_model` to every thread of the process). Around each request:

- a deadline (`timeout_secs`);
- bounded retries with exponential backoff and jitter (Beam's `retry.with_exponential_backoff`), only on
  UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED, within `retry_budget_secs` of total backoff. Any other
  status is permanent. A batch still failing after its retries is dead-lettered as retryable;
- at most `max_in_flight` requests at once per worker process, across the SDK harness's bundle threads, so a
  worker cannot pile requests onto an overloaded server.

Before the pipeline starts (`preflight`, from the launcher), `GetModelMetadata` must answer within the retry
budget with a signature that takes exactly the model's schema; a mismatch fails fast, naming the fields. Workers
repeat the check on load, but tolerate an unreachable server there (see `load_model`). Predictions carry the version TF Serving reports in `PredictResponse.model_spec`, so a
moved version label shows in the output the moment it takes effect.

With `api=CLASSIFY_REGRESS` the batch goes as `tf.train.Example`s (`ModelInterface.to_example`) to
`PredictionService/Classify` (fraud; fraud_probability is the positive class's score) or `Regress` (price) on the
model's classify/regress signature instead, with the same deadlines, retries and checks: for TF Serving
deployments (or TFX-built models) that expose only the tf.Example API.

Why not Beam's `RemoteModelHandler`: it seals `run_inference`, which must stay open for per-element failure
isolation (model_handlers.base), and its client-side throttler sleeps outside any retry budget. Its retry helper
is used here as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping, Sequence

import grpc
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import retry

from model_handlers.base import PERMANENT, RETRYABLE, IsolatingModelHandler, Scored
from model_handlers.interface import CLASSIFY, FLOAT, INT, STRING, ModelInterface
from model_handlers.saved_model import SignatureMismatchError

_LOGGER = logging.getLogger(__name__)

# Which of TF Serving's APIs a batch goes through: Predict on raw features, or Classify/Regress on tf.Examples.
PREDICT = "predict"
CLASSIFY_REGRESS = "classify_regress"
APIS = (PREDICT, CLASSIFY_REGRESS)

RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# Requests carry up to max_batch_size events of up to max_event_bytes each: gRPC's 4 MiB default is too small.
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    # gRPC's reconnect backoff grows to 120 s by default: a server back after an outage would go unnoticed for
    # longer than the retry budget.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class TFServingRefused(ValueError):
    """TF Serving answered, with a permanent error (an unknown model, version or label)."""


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in RETRYABLE_CODES


def describe(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def tensor_proto(values: np.ndarray, dtype: str):
    """A numpy column -> TensorProto, without going through tf.make_tensor_proto's generic (slow) path."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    if dtype == STRING:
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=list(values))
    numpy_dtype, tf_dtype = {FLOAT: ("<f4", types_pb2.DT_FLOAT), INT: ("<i8", types_pb2.DT_INT64)}[dtype]
    return tensor_pb2.TensorProto(
        dtype=tf_dtype, tensor_shape=shape, tensor_content=np.asarray(values, dtype=numpy_dtype).tobytes()
    )


def predict_request(interface: ModelInterface, rows: Sequence[Mapping[str, Any]], model_spec):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest(model_spec=model_spec)
    columns = interface.to_columns(rows)
    for feature in interface.features:
        request.inputs[feature.name].CopyFrom(tensor_proto(columns[feature.name], feature.dtype))
    return request


def example_request(interface: ModelInterface, rows: Sequence[Mapping[str, Any]], model_spec):
    """A ClassificationRequest (classify models) or RegressionRequest (regress models) of the rows as tf.Examples."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request_type = (
        classification_pb2.ClassificationRequest if interface.example_signature_name == CLASSIFY
        else regression_pb2.RegressionRequest
    )
    request = request_type(model_spec=model_spec)
    request.input.example_list.examples.extend(interface.to_example(row) for row in rows)
    return request


class TFServingClient:
    """One channel and stub per worker process, shared by its threads; bounds the requests in flight."""

    def __init__(self, target: str, *, tls: bool, root_certificates: bytes | None, max_in_flight: int):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = target
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.in_flight = threading.BoundedSemaphore(max_in_flight)

    def close(self) -> None:
        self.channel.close()


class TFServingHandler(IsolatingModelHandler):
    """Scores batches of validated feature dicts by calling TF Serving's Predict."""

    def __init__(
        self,
        interface: ModelInterface,
        target: str,
        *,
        model_name: str | None = None,
        model_version: int | None = None,
        version_label: str | None = None,
        timeout_secs: float = 5.0,
        retry_budget_secs: float = 30.0,
        initial_backoff_secs: float = 0.25,
        max_backoff_secs: float = 5.0,
        max_in_flight: int = 4,
        api: str = PREDICT,
        tls: bool = False,
        root_certificates_file: str | None = None,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
    ):
        """
        Args:
          interface: the model's features and outputs.
          target: TF Serving's gRPC address, host:port.
          model_name: the name TF Serving serves the model under (default: the interface's name).
          model_version, version_label: pin a version or a label (e.g. "stable"); neither: TF Serving's latest.
          timeout_secs: deadline of each request.
          retry_budget_secs: total backoff allowed across the retries of one request (and of the start-up check).
          initial_backoff_secs, max_backoff_secs: the exponential backoff's first and largest delay (jittered).
          max_in_flight: requests in flight at once per worker process.
          api: PREDICT (raw features to the serving_default signature) or CLASSIFY_REGRESS (tf.Examples to the
            model's classify or regress signature through Classify or Regress).
          tls: use TLS; `root_certificates_file` (PEM) verifies the server, else the system's roots.
          min_batch_size, max_batch_size, max_batch_duration_secs: Beam's BatchElements knobs.
        """
        super().__init__(
            interface,
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
        )
        if model_version is not None and version_label is not None:
            raise ValueError("pin a model version or a version label, not both")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        self._api = api
        self._target = target
        self._model_name = model_name or interface.name
        self._model_version = model_version
        self._version_label = version_label
        self._timeout_secs = timeout_secs
        self._retry_budget_secs = retry_budget_secs
        self._initial_backoff_secs = initial_backoff_secs
        self._max_backoff_secs = max_backoff_secs
        self._max_in_flight = max_in_flight
        self._tls = tls
        self._root_certificates_file = root_certificates_file

    # --- what is asked for ---------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self._target

    @property
    def signature_name(self) -> str:
        return self.interface.signature_name if self._api == PREDICT else self.interface.example_signature_name

    def describe_model(self) -> str:
        pinned = (
            f" version {self._model_version}" if self._model_version is not None
            else f" label {self._version_label!r}" if self._version_label else " (latest version)"
        )
        return f"model {self._model_name!r}{pinned} at {self._target}"

    def model_spec(self):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self._model_name, signature_name=self.signature_name)
        if self._model_version is not None:
            spec.version.value = self._model_version
        elif self._version_label:
            spec.version_label = self._version_label
        return spec

    # --- Beam's ModelHandler contract ----------------------------------------------------------------------
    def _client(self, max_in_flight: int) -> TFServingClient:
        root_certificates = None
        if self._root_certificates_file:
            with open(self._root_certificates_file, "rb") as f:
                root_certificates = f.read()
        return TFServingClient(self._target, tls=self._tls, root_certificates=root_certificates, max_in_flight=max_in_flight)

    def load_model(self) -> TFServingClient:
        client = self._client(self._max_in_flight)
        try:
            # Workers load (and reload) the client at any time, outages included: there an unreachable server is
            # no reason to fail the worker, since requests retry and dead-letter. A mismatch still fails.
            self.check_metadata(client, require_reachable=False)
        except BaseException:
            client.close()
            raise
        return client

    def preflight(self) -> None:
        """The launcher's start-up check: TF Serving must answer (within the retry budget) with a matching
        signature, or the pipeline does not start."""
        client = self._client(max_in_flight=1)
        try:
            self.check_metadata(client, require_reachable=True)
        finally:
            client.close()

    def predict(self, batch: Sequence[Mapping[str, Any]], model: TFServingClient) -> Scored:
        import tensorflow as tf

        if self._api == CLASSIFY_REGRESS:
            method = "Classify" if self.interface.example_signature_name == CLASSIFY else "Regress"
            response = self._call(model, method, example_request(self.interface, batch, self.model_spec()))
            result = response.result
            results = result.classifications if self.interface.example_signature_name == CLASSIFY else result.regressions
            if len(results) != len(batch):
                raise ValueError(f"{method} returned {len(results)} results for a batch of {len(batch)}")
            rows = self.interface.rows_from_example_results(results)
        else:
            response = self._call(model, "Predict", predict_request(self.interface, batch, self.model_spec()))
            outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
            rows = self.interface.rows_from_outputs(outputs, len(batch))
        version = str(response.model_spec.version.value) if response.model_spec.HasField("version") else "unknown"
        return Scored(rows, version)

    def classify_error(self, error: BaseException) -> str:
        return RETRYABLE if is_retryable(error) else PERMANENT

    def describe_error(self, error: BaseException) -> str:
        return describe(error)

    def get_metrics_namespace(self) -> str:
        return f"marketplace_{self.interface.name}"

    # --- the calls -----------------------------------------------------------------------------------------
    def check_metadata(self, client: TFServingClient, require_reachable: bool) -> None:
        """Fails fast when the served signature does not match the schema, or TF Serving refuses the model; when
        it is unreachable after the retry budget, fails if `require_reachable`, else warns."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.model_spec(), metadata_field=["signature_def"]
        )
        try:
            response = self._call(client, "GetModelMetadata", request)
        except grpc.RpcError as error:
            if is_retryable(error):
                message = (
                    f"TF Serving did not answer GetModelMetadata for {self.describe_model()} "
                    f"within a retry budget of {self._retry_budget_secs:g}s: {describe(error)}"
                )
                if require_reachable:
                    raise ConnectionError(message) from error
                _LOGGER.warning("%s; scoring will retry and dead-letter while it stays away", message)
                return
            raise TFServingRefused(
                f"TF Serving refused GetModelMetadata for {self.describe_model()}: {describe(error)}"
            ) from error
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        name = self.signature_name
        if name not in signatures.signature_def:
            raise SignatureMismatchError(
                f"{self.describe_model()} has no signature {name!r}; it has {sorted(signatures.signature_def)}"
            )
        signature = signatures.signature_def[name]
        inputs = {key: tf_dtype_name(info.dtype) for key, info in signature.inputs.items()}
        if self._api == CLASSIFY_REGRESS:
            problems = self.interface.example_signature_problems(inputs, list(signature.outputs), signature.method_name)
        else:
            problems = self.interface.signature_problems(inputs, list(signature.outputs))
        if problems:
            raise SignatureMismatchError(
                f"the {name!r} signature of {self.describe_model()} does not match the {self.interface.name!r} "
                "schema: " + "; ".join(problems)
            )
        _LOGGER.info("TF Serving serves %s (version %s) with the expected signature",
                     self.describe_model(), response.model_spec.version.value)

    def _call(self, client: TFServingClient, method: str, request):
        namespace = self.get_metrics_namespace()
        retries = Metrics.counter(namespace, "tf_serving_retries")
        failures = Metrics.counter(namespace, "tf_serving_failures")
        latency = Metrics.distribution(namespace, "tf_serving_request_latency_ms")

        def log_retry(_message, delay_secs, _function, error_text, *_traceback):
            # Beam's retry helper hands over its message and a traceback; one line per retry is enough here.
            retries.inc()
            _LOGGER.warning("%s to %s: retrying in %.2fs after %s", method, self._target, delay_secs, error_text.strip())

        @retry.with_exponential_backoff(
            num_retries=1_000,  # the budget in seconds is the bound that matters
            initial_delay_secs=self._initial_backoff_secs,
            max_delay_secs=self._max_backoff_secs,
            stop_after_secs=self._retry_budget_secs,
            retry_filter=is_retryable,
            logger=log_retry,
            fuzz=True,
        )
        def attempt():
            with client.in_flight:
                started = time.perf_counter()
                try:
                    return getattr(client.stub, method)(request, timeout=self._timeout_secs)
                finally:
                    latency.update(int((time.perf_counter() - started) * 1000))

        try:
            return attempt()
        except Exception:
            failures.inc()
            raise


def tf_dtype_name(dtype_enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    name = types_pb2.DataType.Name(dtype_enum)  # DT_STRING
    return {"DT_STRING": "string", "DT_FLOAT": "float32", "DT_INT64": "int64"}.get(name, name.lower())
