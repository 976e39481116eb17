"""A real model-server outage under a streaming pipeline: the fraud pipeline scores through the TF Serving stand-in
while the stand-in is killed and started again. The TF Serving suite and the replay suite both make it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from localdev.model_server import ModelServerProcess
from localdev.streaming import StreamingRun
from localdev.traffic import make_traffic
from model_handlers.interface import FRAUD
from plumbing.ports import free_port


@contextlib.contextmanager
def through_an_outage(
    emulator,
    serving_repo,
    tmp_path,
    prefix: str,
    *,
    seed: int,
    outage_secs: float,
    retry_budget_secs: float,
    extra_args: tuple[str, ...] = (),
    before_publish: Callable[[StreamingRun], object] | None = None,
):
    """Yields (run, messages) once each of 240 events, published at 30/s while the server was killed for
    `outage_secs` after the first 60 outcomes, has come out; the pipeline and the server stop on exit."""
    messages = make_traffic(FRAUD, 240, malformed_fraction=0, seed=seed)
    server = ModelServerProcess(serving_repo, free_port(), tmp_path / "server.log").start()
    args = [
        "--inference=tf_serving",
        f"--tf_serving_target={server.target}",
        "--model_version=1",
        "--tf_serving_timeout_secs=1",
        f"--tf_serving_retry_budget_secs={retry_budget_secs}",
        *extra_args,
    ]
    try:
        with StreamingRun(emulator, "fraud", None, tmp_path, args, prefix=prefix) as run:
            if before_publish is not None:
                before_publish(run)
            publisher = threading.Thread(target=run.publish, args=(messages, 30))
            publisher.start()
            assert run.wait_for_outputs(60, timeout_secs=180), "nothing came out before the outage"
            server.kill()
            time.sleep(outage_secs)
            server.start()
            publisher.join(timeout=120)
            assert run.wait_for_outputs(len(messages), timeout_secs=240 + retry_budget_secs)
            yield run, messages
    finally:
        server.stop()
