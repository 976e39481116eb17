"""The stand-in's limits: a request's tensors are checked before anything is allocated for them (properties over
arbitrary TensorProtos, and the 17-byte request that named 40 MB), and the message and in-flight limits hold for
real over gRPC."""

import math
import os
import threading
import time
import tracemalloc

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from localdev.model_server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_DIMS,
    ModelServerProcess,
    ServingError,
    decode_tensor,
    parse_args,
)
from plumbing.ports import free_port

BOUND = 64  # bytes a tensor may take in the properties below: less than much of the content they generate
# What decoding may allocate beyond the tensor itself: a refusal's message, the shape as a list, small objects.
SLACK = 16 * 1024


def ten_million_floats_in_17_bytes():
    """The issue's request: a float32 tensor of shape [10000000] carrying one value, which TF repeats to fill it."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=10_000_000)])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[1.0])


@pytest.fixture(scope="module")
def traced():
    decode_tensor(tf.make_tensor_proto([1.0]), BOUND)  # TensorFlow's lazy imports, before anything is measured
    tracemalloc.start()
    yield
    tracemalloc.stop()


def decode_measured(proto, max_bytes):
    """decode_tensor's result (an array and its cost, or the ServingError) and the most it had allocated at once."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        outcome = decode_tensor(proto, max_bytes, "x")
    except ServingError as error:
        outcome = error
    return outcome, tracemalloc.get_traced_memory()[1] - before


# --- properties of decoding -----------------------------------------------------------------------------------------
VALUES = {
    "float_val": st.floats(width=32),
    "double_val": st.floats(),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=40),
    "half_val": st.integers(-(2**31), 2**31 - 1),
}
FIELD_OF = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
}
DIM = st.one_of(st.integers(-2, 12), st.integers(-(2**63), 2**63 - 1))
DECODED = [dtype for dtype in FIELD_OF if dtype not in (types_pb2.DT_HALF, types_pb2.DT_INT8)]


def with_shape(proto, dims):
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


@st.composite
def arbitrary_tensor_protos(draw):
    """Any data type (known or not), any shape (negative, huge, too many dimensions, unknown rank), and content
    that rarely matches it: tensor_content bytes, values in the dtype's field or another's."""
    dtype = draw(st.one_of(st.sampled_from(sorted(FIELD_OF)), st.integers(-3, 130)))
    many = st.lists(st.integers(0, 2), min_size=MAX_DIMS - 2, max_size=MAX_DIMS + 40)
    proto = with_shape(tensor_pb2.TensorProto(dtype=dtype), draw(st.one_of(st.lists(DIM, max_size=5), many)))
    proto.tensor_shape.unknown_rank = draw(st.integers(0, 9)) == 0
    for field in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=3)):
        getattr(proto, field).extend(draw(st.lists(VALUES[field], max_size=8)))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=2 * BOUND))
    return proto


@st.composite
def near_valid_tensor_protos(draw):
    """A type the server decodes, a small shape, and its content: exact, or one element short or over, as values
    or as tensor_content. Many fit the bound, many do not."""
    dtype = draw(st.sampled_from(DECODED))
    dims = draw(st.lists(st.integers(0, 6), max_size=3))
    proto = with_shape(tensor_pb2.TensorProto(dtype=dtype), dims)
    sent = max(0, math.prod(dims) + draw(st.sampled_from([0, 0, 0, -1, 1])))
    if dtype != types_pb2.DT_STRING and draw(st.booleans()):
        size = sent * tf.as_dtype(dtype).size
        proto.tensor_content = draw(st.binary(min_size=size, max_size=size))
    else:
        field = FIELD_OF[dtype]
        getattr(proto, field).extend(draw(st.lists(VALUES[field], min_size=sent, max_size=sent)))
    return proto


def tensor_protos():
    return st.one_of(arbitrary_tensor_protos(), near_valid_tensor_protos())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto=tensor_protos())
