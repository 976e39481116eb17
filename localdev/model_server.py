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

Security and limits, with TF Serving's flags and meanings (the sources are cited at LIMITS and SSLConfig in
localdev/model_server_config.py):

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

This module is the front door: the flags, `serve`, and `ModelServerProcess` that runs the server as a process for
tests and the demo. The servicers and the models they serve are in localdev/model_server_services.py; limits, config
files and TLS in localdev/model_server_config.py. Their public names are importable from here too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import grpc

from localdev.model_server_config import (
    DEFAULT_CHANNEL_ARGUMENTS,
    DEFAULT_MAX_MESSAGE_BYTES,
    channel_arguments,
    read_config,
    read_ssl_config,
    server_credentials,
    ssl_config_class,
)
from localdev.model_server_services import (
    CLASSIFY_METHOD,
    MAX_DIMS,
    REGRESS_METHOD,
    STRING_ELEMENT_BYTES,
    ModelRepository,
    ModelService,
    PredictionService,
    ServedModel,
    ServingError,
    Version,
    decode_tensor,
)
from plumbing import cli
from plumbing.ports import port_taken
from plumbing.process import ManagedProcess

# What other modules and the tests import from here, wherever it is defined now.
__all__ = [
    "CLASSIFY_METHOD",
    "DEFAULT_CHANNEL_ARGUMENTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_DIMS",
    "READY_LINE",
    "REGRESS_METHOD",
    "STRING_ELEMENT_BYTES",
    "ModelRepository",
    "ModelServerProcess",
    "ModelService",
    "PredictionService",
    "ServedModel",
    "ServingError",
    "Version",
    "channel_arguments",
    "decode_tensor",
    "main",
    "parse_args",
    "read_config",
    "read_ssl_config",
    "serve",
    "server_credentials",
    "ssl_config_class",
]

_LOGGER = logging.getLogger("localdev.model_server")

# What the server prints once the port is bound and every model is loaded: ModelServerProcess waits for it.
READY_LINE = b"TF Serving stand-in serving"
PORT_REMEDY = "stop it, or choose another port with --port (0: any free one)"


def serve(args) -> None:
    # Before TensorFlow is imported and the models load (seconds): a taken port is reported at once, with its holder.
    if args.port and (taken := port_taken(args.port, PORT_REMEDY)):
        raise SystemExit(f"error: {taken}")
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    config = read_config(args.model_config_file) if args.model_config_file else None
    repository = ModelRepository(args.model_dir, config)
    channel_arguments = DEFAULT_CHANNEL_ARGUMENTS | dict(args.grpc_channel_arguments)
    # As many threads as requests handled at once, and gRPC refuses the one more (see LIMITS): none ever waits in
    # the executor's queue. gRPC binds with SO_REUSEPORT unless told not to: a second stand-in on a taken port would
    # bind as well and take a share of its connections, silently. Without it the bind fails, naming the holder.
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.grpc_max_threads),
        options=list(({"grpc.so_reuseport": 0} | channel_arguments).items()),
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
    try:
        if args.ssl_config is not None:
            bound = server.add_secure_port(address, server_credentials(args.ssl_config))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # how gRPC Python reports a failed bind ("Failed to bind to address ...")
        bound = 0
    if not bound:
        taken = port_taken(args.port, PORT_REMEDY) if args.port else None
        raise SystemExit(f"error: cannot listen on {address}" + (f": {taken}" if taken else ""))
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


def _schedulable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, checked, with `ssl_config` (an SSLConfig, or None for plaintext) added; exits 2 on a bad one."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="default: 8500, TF Serving's; 0: any free one")
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

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"the model server on {self.target} has not been started")
        return self._process.pid

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
    cli.run(main)
