"""Remote inference: the model behind TensorFlow Serving, called over gRPC with TF Serving's own protos.

One `PredictionService/Predict` request per batch, on one channel and stub per worker process (RunInference's
`Shared` hands the client returned by `load_model` to every thread of the process). Around each request:

- one wall-clock budget per batch (`retry_budget_secs`) for everything its scoring does: waiting for a request slot,
  each attempt, the backoff between attempts, and the element-by-element rescoring of a batch that failed
  permanently (model_handlers.base). Each attempt's deadline is `timeout_secs` or what is left of the budget, if
  less. The pipeline acknowledges a Pub/Sub message only once its output is published, and pipelines.delivery
  counts this budget as the longest inference may take: a batch that outlived it would be delivered again while
  still being scored. When the budget is spent, what is left of the batch is dead-lettered as retryable;
- retries with exponential backoff and jitter (Beam's `FuzzedExponentialIntervals`), within the budget, on the
  statuses of a server away, overloaded or interrupted (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
  ABORTED); INTERNAL, UNKNOWN and CANCELLED are retried twice at most: a connection reset mid-request surfaces
  as one of them, but so does a server bug that would burn the whole budget on every batch;
- dead letters `permanent` only when the event itself is the cause and sending it again fails again
  (INVALID_ARGUMENT, OUT_OF_RANGE): only these batches are rescored element by element. Every other status is
  `retryable`: replaying the event later may succeed (a server back, a model deployed, a permission granted);
- at most `max_in_flight` requests at once per worker process, across the SDK harness's bundle threads, so a
  worker cannot pile requests onto an overloaded server.

Over TLS (`tls`) the server is verified against `root_certificates_file` (else the system's roots); with
`client_certificate_file` and `client_key_file` the client presents its own certificate too (mutual TLS, for a TF
Serving that requires one, or the proxy in front of it). The files are read where the channel is made, in the
process that makes it (the launcher's preflight, each worker's `load_model`), never into the pickled handler: the
key stays out of the pipeline's serialized graph, and each process needs read access to the files.

Before the pipeline starts (`preflight`, from the launcher), `GetModelMetadata` must answer within the retry
budget with a signature that takes exactly the model's schema; a mismatch fails fast, naming the fields. Workers
repeat the check on load, but tolerate an unreachable server there (see `load_model`). Predictions carry the
version TF Serving reports in `PredictResponse.model_spec`, so a moved version label shows in the output the moment
it takes effect.

With `api=CLASSIFY_REGRESS` the batch goes as `tf.train.Example`s (`ModelInterface.to_example`) to
`PredictionService/Classify` (fraud; fraud_probability is the positive class's score) or `Regress` (price) on the
model's classify/regress signature instead, with the same deadlines, retries and checks: for TF Serving
deployments (or TFX-built models) that expose only the tf.Example API.

Why not Beam's `RemoteModelHandler`: it seals `run_inference`, which must stay open for per-element failure
isolation (model_handlers.base), and its client-side throttler sleeps outside any retry budget. Beam's retry
decorator is not used either: its budget counts only the backoff, not the attempts.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from apache_beam.metrics import Metrics
from apache_beam.utils import retry

from model_handlers.base import IsolatingModelHandler, Scored
from model_handlers.errors import SignatureMismatchError, TFServingRefused, TFServingUnreachable, UsageError
from model_handlers.interface import CLASSIFY, ModelInterface
from model_handlers.tf_serving_protocol import (
    APIS,
    CLASSIFY_REGRESS,
    PREDICT,
    SUSPECT_CODES,
    SUSPECT_RETRIES,
    TRANSIENT_CODES,
    RetryBudgetSpent,
    error_type,
    example_request,
    label_unset,
    predict_request,
    status_text,
    tf_dtype_name,
    unanswered,
)
from transforms.messages import ErrorType

_LOGGER = logging.getLogger(__name__)

# While TF Serving does not set a handler's label (a withdrawn canary), how long it asks for the fallback label
# before trying its own again.
LABEL_RECHECK_SECS = 5.0
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


class CredentialsUnreadable(UsageError, OSError):
    """A TLS file named by the options cannot be read where the channel is made."""


class TFServingClient:
    """One channel and stub per worker process, shared by its threads; bounds the requests in flight.

    `until(deadline)` gives a view of it for one batch: the same channel, stub and slots, with the time
    (`time.monotonic()`) by which every call made through it must have ended.
    """

    deadline: float | None = None

    def __init__(
        self,
        target: str,
        *,
        tls: bool,
        root_certificates: bytes | None,
        max_in_flight: int,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
    ):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = target
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates, private_key=client_key, certificate_chain=client_certificate
            )
            self.channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.in_flight = threading.BoundedSemaphore(max_in_flight)

    def until(self, deadline: float) -> TFServingClient:
        bounded = copy.copy(self)
        bounded.deadline = deadline
        return bounded

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
        fallback_label: str | None = None,
        timeout_secs: float = 5.0,
        retry_budget_secs: float = 30.0,
        initial_backoff_secs: float = 0.25,
        max_backoff_secs: float = 5.0,
        max_in_flight: int = 4,
        api: str = PREDICT,
        tls: bool = False,
        root_certificates_file: str | None = None,
        client_certificate_file: str | None = None,
        client_key_file: str | None = None,
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
          fallback_label: the label asked for while TF Serving does not set `version_label` (a canary falls back
            to stable once its label is withdrawn); it asks for `version_label` again every LABEL_RECHECK_SECS.
          timeout_secs: deadline of each request, cut to what is left of the retry budget.
          retry_budget_secs: the wall time one batch's scoring may take, requests, retries, backoff and
            element-by-element rescoring together (and the start-up check's); past it the batch fails as retryable.
          initial_backoff_secs, max_backoff_secs: the exponential backoff's first and largest delay (jittered).
          max_in_flight: requests in flight at once per worker process.
          api: PREDICT (raw features to the serving_default signature) or CLASSIFY_REGRESS (tf.Examples to the
            model's classify or regress signature through Classify or Regress).
          tls: use TLS; `root_certificates_file` (PEM) verifies the server, else the system's roots.
          client_certificate_file, client_key_file: PEM certificate (chain) and private key the client presents
            (mutual TLS); both or neither, with `tls`.
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
        if retry_budget_secs <= 0:
            raise ValueError(f"retry_budget_secs must be positive (it bounds a batch), got {retry_budget_secs}")
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if bool(client_certificate_file) != bool(client_key_file):
            raise ValueError("a client certificate and its key go together")
        if (root_certificates_file or client_certificate_file) and not tls:
            raise ValueError("certificates are for TLS: pass tls=True")
        self._api = api
        self._target = target
        self._model_name = model_name or interface.name
        self._model_version = model_version
        self._version_label = version_label
        self._fallback_label = fallback_label
        self._label_unset_until = 0.0  # monotonic: until then, ask for the fallback label
        self._timeout_secs = timeout_secs
        self._retry_budget_secs = retry_budget_secs
        self._initial_backoff_secs = initial_backoff_secs
        self._max_backoff_secs = max_backoff_secs
        self._max_in_flight = max_in_flight
        self._tls = tls
        # File names only: the files are read by `_client`, in the process that opens the channel.
        self._root_certificates_file = root_certificates_file
        self._client_certificate_file = client_certificate_file
        self._client_key_file = client_key_file

    # --- what is asked for ---------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self._target

    @property
    def signature_name(self) -> str:
        return self.interface.signature_name if self._api == PREDICT else self.interface.example_signature_name

    def describe(self) -> str:
        pinned = (
            f" version {self._model_version}"
            if self._model_version is not None
            else f" label {self._version_label!r}"
            + (f" (else {self._fallback_label!r})" if self._fallback_label else "")
            if self._version_label
            else " (latest version)"
        )
        return f"model {self._model_name!r}{pinned} at {self._target}"

    def model_spec(self, label: str | None = None):
        """The ModelSpec of every request: the pinned version, else `label` (by default the handler's label)."""
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self._model_name, signature_name=self.signature_name)
        if self._model_version is not None:
            spec.version.value = self._model_version
        elif label or self._version_label:
            spec.version_label = label or self._version_label
        return spec

    def _with_fallback(self, call: Callable[[Any], Any]):
        """`call(model_spec)` with the handler's label, or, while TF Serving does not set that label, with the
        fallback label."""
        if self._fallback_label is None:
            return call(self.model_spec())
        if time.monotonic() < self._label_unset_until:
            return call(self.model_spec(self._fallback_label))
        try:
            return call(self.model_spec())
        except grpc.RpcError as error:
            if not label_unset(error):
                raise
            self._label_unset_until = time.monotonic() + LABEL_RECHECK_SECS
            return call(self.model_spec(self._fallback_label))

    # --- Beam's ModelHandler contract ----------------------------------------------------------------------
    def _client(self, max_in_flight: int) -> TFServingClient:
        return TFServingClient(
            self._target,
            tls=self._tls,
            root_certificates=_read(self._root_certificates_file, "root certificates"),
            client_certificate=_read(self._client_certificate_file, "client certificate"),
            client_key=_read(self._client_key_file, "client key"),
            max_in_flight=max_in_flight,
        )

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

    def run_inference(
        self, batch: Sequence[Mapping[str, Any]], model: TFServingClient, inference_args: dict | None = None
    ):
        # One deadline for everything scoring this batch does, the isolation of a permanent failure included (it
        # calls `predict` once per element, each with the same bounded client).
        bounded = model.until(time.monotonic() + self._retry_budget_secs)
        return super().run_inference(batch, bounded, inference_args)

    def predict(self, batch: Sequence[Mapping[str, Any]], model: TFServingClient) -> Scored:
        import tensorflow as tf

        if self._api == CLASSIFY_REGRESS:
            method = "Classify" if self.interface.example_signature_name == CLASSIFY else "Regress"
            response = self._with_fallback(
                lambda spec: self._call(model, method, example_request(self.interface, batch, spec))
            )
            result = response.result
            results = (
                result.classifications if self.interface.example_signature_name == CLASSIFY else result.regressions
            )
            if len(results) != len(batch):
                raise ValueError(f"{method} returned {len(results)} results for a batch of {len(batch)}")
            rows = self.interface.rows_from_example_results(results)
        else:
            response = self._with_fallback(
                lambda spec: self._call(model, "Predict", predict_request(self.interface, batch, spec))
            )
            outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
            rows = self.interface.rows_from_outputs(outputs, len(batch))
        version = str(response.model_spec.version.value) if response.model_spec.HasField("version") else "unknown"
        return Scored(rows, version)

    def classify_error(self, error: BaseException) -> ErrorType:
        return error_type(error)

    def describe_error(self, error: BaseException) -> str:
        return status_text(error)

    def get_metrics_namespace(self) -> str:
        return f"marketplace_{self.interface.name}"

    # --- the calls -----------------------------------------------------------------------------------------
    def check_metadata(self, client: TFServingClient, require_reachable: bool) -> None:
        """Fails fast when the served signature does not match the schema, or TF Serving refuses the model; when
        it is unreachable after the retry budget, fails if `require_reachable`, else warns."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        def metadata(spec):
            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
            return self._call(client, "GetModelMetadata", request)

        try:
            response = self._with_fallback(metadata)
        except (grpc.RpcError, RetryBudgetSpent) as error:
            if unanswered(error):
                message = (
                    f"TF Serving did not answer GetModelMetadata for {self.describe()} "
                    f"within a retry budget of {self._retry_budget_secs:g}s: {status_text(error)}"
                )
                if require_reachable:
                    raise TFServingUnreachable(message) from error
                _LOGGER.warning("%s; scoring will retry and dead-letter while it stays away", message)
                return
            raise TFServingRefused(
                f"TF Serving refused GetModelMetadata for {self.describe()}: {status_text(error)}"
            ) from error
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        name = self.signature_name
        if name not in signatures.signature_def:
            raise SignatureMismatchError(
                f"{self.describe()} has no signature {name!r}; it has {sorted(signatures.signature_def)}"
            )
        signature = signatures.signature_def[name]
        inputs = {key: tf_dtype_name(info.dtype) for key, info in signature.inputs.items()}
        if self._api == CLASSIFY_REGRESS:
            problems = self.interface.example_signature_problems(inputs, list(signature.outputs), signature.method_name)
        else:
            problems = self.interface.signature_problems(inputs, list(signature.outputs))
        if problems:
            raise SignatureMismatchError(
                f"the {name!r} signature of {self.describe()} does not match the {self.interface.name!r} "
                "schema: " + "; ".join(problems)
            )
        _LOGGER.info(
            "TF Serving serves %s (version %s) with the expected signature",
            self.describe(),
            response.model_spec.version.value,
        )

    def _call(self, client: TFServingClient, method: str, request):
        """`method` with its retries, all ended by the client's deadline (a batch's), else a budget from now."""
        namespace = self.get_metrics_namespace()
        deadline = client.deadline if client.deadline is not None else time.monotonic() + self._retry_budget_secs
        delays = iter(
            retry.FuzzedExponentialIntervals(
                self._initial_backoff_secs, num_retries=10_000, max_delay_secs=self._max_backoff_secs
            )
        )
        suspect_retries = 0
        last_status: grpc.RpcError | None = None
        try:
            while True:
                try:
                    return self._attempt(client, method, request, deadline)
                except RetryBudgetSpent:
                    # The backoff ended inside the budget, but the retry could not start before it ran out (a busy
                    # machine, or every slot taken): the batch fails with the status that made it retry.
                    if last_status is not None:
                        raise last_status from None
                    raise
                except grpc.RpcError as error:
                    last_status = error
                    code = error.code()
                    if code in SUSPECT_CODES and suspect_retries < SUSPECT_RETRIES:
                        suspect_retries += 1
                    elif code not in TRANSIENT_CODES:
                        raise
                    delay = next(delays, None)
                    # No backoff that would end past the deadline: the batch fails now, with the last status.
                    if delay is None or time.monotonic() + delay >= deadline:
                        raise
                    Metrics.counter(namespace, "tf_serving_retries").inc()
                    _LOGGER.warning(
                        "%s to %s: retrying in %.2fs after %s", method, self._target, delay, status_text(error)
                    )
                    time.sleep(delay)
        except Exception:
            Metrics.counter(namespace, "tf_serving_failures").inc()
            raise

    def _attempt(self, client: TFServingClient, method: str, request, deadline: float):
        # Waiting for a slot counts against the budget too: the worker's other threads may hold them all.
        if not client.in_flight.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RetryBudgetSpent(f"the retry budget of {self._retry_budget_secs:g}s ran out waiting for a slot")
        try:
            timeout = min(self._timeout_secs, deadline - time.monotonic())
            if timeout <= 0:
                raise RetryBudgetSpent(f"the retry budget of {self._retry_budget_secs:g}s ran out before {method}")
            started = time.perf_counter()
            try:
                return getattr(client.stub, method)(request, timeout=timeout)
            finally:
                Metrics.distribution(self.get_metrics_namespace(), "tf_serving_request_latency_ms").update(
                    int((time.perf_counter() - started) * 1000)
                )
        finally:
            client.in_flight.release()


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise CredentialsUnreadable(f"cannot read the TF Serving {what} file {path}: {error.strerror}") from error
