"""What Flink is measured against on the same emulator: the plain google-cloud-pubsub consumer, and each piece of
the streaming path alone (the emulator's pull, publishing as the sink does, the project's per-event work)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import log, python_module, run_json_child
from benchmarks.flink.backlog import (
    PlainBacklogRun,
    drain_cpu,
    drain_figures,
    latency_after_drain,
    log_drain,
    wait_for_drain,
)
from benchmarks.flink.cpu import CpuMeter
from benchmarks.flink.knobs import LIGHT_LOAD_RATE, MODEL
from benchmarks.streaming import PlainConsumerRun, measure
from localdev.traffic import Message, make_traffic
from model_handlers.interface import MODELS


def run_plain(
    emulator,
    model_dir: str,
    logs: Path,
    backlog: Sequence[Message],
    sustained: Sequence[Message],
    latency_secs: float,
    light_secs: float = 0,
    ready_timeout_secs: float = 240,
) -> dict:
    """The baseline twice: as the `streaming` section measures it, and draining the same backlog as Flink."""
    result: dict = {}
    with PlainConsumerRun(emulator, MODEL, model_dir, logs, prefix="flink-plain-") as run:
        log(f"plain consumer (as the streaming section measures it): {len(sustained):,} events; log {run.log_path}")
        measured = measure(run, "plain consumer", sustained, latency_secs)
        result["as_streaming_section"] = measured
    with PlainBacklogRun(emulator, MODEL, model_dir, logs, prefix="flink-plain-backlog-", backlog=backlog) as run:
        log(
            f"plain consumer, backlog drain: {len(backlog):,} events published in {run.backlog_publish_secs:.1f}s "
            f"before it starts; log {run.log_path}"
        )
        meter = CpuMeter(
            {"Pub/Sub emulator": emulator._process.pid, "plain consumer": run._process.pid},  # pylint: disable=protected-access
            {"benchmark (publisher, collectors)": os.getpid()},
        )
        ready = wait_for_drain(run, "plain consumer", meter, time.monotonic(), ready_timeout_secs)
        cpu = drain_cpu(run, meter) if ready is not None else None
        drain = drain_figures(run)
        result["drain"] = {**drain, "ready_secs": ready, "cpu_during_drain": cpu}
        log_drain("plain consumer", drain, len(backlog), cpu)
        if drain.get("events_per_sec") and latency_secs:
            # At half its own drain rate, collected as Flink's outputs are: latencies compare like for like.
            result["latency"] = latency_after_drain(
                run, "plain consumer", drain["events_per_sec"] / 2, latency_secs, 61
            )
        if light_secs:
            result["light_load"] = latency_after_drain(run, "plain consumer", LIGHT_LOAD_RATE, light_secs, 62)
    return result


def pieces_alone(emulator, n: int, workdir: Path, model_dir: str, ceiling: dict | None) -> dict:
    """Each piece of the streaming path alone, on this machine: the emulator's synchronous pull (as PullFromPubSub
    pulls: up to 1,000 a call), publishing (as the sink does: whole requests of raw messages, transforms.pubsub_publish;
    and through the client's per-message batching, as the plain consumer does), and the project's per-event work
    outside Beam (benchmarks.ceiling's stage costs)."""
    from google.cloud import pubsub_v1

    from transforms.messages import OutputMessage
    from transforms.pubsub_publish import BulkPublisher

    traffic = make_traffic(MODELS[MODEL], n, malformed_fraction=0.0, seed=77)
    # Prediction-sized messages for the publish test: the real outputs are a small JSON body plus ~8 attributes.
    body = json.dumps(
        {"event_id": "e" * 36, "model": MODEL, "model_version": "1", "fraud_probability": 0.123456, "is_fraud": False}
    ).encode()
    attrs = {
        "source": "localdev.traffic",
        "seq": "12345",
        "published_at": "1700000000000",
        "event_id": "e" * 36,
        "model": MODEL,
        "model_version": "1",
        "scored_at": "2026-01-01T00:00:00.000Z",
    }
    publisher = pubsub_v1.PublisherClient()
    result: dict = {"n": n}
    for kind in ("pull", "pull_ack"):
        topic = emulator.create_topic(f"alone-{kind}")
        emulator.create_subscription(f"alone-{kind}", f"alone-{kind}-sub")
        sub = emulator.subscription_path(f"alone-{kind}-sub")
        for future in [publisher.publish(topic, m.payload, **m.attributes) for m in traffic]:
            future.result(timeout=120)
        with pubsub_v1.SubscriberClient() as subscriber:
            got, calls, t0 = 0, 0, time.perf_counter()
            while got < n and time.perf_counter() - t0 < 120:
                response = subscriber.pull(request={"subscription": sub, "max_messages": 1000}, timeout=5)
                calls += 1
                got += len(response.received_messages)
                if kind == "pull_ack" and response.received_messages:
                    subscriber.acknowledge(
                        request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
                    )
            secs = time.perf_counter() - t0
        result[kind] = {"messages": got, "calls": calls, "secs": secs, "events_per_sec": got / secs}
        log(f"alone: emulator {kind.replace('_', ' + ')} (1,000 a call): {got / secs:,.0f} messages/s")
    topic = emulator.create_topic("alone-publish")
    t0 = time.perf_counter()
    bulk = BulkPublisher(emulator.host, timeout_secs=60)
    message = OutputMessage(body, attrs)
    for _ in range(n):
        bulk.add(topic, message, None)
    bulk.wait(time.monotonic() + 120)
    bulk.close()
    secs = time.perf_counter() - t0
    result["publish_bulk"] = {"messages": n, "secs": secs, "events_per_sec": n / secs}
    log(f"alone: publish as the sink does (whole requests): {n / secs:,.0f} messages/s")
    t0 = time.perf_counter()
    for future in [publisher.publish(topic, body, **attrs) for _ in range(n)]:
        future.result(timeout=120)
    secs = time.perf_counter() - t0
    result["publish_free_running"] = {"messages": n, "secs": secs, "events_per_sec": n / secs}
    log(f"alone: publish through the client's batching: {n / secs:,.0f} messages/s")
    publisher.stop()
    if not ceiling:
        ceiling = run_json_child(
            python_module(
                "benchmarks.ceiling",
                f"--model_dir={model_dir}",
                f"--json_out={workdir / 'flink-ceiling.json'}",
                f"--models={MODEL}",
                "--batch_sizes=256",
                "--min_secs=0.5",
                "--min_calls=30",
            ),
            workdir / "logs" / "flink-ceiling.log",
            workdir / "flink-ceiling.json",
            timeout=300,
        )
    fraud = ceiling.get(MODEL, {})
    result["model_us_per_event"] = fraud.get("stages", {}).get("us_per_event")
    result["signature_b256_events_per_sec"] = fraud.get("by_batch", {}).get("256", {}).get("events_per_sec")
    us = result["model_us_per_event"] or {}
    if us.get("total_outside_beam"):
        log(
            f"alone: the project's per-event work outside Beam (parse, predict at batch 256, format): "
            f"{us['total_outside_beam']:.0f} us/event = {1e6 / us['total_outside_beam']:,.0f} events/s on one core"
        )
    return result