@example(proto=ten_million_floats_in_17_bytes())
@example(proto=with_shape(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1, 2]), [3]))  # one short
@example(proto=with_shape(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=range(9)), [9]))  # 72 bytes
def test_any_tensor_decodes_within_the_bound_or_is_invalid_argument_before_allocation(traced, proto):
    outcome, peak = decode_measured(proto, BOUND)
    if isinstance(outcome, ServingError):
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
        assert outcome.message.startswith("tensor parsing error: x: ")
    else:
        array, taken = outcome
        assert array.nbytes <= taken <= BOUND
        assert list(array.shape) == [dim.size for dim in proto.tensor_shape.dim]
        # Every element came in the request: nothing was filled in.
        if proto.tensor_content:
            assert len(proto.tensor_content) == array.nbytes
        else:
            assert len(getattr(proto, FIELD_OF[proto.dtype])) == array.size
        # Exactly what TF decodes from the same proto (accepted protos carry every element, so this is small).
        np.testing.assert_array_equal(array, tf.make_ndarray(proto))
    assert peak <= BOUND + SLACK, f"decoding allocated {peak} bytes at its peak"


TF_DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint32, np.uint64, np.bool_])


@settings(max_examples=80, deadline=None)
@given(
    array=st.one_of(
        hnp.arrays(TF_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
        hnp.arrays(object, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=st.binary(max_size=30)),
    )
)
def test_what_tf_encodes_decodes_to_the_same_array(traced, array):
    (decoded, taken), peak = decode_measured(tf.make_tensor_proto(array), 1 << 20)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.nbytes <= taken and peak <= taken + SLACK


def test_a_17_byte_tensor_naming_40_mb_is_refused_without_allocating_it(traced):
    proto = ten_million_floats_in_17_bytes()
    assert len(proto.SerializeToString()) == 17
    # TF itself fills the 10 million elements from the one value: the allocation this bound is about.
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    assert tf.make_ndarray(proto).nbytes == 40_000_000
    assert tracemalloc.get_traced_memory()[1] - before >= 40_000_000
    # The stand-in: 40 MB is within its default bound, but the request does not carry them.
    error, peak = decode_measured(proto, DEFAULT_MAX_MESSAGE_BYTES)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == (
        "tensor parsing error: x: shape [10000000] has 10000000 elements but the request carries 1 float_val values "
        "(TF would fill in the rest; this server does not)"
    )
    assert peak < SLACK
    error, _ = decode_measured(proto, 1_000_000)
    assert "shape [10000000] takes 40000000 bytes, more than the 1000000 left of a request's bound" in error.message


def test_the_limit_flags_default_to_tf_servings_and_messages_stay_bounded(capsys):
    defaults = parse_args([])
    assert defaults.grpc_max_threads == 4 * len(os.sched_getaffinity(0))  # TF Serving's: 4 per schedulable CPU
    assert defaults.grpc_channel_arguments == []  # so DEFAULT_CHANNEL_ARGUMENTS apply
    assert parse_args(["--max_concurrent_requests=3"]).grpc_max_threads == 3  # the former name of the same knob
    given = parse_args(["--grpc_channel_arguments=grpc.max_receive_message_length=1024,grpc.primary_user_agent=x"])
    assert given.grpc_channel_arguments == [("grpc.max_receive_message_length", 1024), ("grpc.primary_user_agent", "x")]
    for bad in (
        "--grpc_channel_arguments=grpc.max_receive_message_length=-1",
        "--grpc_channel_arguments=grpc.max_send_message_length=lots",
        "--grpc_channel_arguments=novalue",
        "--grpc_max_threads=0",
    ):
        with pytest.raises(SystemExit):
            parse_args([bad])
    assert "must be a positive number of bytes" in capsys.readouterr().err


# --- over gRPC, against the stand-in as a process -----------------------------------------------------------------
def export_doubling_model(path):
    """A SavedModel whose serving_default takes x (int64, [None]) and answers y = 2x."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.int64, shape=[None], name="x")
        y = tf.multiply(x, tf.constant(2, tf.int64), name="y")
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()


@pytest.fixture(scope="module")
def doubling_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("doubling")
    export_doubling_model(root / "double" / "1")
    return root


MIB = 1024 * 1024


@pytest.fixture(scope="module")
def small_server(doubling_repo, tmp_path_factory):
    """Messages of at most 1 MiB each way, so the limits are reached with small requests."""
    args = [f"--grpc_channel_arguments=grpc.max_receive_message_length={MIB},grpc.max_send_message_length={MIB}"]
    log = tmp_path_factory.mktemp("small-server") / "server.log"
    with ModelServerProcess(doubling_repo, free_port(), log, args) as server:
        yield server


@pytest.fixture(scope="module")
def stub(small_server):
    with grpc.insecure_channel(small_server.target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def doubling_request(x: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec={"name": "double"})
    request.inputs["x"].CopyFrom(x)
    return request


def int64s(shape, values=None, content=None):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    if values is not None:
        proto.int64_val.extend(values)
    if content is not None:
        proto.tensor_content = content
    return proto


def status_of(call):
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def answers_correctly(stub):
    response = stub.Predict(doubling_request(tf.make_tensor_proto(np.array([1, 2, 3], np.int64))), timeout=30)
    return tf.make_ndarray(response.outputs["y"]).tolist() == [2, 4, 6]


@pytest.mark.integration
def test_a_message_over_the_receive_limit_is_refused_by_grpc(stub):
    oversized = doubling_request(int64s([MIB // 8 + 1], content=bytes(8 * (MIB // 8 + 1))))
    code, details = status_of(lambda: stub.Predict(oversized, timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
    assert answers_correctly(stub)


@pytest.mark.integration
def test_tensors_named_beyond_what_the_request_carries_are_invalid_argument_and_the_server_keeps_serving(stub):
    cases = {
        # 17 bytes of tensor naming 40 MB: over the 1 MiB bound on a request's tensors.
        "takes 40000000 bytes, more than the 1048576": int64s([5_000_000], values=[1]),
        # 800 kB, within the bound, but one value sent for 100000 elements.
        "has 100000 elements but the request carries 1 int64_val values": int64s([100_000], values=[1]),
        # Packed zeros take a byte each on the wire and 8 decoded: a 200 kB message that decodes to 1.6 MB.
        "takes 1600000 bytes, more than the 1048576": int64s([200_000], values=[0] * 200_000),
        "needs 24 bytes of tensor_content, got 16": int64s([3], content=bytes(16)),
        "negative dimension": int64s([-1]),
    }
    for expected, tensor in cases.items():
        code, details = status_of(lambda tensor=tensor: stub.Predict(doubling_request(tensor), timeout=30))
        assert (code, expected in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
    assert answers_correctly(stub)


@pytest.mark.integration
@settings(max_examples=40, deadline=None)
@given(proto=tensor_protos())
def test_any_tensor_sent_is_answered_or_refused_as_invalid_argument_never_crashing_the_server(stub, proto):
    proto.dtype = types_pb2.DT_INT64  # the model's input type, so that decoding is reached
    code, details = status_of(lambda: stub.Predict(doubling_request(proto), timeout=30))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details
    assert answers_correctly(stub)


@pytest.mark.integration
def test_requests_beyond_grpc_max_threads_are_refused_at_once_not_queued(doubling_repo, tmp_path):
    args = ["--grpc_max_threads=2", "--delay_secs=1"]
    with (
        ModelServerProcess(doubling_repo, free_port(), tmp_path / "busy.log", args) as busy,
        grpc.insecure_channel(busy.target) as channel,
    ):
        grpc.channel_ready_future(channel).result(timeout=30)
        busy_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = doubling_request(tf.make_tensor_proto(np.array([1], np.int64)))
        finished, lock = [], threading.Lock()
        started = time.monotonic()

        def record(future):
            with lock:
                finished.append((future.code(), time.monotonic() - started))

        futures = [busy_stub.Predict.future(request, timeout=30) for _ in range(6)]
        for future in futures:
            future.add_done_callback(record)
        for future in futures:
            future.exception()  # waits for it to end
    answered = [secs for code, secs in finished if code == grpc.StatusCode.OK]
    refused = [secs for code, secs in finished if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(answered) + len(refused) == 6, finished
    assert 1 <= len(answered) <= 2 and all(secs >= 1 for secs in answered), finished
    # Refused as they came, not after waiting for a thread: before the first answer, 1 s in.
    assert refused and all(secs < 0.9 for secs in refused), finished
