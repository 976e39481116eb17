"""The TF Serving stand-in's settings, as TF Serving reads them: its limits (with TF Serving's defaults and where they
are set), the model config file, the SSLConfig and server credentials for TLS, and --grpc_channel_arguments.

localdev.model_server parses its flags into these before anything is served; nothing here serves a request.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import grpc

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
