"""The command line of the local Flink cluster: `python -m localdev.flink install|start|stop|status`.

`start` leaves the cluster running after it exits (each component in a session of its own); `stop` and `status`
find it again through the state directory's state.json, from any process.
"""

from __future__ import annotations

import sys

from localdev.flink.cluster import COMPONENTS, LocalFlink
from localdev.flink.config import Ports
from localdev.flink.install import check_prerequisites
from localdev.flink.layout import DEFAULT_STATE_DIR, FlinkError, display
from plumbing import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m localdev.flink",
        description="A local Flink 1.20 cluster with Beam's job server and a Python SDK worker pool. "
        "Pipelines tell their SDK workers where Pub/Sub is (--pubsub_emulator_host, by default the "
        "launcher's PUBSUB_EMULATOR_HOST); the cluster needs no emulator address of its own.",
    )
    parser.add_argument("command", choices=("install", "start", "stop", "status"))
    parser.add_argument("--state_dir", default=str(DEFAULT_STATE_DIR), help="default: build/flink in the project")
    parser.add_argument("--slots", type=int, default=2, help="task slots of the TaskManager (start)")
    parser.add_argument(
        "--port_offset",
        type=int,
        default=0,
        help="added to every port the cluster listens on (start), to run it beside another: 10000 puts REST on "
        "18081 (stop and status find the ports in the state directory)",
    )
    args = parser.parse_args(argv)
    try:
        ports = Ports().shifted(args.port_offset) if args.port_offset else None
    except ValueError as error:
        parser.error(f"--port_offset: {error}")
    flink = LocalFlink(state_dir=args.state_dir, slots=args.slots, ports=ports)
    try:
        if args.command == "install":
            check_prerequisites()
            if flink.installed():
                print(f"already installed in {display(flink.state_dir)}")
            flink.install()
        elif args.command == "start":
            flink.start()
            print(
                f"\nup: Flink UI http://localhost:{flink.ports.rest}, Beam job server localhost:{flink.ports.job}, "
                f"SDK worker pool localhost:{flink.ports.worker_pool}"
            )
            print(f"logs: {display(flink.logs_dir)}/{{{','.join(COMPONENTS)}}}.log")
            print("pipeline flags (batch):\n  " + " ".join(flink.pipeline_args(streaming=False)))
            print("pipeline flags (streaming):\n  " + " ".join(flink.pipeline_args(streaming=True)))
            print("stop with: python -m localdev.flink stop")
        elif args.command == "stop":
            running = bool(flink._live_components())  # pylint: disable=protected-access
            flink.stop()
            print("stopped" if running else "nothing was running")
        else:
            status = flink.status()
            print(status.describe())
            return 0 if status.all_up else 3
    except FlinkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
