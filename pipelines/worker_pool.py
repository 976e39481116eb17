"""The Beam SDK worker pool a Flink TaskManager starts its Python harnesses from, listening on loopback only.

    python -m pipelines.worker_pool --service_port=50000 [--container_executable=/opt/apache/beam/boot]

Beam's own entry point (`apache_beam.runners.worker.worker_pool_main`, what the SDK image's `boot --worker_pool`
runs) binds every interface ([::]:50000) and has no flag for the host. The pool is unauthenticated: whoever reaches
the port can have it start a harness process and point it at a control endpoint of their choosing. The only client
is the TaskManager in the same pod (or, locally, on the same machine), which reaches it as 127.0.0.1:50000
(--environment_config), so this entry point serves Beam's own servicer on loopback and nothing else. It is what
the TaskManager's worker-pool sidecar runs (deploy/flink-on-k8s) and what the local Flink cluster starts
(localdev/flink).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from plumbing import cli

LOOPBACK = "127.0.0.1"
# Read by the SDK image's boot when it starts a harness (it names the harness's working directories); Beam's
# `boot --worker_pool` sets it before it starts the pool, so this entry point does too.
POOL_ID_ENV = "BEAM_PYTHON_WORKER_POOL_ID"

_LOGGER = logging.getLogger("pipelines.worker_pool")


def serve(port: int, *, host: str = LOOPBACK, container_executable: str | None = None):
    """Starts Beam's worker-pool servicer on host:port; returns (address, grpc server). port 0 picks a free one."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer, kill_process_gracefully
    from apache_beam.utils import thread_pool_executor

    # The same server settings as Beam's worker_pool_main.start: keepalive pings from the runner without data are
    # fine for a pool that idles between jobs.
    options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"the worker pool could not bind {host}:{port}")
    pool = BeamFnExternalWorkerPoolServicer(use_process=True, container_executable=container_executable)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    # As Beam's start(): the harness processes go when the pool goes.
    atexit.register(lambda: [kill_process_gracefully(p) for p in list(pool._worker_processes.values())])
    return f"{host}:{bound}", server


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service_port", type=int, required=True, help="port to listen on (0: any free one)")
    parser.add_argument(
        "--host", default=LOOPBACK, help="address to listen on; loopback unless the runner is on another host"
    )
    parser.add_argument("--container_executable", help="harness launcher (the SDK image's /opt/apache/beam/boot)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault(POOL_ID_ENV, str(os.getpid()))
    address, server = serve(args.service_port, host=args.host, container_executable=args.container_executable)
    _LOGGER.info("Beam SDK worker pool listening at %s (executable: %s)", address, args.container_executable)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    cli.run(main)
