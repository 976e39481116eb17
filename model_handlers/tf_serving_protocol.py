"""TF Serving's protocol as the handler speaks it (model_handlers.tf_serving): which API a batch goes through, the
requests built from rows with TF Serving's own protos, and what each gRPC status means for the events of a batch:
retried (and how often), or a permanent dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from model_handlers.interface import CLASSIFY, FEATURE_TYPES, STRING, ModelInterface
from transforms.messages import ErrorType

# Which of TF Serving's APIs a batch goes through: Predict on raw features, or Classify/Regress on tf.Examples.
PREDICT = "predict"
CLASSIFY_REGRESS = "classify_regress"
APIS = (PREDICT, CLASSIFY_REGRESS)

# The event itself is the cause: sending it again fails again. The only statuses that make a dead letter permanent.
PERMANENT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
# A server away, overloaded or interrupted: retried for as long as the budget lasts.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
# What a connection reset mid-request often surfaces as, but also what a deterministic server bug answers.
SUSPECT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED})
SUSPECT_RETRIES = 2


class RetryBudgetSpent(TimeoutError):
    """A batch's retry budget ran out before a request could be sent (all slots busy, or earlier requests)."""


def error_type(error: BaseException) -> ErrorType:
    """PERMANENT when the event is the cause: a status that says so, or a local error building the request or
    reading the answer; RETRYABLE for every other status and a spent budget."""
    if isinstance(error, RetryBudgetSpent):
        return ErrorType.RETRYABLE
    if isinstance(error, grpc.RpcError):
        return ErrorType.PERMANENT if error.code() in PERMANENT_CODES else ErrorType.RETRYABLE
    return ErrorType.PERMANENT


def unanswered(error: BaseException) -> bool:
    """The server could not be reached or did not answer sanely (the statuses retried), rather than refusing."""
    if isinstance(error, RetryBudgetSpent):
        return True
    return isinstance(error, grpc.RpcError) and error.code() in TRANSIENT_CODES | SUSPECT_CODES


def label_unset(error: BaseException) -> bool:
    """TF Serving's answer to a request for a version label its models.config does not set (server_core.cc)."""
    return (
        isinstance(error, grpc.RpcError)
        and error.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "Unrecognized servable version label" in (error.details() or "")
    )


def status_text(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def tensor_proto(values: np.ndarray, dtype: str):
    """A numpy column -> TensorProto, without going through tf.make_tensor_proto's generic (slow) path."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    feature_type = FEATURE_TYPES[dtype]
    tensor_dtype = types_pb2.DataType.Value(feature_type.tensor_dtype)
    if dtype == STRING:
        return tensor_pb2.TensorProto(dtype=tensor_dtype, tensor_shape=shape, string_val=list(values))
    # tensor_content is little-endian, whatever the machine.
    content = np.asarray(values, dtype=np.dtype(feature_type.numpy_dtype).newbyteorder("<")).tobytes()
    return tensor_pb2.TensorProto(dtype=tensor_dtype, tensor_shape=shape, tensor_content=content)


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
        classification_pb2.ClassificationRequest
        if interface.example_signature_name == CLASSIFY
        else regression_pb2.RegressionRequest
    )
    request = request_type(model_spec=model_spec)
    request.input.example_list.examples.extend(interface.to_example(row) for row in rows)
    return request


def tf_dtype_name(dtype_enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    name = types_pb2.DataType.Name(dtype_enum)  # DT_STRING
    by_tensor_dtype = {t.tensor_dtype: t.tf_name for t in FEATURE_TYPES.values()}
    return by_tensor_dtype.get(name, name.lower())
