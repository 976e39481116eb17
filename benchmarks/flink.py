"""The fraud pipeline on a real local Flink 1.20 cluster (localdev.flink), in one run, against the baselines.

    python -m benchmarks.run --model_dir=models --only=flink [--quick]
        [--flink_state_dir=build/flink-bench --flink_port_offset=10000]    # beside another cluster (the tests)

1. Streaming on Flink (fraud, in_process), one fresh job per knob setting (CONFIGS): a backlog of N events is
   published into the input subscription before the job reads it, so the job drains it as fast as it can:
   drain throughput = (outputs - 1) / (last output - first output), outputs = predictions + dead letters, timed
   by when they reached Pub/Sub (the emulator's publish stamp; also the middle 80 %, as the collectors received
   them, and from the pipeline's own `scored_at` stamps). Then events paced at half that rate for a while:
   publish-to-prediction latency p50/p99 from the `published_at` attribute, prediction as received (as the
   `streaming` section), and to the prediction's publish. The default setting runs `repeats` times (medians);
   the others once each.
2. The plain google-cloud-pubsub consumer (benchmarks/plain_consumer.py) on the same emulator: measured exactly as
   the `streaming` section does (publish as fast as possible while it consumes), and drained from the same
   backlog as Flink, so the ratio compares like with like.
3. Backfill: the same JSON Lines file through the fraud backfill on Flink (batch) and on the DirectRunner, each
   run a fresh `benchmarks.backfill_worker` process (run + wait_until_finish timed, outputs counted); a small
   and a big input give fixed cost and steady state, as the `backfill` section computes them.
4. Where the time goes (always measured, so the figures explain themselves): CPU seconds per process during a
   drain (emulator, Flink JVMs, job server, SDK workers, launcher, the benchmark's own publisher/collectors); the
   pieces alone (emulator pull rate, publish rate the way WriteToPubSub publishes, the model's per-event cost
   from benchmarks.ceiling); and a py-spy profile of the SDK worker's bundle thread during a drain.

Everything it starts (emulator, cluster, jobs, launchers, consumers) stops on the way out. The machine is small
and shared; the benchmark's own publisher and collectors share its cores with the system under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import NamedTuple, Sequence

from benchmarks import backfill
from benchmarks.common import log, median, percentile, python_module, ratio, run_json_child
from benchmarks.streaming import PlainConsumerRun, _latency_stats, _unique_inputs, latency_phase, measure
from localdev.pubsub_emulator import PubsubEmulator
from localdev.streaming import Collector, StreamingRun, dead_letter_body, json_body
from localdev.traffic import Message, make_traffic
from model_handlers.interface import MODELS

MODEL = "fraud"
PY_SPY = os.environ.get("PY_SPY", "/tmp/pyspy/bin/py-spy")

# The knobs. Beam's and Flink's defaults: checkpoints as LocalFlink.pipeline_args sets them (5 s); bundles of at
# most 1,000 elements or 1,000 ms (the FlinkRunner's defaults; the source's elements are the streaming impulse's
# ticks, 10 ms apart, so a bundle is closed by time); parallelism 1 (the cluster's default); RunInference batches
# of at most 256; and the runner's data plane sends elements to the SDK worker only when 1 MB has piled up or the
# bundle ends (Beam Java's BeamFnDataOutboundAggregator: no time limit unless the experiment
# data_buffer_time_limit_ms sets one), so a tick waits for the end of its bundle before the SDK worker pulls.
BEAM_DEFAULTS = {"checkpointing_interval": 5000, "max_bundle_time_millis": 1000, "max_bundle_size": 1000,
                 "parallelism": 1, "max_batch_size": 256, "data_buffer_time_limit_ms": None}
# The default this benchmark picked from the sweep below (benchmarks/README.md, "flink"): ticks reach the SDK
# worker within 5 ms (latency p50/p99 about halved, throughput up), two source subtasks with an SDK worker process
# each (the cluster's two slots; throughput up, the bundle thread waits on RPCs much of the time).
DEFAULT = {**BEAM_DEFAULTS, "max_bundle_time_millis": 200, "parallelism": 2, "data_buffer_time_limit_ms": 5}
# Each a change from DEFAULT, one knob at a time (beam_defaults: all of Beam's and Flink's defaults at once).
CONFIGS = {
    "default": {},
    "beam_defaults": BEAM_DEFAULTS,
    "no_flush_limit": {"data_buffer_time_limit_ms": None},
    "flush_1ms": {"data_buffer_time_limit_ms": 1},
    "parallelism_1": {"parallelism": 1},
    "bundle_50ms": {"max_bundle_time_millis": 50},
    "bundle_1000ms": {"max_bundle_time_millis": 1000},
    "checkpoint_1s": {"checkpointing_interval": 1000},
    "checkpoint_30s": {"checkpointing_interval": 30000},
    "batch_1000": {"max_batch_size": 1000},
}


@dataclasses.dataclass(frozen=True)
class FlinkSetup:
    """Which local cluster: the default one (build/flink, ports 8081...), or another beside it."""

    state_dir: str | None = None  # None: LocalFlink's default, build/flink
    port_offset: int = 0  # added to every default port

    def cluster(self):
        from localdev.flink import LocalFlink, Ports

        ports = None
        if self.port_offset:
            ports = Ports(**{name: port + self.port_offset for name, port in dataclasses.asdict(Ports()).items()})
        if self.state_dir:
            _seed_install(Path(self.state_dir))
        return LocalFlink(state_dir=self.state_dir, ports=ports, verbose=False)


def _seed_install(state_dir: Path) -> None:
    """A new state directory reuses the default one's installed Flink and job server (hard links where the
    file system allows, else copies) instead of a minute of pip and Maven; LocalFlink checks what it finds."""
    from localdev.flink import DEFAULT_STATE_DIR

    source = DEFAULT_STATE_DIR
    if state_dir.resolve() == source.resolve():
        return
    for name in ("dist", "jobserver"):
        if (source / name).is_dir() and not (state_dir / name).exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            partial = state_dir / f"{name}.seeding"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                subprocess.run(["cp", "-al", str(source / name), str(partial)], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError):
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(source / name, partial, symlinks=True)
            partial.rename(state_dir / name)


# The TaskManager's JVM metaspace grows by a few tens of MB with every job (each ships the job server jar, loaded
# by a class loader of its own that is not let go) until it dies with OutOfMemoryError: Metaspace: after about 8
# jobs with Flink's default 256 MB (localdev.flink now gives it 768 MB). The benchmark submits about 20 jobs, so
# above this share the TaskManager is restarted between two jobs; where Flink has no metaspace figure yet (its
# REST metrics fill in lazily), after this many jobs.
METASPACE_RESTART_FRACTION = 0.5
JOBS_PER_TASKMANAGER = 4


def metaspace_fraction(flink) -> float | None:
    """The most used share of JVM metaspace over the TaskManagers (Flink's REST metrics), None if unknown."""
    fractions = []
    with contextlib.suppress(Exception):
        for tm in flink.rest("GET", "/taskmanagers")["taskmanagers"]:
            metrics = flink.rest("GET", f"/taskmanagers/{tm['id']}/metrics"
                                        "?get=Status.JVM.Memory.Metaspace.Used,Status.JVM.Memory.Metaspace.Max")
            values = {m["id"]: float(m["value"]) for m in metrics}
            if values.get("Status.JVM.Memory.Metaspace.Max", 0) > 0:
                fractions.append(values["Status.JVM.Memory.Metaspace.Used"] / values["Status.JVM.Memory.Metaspace.Max"])
    return max(fractions, default=None)


_jobs_on_taskmanager: dict[int, int] = {}  # id(flink) -> jobs since its TaskManager (re)started


def fresh_taskmanager_if_needed(flink, restarts: list) -> None:
    """Before each job: restart the TaskManager when its metaspace is past METASPACE_RESTART_FRACTION, or, with no
    figure from Flink, after JOBS_PER_TASKMANAGER jobs. No job runs between two measured ones, so nothing is lost;
    `restarts` collects what each restart was for and how long it took."""
    jobs = _jobs_on_taskmanager.get(id(flink), 0)
    fraction = metaspace_fraction(flink)
    due = fraction >= METASPACE_RESTART_FRACTION if fraction is not None else jobs >= JOBS_PER_TASKMANAGER
    if not due:
        _jobs_on_taskmanager[id(flink)] = jobs + 1
        return
    t0 = time.monotonic()
    flink.kill_taskmanager()
    flink.start_taskmanager()
    _jobs_on_taskmanager[id(flink)] = 1
    restarts.append({"metaspace_fraction": fraction, "jobs": jobs, "secs": time.monotonic() - t0})
    why = f"its metaspace was {fraction:.0%} full" if fraction is not None else f"{jobs} jobs since it started"
    log(f"TaskManager restarted in {time.monotonic() - t0:.0f}s ({why}): it keeps a class loader per job and would "
        f"die of OutOfMemoryError: Metaspace")


def config_args(flink, config: dict) -> list[str]:
    """Pipeline flags for a knob setting on this cluster (SDK worker processes follow --parallelism)."""
    c = {**DEFAULT, **config}
    return [
        *flink.pipeline_args(streaming=True, checkpointing_interval_ms=c["checkpointing_interval"]),
        # Beam's Java option is maxBundleTimeMills (sic): a --max_bundle_time_millis never reaches the runner.
        f"--max_bundle_time_mills={c['max_bundle_time_millis']}", f"--max_bundle_size={c['max_bundle_size']}",
        f"--parallelism={c['parallelism']}", f"--sdk_worker_parallelism={c['parallelism']}",
        f"--max_batch_size={c['max_batch_size']}",
        *([f"--experiments=data_buffer_time_limit_ms={c['data_buffer_time_limit_ms']}"]
          if c["data_buffer_time_limit_ms"] is not None else []),
    ]


# --- collectors --------------------------------------------------------------------------------------------------
class Output(NamedTuple):
    """One output message as the benchmark received it; duck-types localdev.streaming.Received."""

    body: dict
    attributes: dict[str, str]
    received_at: float  # time.time() when pulled
    publish_time: float  # when the system under test published it (the emulator's stamp, ms)

    @property
    def latency_secs(self) -> float | None:
        published_at = self.attributes.get("published_at")
        return self.received_at - int(published_at) / 1000 if published_at else None

    @property
    def pipeline_latency_secs(self) -> float | None:
        """Publish of the event -> publish of its output: the consumer of the outputs left out."""
        published_at = self.attributes.get("published_at")
        return self.publish_time - int(published_at) / 1000 if published_at else None


class StampedCollector(Collector):
    """Keeps every message of a subscription, with its publish time: StreamingRun's collector (streaming pull) plus
    the emulator's publish stamp of each output.

    A streaming-pull collector receives at most about 2,000 messages/s on this machine (measured alone), less than
    a system under test may publish; the publish stamps make the throughput figures independent of it."""

    def _record(self, message) -> Output:
        attributes = dict(message.attributes)
        try:
            body = self._decode(message.data, attributes)
        except ValueError:
            body = None
        return Output(body, attributes, time.time(), message.publish_time.timestamp())


# --- backlog runs ------------------------------------------------------------------------------------------------
class _BenchRun:
    """StreamingRun mixin for the measured runs: a backlog waiting before the process starts, and StampedCollectors.

    StreamingRun.start() creates the topics and subscriptions, then asks `command()` for the process to start. In
    between, this creates the collectors' own subscriptions and publishes the backlog, so the backlog is waiting
    when the reader starts (its drain is measured alone, no publisher competing for the cores) and no output can
    be missed. After start(), StreamingRun's collectors are closed and their subscriptions deleted: the emulator
    keeps a closed streaming pull as a subscriber and would hand it half of the messages."""

    def __init__(self, *args, backlog: Sequence[Message] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.backlog = list(backlog)
        self.backlog_publish_secs: float | None = None
        self.backlog_published_at: float | None = None  # time.time() when the last publish was confirmed
        self._prepared = False

    def _observers(self) -> list[str]:
        return [self.predictions_topic, self.dead_letters_topic]

    def command(self) -> list[str]:
        if not self._prepared:
            self._prepared = True
            for topic in self._observers():
                self.emulator.create_subscription(topic, f"{topic}-stamped")
            if self.backlog:
                self._publish_backlog()
        return super().command()

    def start(self):
        from google.cloud import pubsub_v1

        super().start()
        for collector in self._collectors:
            collector.close()
        with pubsub_v1.SubscriberClient() as subscriber:
            for topic in self._observers():
                subscriber.delete_subscription(
                    request={"subscription": self.emulator.subscription_path(f"{topic}-observer")})
        self._collectors = [
            StampedCollector(self.emulator.subscription_path(f"{topic}-stamped"), decode=decode)
            for topic, decode in zip(self._observers(), (json_body, dead_letter_body))
        ]
        return self

    def _publish_backlog(self) -> None:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        topic = self.emulator.topic_path(self.events_topic)
        t0 = time.time()
        futures = [
            publisher.publish(topic, m.payload, **{**m.attributes, "published_at": str(int(time.time() * 1000))})
            for m in self.backlog
        ]
        for future in futures:
            future.result(timeout=120)
        self.backlog_published_at = time.time()
        self.backlog_publish_secs = self.backlog_published_at - t0
        publisher.stop()


class FlinkBacklogRun(_BenchRun, StreamingRun):
    pass


class PlainBacklogRun(_BenchRun, PlainConsumerRun):
    pass


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        return int(fields[11]) + int(fields[12])
    return 0


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = Path(f"/proc/{entry}/stat").read_text()
                if int(raw[raw.rindex(")") + 2:].split()[2]) == pgid:
                    pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU seconds per component (a process group, or a single pid) between two snapshots."""

    def __init__(self, groups: dict[str, int], single: dict[str, int] | None = None):
        self._groups, self._single = groups, single or {}
        self._start: dict[str, dict[int, int]] = {}
        self._t0 = 0.0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        snap = {name: {pid: _cpu_ticks(pid) for pid in _group_pids(pgid)} for name, pgid in self._groups.items()}
        snap.update({name: {pid: _cpu_ticks(pid)} for name, pid in self._single.items()})
        return snap

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.monotonic()

    def stop(self) -> dict:
        end, wall = self._snapshot(), time.monotonic() - self._t0
        hz = os.sysconf("SC_CLK_TCK")
        secs = {}
        for name, pids in end.items():
            before = self._start.get(name, {})
            # A process that started in between counts from zero; one that ended is lost (rare in a drain).
            secs[name] = sum(ticks - before.get(pid, 0) for pid, ticks in pids.items()) / hz
        return {"wall_secs": wall, "cpu_secs": secs, "cores_busy": {k: v / wall for k, v in secs.items()} if wall else {},
                "cores_busy_total": sum(secs.values()) / wall if wall else None}


COMPONENT_NAMES = {"jobmanager": "Flink JobManager", "taskmanager": "Flink TaskManager",
                   "jobserver": "Beam job server", "workerpool": "SDK workers (worker pool)"}


def _cluster_groups(flink) -> dict[str, int]:
    """Process group per component of the local cluster (each runs in a session of its own)."""
    state = json.loads(flink.state_file.read_text())
    return {COMPONENT_NAMES.get(name, name): entry["pid"] for name, entry in state.get("processes", {}).items()}


def _sdk_workers(flink) -> list[int]:
    pool = _cluster_groups(flink).get(COMPONENT_NAMES["workerpool"])
    return [pid for pid in _group_pids(pool) if pid != pool] if pool else []


# --- one streaming setting ---------------------------------------------------------------------------------------
def _rates(times: Sequence[float]) -> dict:
    """(n - 1) / (last - first), and the same between the 10th and 90th percentile."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return {}
    lo, hi = int(0.1 * (len(times) - 1)), int(0.9 * (len(times) - 1))
    return {"secs": times[-1] - times[0], "events_per_sec": (len(times) - 1) / (times[-1] - times[0]),
            "events_per_sec_middle_80pct": (hi - lo) / (times[hi] - times[lo]) if times[hi] > times[lo] else None}


def _drain_stats(outputs: Sequence[Output], n_expected: int) -> dict:
    result: dict = {"outputs": len(outputs), "expected": n_expected}
    # When the outputs reached Pub/Sub (the emulator's publish time): the system's own rate, whoever reads them.
    published = _rates([r.publish_time for r in outputs])
    received = _rates([r.received_at for r in outputs])
    result["first_to_last_output_secs"] = published.get("secs")
    result["events_per_sec"] = published.get("events_per_sec")
    result["events_per_sec_middle_80pct"] = published.get("events_per_sec_middle_80pct")
    result["received_events_per_sec"] = received.get("events_per_sec")
    scored = sorted(int(_parse_rfc3339_ms(r.attributes["scored_at"])) for r in outputs if r.attributes.get("scored_at"))
    if len(scored) >= 2 and scored[-1] > scored[0]:
        # Pipeline-side: predictions stamped with the batch's scoring time (ms), the collectors left out.
        result["scored_at_events_per_sec"] = (len(scored) - 1) / ((scored[-1] - scored[0]) / 1000)
    return result


def _parse_rfc3339_ms(value: str) -> float:
    import datetime

    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.timestamp() * 1000


def _wait_for(run: StreamingRun, label: str, n: int, stall_secs: float, max_secs: float,
              on_first=None) -> None:
    """Until `n` outputs, no new output for `stall_secs` (after the first), or `max_secs`; progress every 5 s."""
    start = last_change = time.monotonic()
    next_report, last_count, first_seen = start + 5, 0, False
    while True:
        count = run.outputs()
        if count and not first_seen:
            first_seen = True
            if on_first:
                on_first()
        if count >= n:
            return
        run.check_alive()
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        if (first_seen and now - last_change > stall_secs) or now - start > max_secs:
            log(f"{label}: stopped waiting at {count:,} of {n:,} outputs")
            return
        if now >= next_report:
            log(f"{label}: {count:,} of {n:,} outputs")
            next_report = now + 5
        time.sleep(0.05)


def _pipeline_latency(outputs: Sequence[Output]) -> dict:
    """Event published -> its output published (the emulator's stamp): latency without the output's consumer."""
    values = [o.pipeline_latency_secs for o in outputs if getattr(o, "pipeline_latency_secs", None) is not None]
    return {"count": len(values), **{f"p{q}_ms": None if not values else percentile(values, q) * 1000
                                     for q in (50, 90, 99)}}


def _strip(d: dict) -> dict:
    """A copy without the raw latency lists (kept in the JSON, too long for logs)."""
    return {k: v for k, v in d.items() if k != "latencies_ms"}


def run_flink_config(
    flink, emulator, model_dir: str, logs: Path, name: str, config: dict, backlog: Sequence[Message],
    latency_secs: float, seed: int, ready_timeout_secs: float = 300, pyspy_secs: float = 0,
    restarts: list | None = None,
) -> dict:
    """A fresh streaming job with this knob setting: drain the backlog, then latency at half the drain rate."""
    settings = {**DEFAULT, **config}
    args = config_args(flink, config)
    fresh_taskmanager_if_needed(flink, restarts if restarts is not None else [])
    label = f"flink {name}"
    result: dict = {"config": settings, "args": args}
    started = time.monotonic()
    with FlinkBacklogRun(emulator, MODEL, model_dir, logs, args, prefix=f"flink-{name}-s{seed}-", backlog=backlog) as run:
        log(f"{label}: {len(backlog):,} events published in {run.backlog_publish_secs:.1f}s before the job reads; "
            f"job starting ({', '.join(f'{k}={v}' for k, v in settings.items())}); log {run.log_path}")
        groups = {"Pub/Sub emulator": emulator._process.pid, "pipeline launcher": run._process.pid,  # pylint: disable=protected-access
                  **_cluster_groups(flink)}
        meter = CpuMeter(groups, {"benchmark (publisher, collectors)": os.getpid()})
        profile = {}

        def on_first():
            meter.start()
            result["ready_secs"] = time.monotonic() - started
            log(f"{label}: first output {result['ready_secs']:.1f}s after launch; draining")
            if pyspy_secs:
                profile["spy"] = _start_pyspy(flink, logs / f"pyspy-{name}.txt", pyspy_secs)

        _wait_for(run, f"{label} drain", len(backlog), stall_secs=30,
                  max_secs=ready_timeout_secs + max(60.0, len(backlog) / 50), on_first=on_first)
        result["cpu_during_drain"] = meter.stop() if result.get("ready_secs") else None
        if not result.get("ready_secs"):
            raise RuntimeError(f"{label}: no output within {ready_timeout_secs:.0f}s; log {run.log_path}, "
                               f"job server log {flink.log_path('jobserver')}")
        predictions, dead = run.predictions, run.dead_letters
        outputs = [*predictions, *dead]
        first_output = min(r.received_at for r in outputs)
        drain = _drain_stats(outputs, len(backlog))
        drain.update(
            backlog_publish_secs=run.backlog_publish_secs,
            prepublished=first_output > (run.backlog_published_at or 0),
            predictions=len(predictions), dead_letters=len(dead), unique_inputs_out=_unique_inputs(predictions, dead),
            latency_under_backlog=_strip(_latency_stats(predictions)),
        )
        result["drain"] = drain
        if profile.get("spy"):
            result["pyspy"] = _finish_pyspy(profile["spy"])
        cores = result["cpu_during_drain"]
        log(f"{label}: drained {drain['outputs']:,}/{len(backlog):,} at {_n(drain.get('events_per_sec'))} events/s "
            f"(middle 80% {_n(drain.get('events_per_sec_middle_80pct'))}/s, as received "
            f"{_n(drain.get('received_events_per_sec'))}/s, scored_at {_n(drain.get('scored_at_events_per_sec'))}/s); "
            f"{cores['cores_busy_total']:.2f} cores busy: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores["cores_busy"].items(), key=lambda kv: -kv[1])))
        if drain.get("events_per_sec") and latency_secs:
            rate = drain["events_per_sec"] / 2
            base = len(run.predictions)
            result["latency"] = latency_phase(run, label, rate, latency_secs, seed + 1)
            result["latency"]["to_output_publish"] = _pipeline_latency(run.predictions[base:])
            log(f"{label}: latency at {rate:,.0f}/s: p50 {_n(result['latency']['p50_ms'])} ms, "
                f"p99 {_n(result['latency']['p99_ms'])} ms")
        flink.cancel_all_jobs()
    return result


def _n(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


# --- py-spy ------------------------------------------------------------------------------------------------------
def _start_pyspy(flink, out: Path, secs: float) -> dict | None:
    workers = _sdk_workers(flink)
    if not workers or not os.access(PY_SPY, os.X_OK):
        log(f"py-spy: {'no SDK worker found' if not workers else f'not found at {PY_SPY}'}; no profile")
        return None
    procs = []
    for pid in workers:
        path = out.with_name(f"{out.stem}-{pid}.txt")
        command = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(secs)), "--rate", "50", "--idle",
                   "--threads", "--nonblocking", "--format", "raw", "--output", str(path)]
        procs.append((pid, path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
    log(f"py-spy: recording SDK worker(s) {workers} for {secs:.0f}s")
    return {"procs": procs}


# Where a sample of the bundle thread is: the category of its innermost frame that matches one (first match wins).
CATEGORIES = (
    ("pull (emulator RPC, message conversion)", ("pubsub_pull.py", "pubsub_v1/services/subscriber/")),
    ("publish (official client, batched; acknowledge)",
     ("pubsub_publish.py", "pubsub_v1/publisher/", "pubsub_v1/services/publisher/")),
    ("model (TensorFlow, SavedModel handler)", ("tensorflow/", "model_handlers/")),
    ("parse / validate", ("transforms/events.py",)),
    ("format prediction / dead letter", ("transforms/predictions.py", "transforms/dead_letter.py")),
    ("waiting for elements from the runner (data plane)", ("data_plane.py",)),
    ("RunInference / batching", ("ml/inference/", "transforms/util.py")),
    ("Beam harness (coders, windows, bookkeeping)", ("apache_beam/",)),
)
OUTSIDE_BUNDLE = "outside a bundle (waiting for the runner to start one)"


def _finish_pyspy(spy: dict) -> dict:
    """Per SDK worker: the bundle thread's wall time by category."""
    result = {}
    for pid, path, proc in spy["procs"]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not path.exists():
            result[str(pid)] = {"error": "no output"}
            continue
        result[str(pid)] = {**categorize_pyspy(path.read_text(errors="replace")), "raw": f"logs/{path.name}"}
    return result


def categorize_pyspy(raw: str) -> dict:
    """py-spy `record --format raw --threads --idle`: `thread (tid): name;frame (file:line);... count` lines, root
    first. Samples inside process_bundle are the bundle thread's work (or waits); every thread is sampled at every
    tick with --idle, so the most-sampled thread's count is the recording's length in samples."""
    per_thread: dict[str, int] = {}
    in_bundle: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        per_thread[frames[0]] = per_thread.get(frames[0], 0) + n
        if not any("process_bundle" in f for f in frames):
            continue
        category = "other"
        for frame in reversed(frames):  # innermost first
            hit = next((name for name, needles in CATEGORIES if any(x in frame for x in needles)), None)
            if hit:
                category = hit
                break
        in_bundle[category] = in_bundle.get(category, 0) + n
    wall = max(per_thread.values(), default=0)
    busy = sum(in_bundle.values())
    total = max(wall, busy)
    share = {k: v / total for k, v in in_bundle.items()} if total else {}
    if total and total > busy:
        share[OUTSIDE_BUNDLE] = (total - busy) / total
    return {"samples": total, "in_bundle_samples": busy, "threads": len(per_thread),
            "share": dict(sorted(share.items(), key=lambda kv: -kv[1]))}


# --- the plain consumer ------------------------------------------------------------------------------------------
def run_plain(
    emulator, model_dir: str, logs: Path, backlog: Sequence[Message], sustained: Sequence[Message],
    latency_secs: float, ready_timeout_secs: float = 240,
) -> dict:
    """The baseline twice: as the `streaming` section measures it, and draining the same backlog as Flink."""
    result: dict = {}
    with PlainConsumerRun(emulator, MODEL, model_dir, logs, prefix="flink-plain-") as run:
        log(f"plain consumer (as the streaming section measures it): {len(sustained):,} events; log {run.log_path}")
        measured = measure(run, "plain consumer", sustained, latency_secs)
        result["as_streaming_section"] = measured
    with PlainBacklogRun(emulator, MODEL, model_dir, logs, prefix="flink-plain-backlog-", backlog=backlog) as run:
        log(f"plain consumer, backlog drain: {len(backlog):,} events published in {run.backlog_publish_secs:.1f}s "
            f"before it starts; log {run.log_path}")
        meter = CpuMeter({"Pub/Sub emulator": emulator._process.pid, "plain consumer": run._process.pid},  # pylint: disable=protected-access
                         {"benchmark (publisher, collectors)": os.getpid()})
        started, state = time.monotonic(), {}

        def on_first():
            meter.start()
            state["ready_secs"] = time.monotonic() - started

        _wait_for(run, "plain consumer drain", len(backlog), stall_secs=30,
                  max_secs=ready_timeout_secs + max(60.0, len(backlog) / 50), on_first=on_first)
        cpu = meter.stop() if state else None
        predictions, dead = run.predictions, run.dead_letters
        outputs = [*predictions, *dead]
        drain = _drain_stats(outputs, len(backlog))
        drain.update(
            backlog_publish_secs=run.backlog_publish_secs,
            prepublished=bool(outputs) and min(r.received_at for r in outputs) > (run.backlog_published_at or 0),
            predictions=len(predictions), dead_letters=len(dead), unique_inputs_out=_unique_inputs(predictions, dead),
            latency_under_backlog=_strip(_latency_stats(predictions)),
        )
        result["drain"] = {**drain, "ready_secs": state.get("ready_secs"), "cpu_during_drain": cpu}
        log(f"plain consumer: drained {drain['outputs']:,}/{len(backlog):,} at {_n(drain.get('events_per_sec'))} "
            f"events/s (middle 80% {_n(drain.get('events_per_sec_middle_80pct'))}/s, as received "
            f"{_n(drain.get('received_events_per_sec'))}/s)"
            + (f"; {cpu['cores_busy_total']:.2f} cores busy: " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(cpu["cores_busy"].items(), key=lambda kv: -kv[1])) if cpu else ""))
        if drain.get("events_per_sec") and latency_secs:
            # At half its own drain rate, collected as Flink's outputs are: latencies compare like for like.
            base = len(run.predictions)
            result["latency"] = latency_phase(run, "plain consumer", drain["events_per_sec"] / 2, latency_secs, 61)
            result["latency"]["to_output_publish"] = _pipeline_latency(run.predictions[base:])
    return result


# --- backfill ----------------------------------------------------------------------------------------------------
def run_backfill(flink, model_dir: str, workdir: Path, n_small: int, n_big: int, repeats: int,
                 variants: bool, restarts: list | None = None) -> dict:
    """The same files through the fraud backfill on the DirectRunner and on Flink (batch), each run a fresh
    process; medians of `repeats`; steady state and fixed cost from the two sizes (benchmarks.backfill)."""
    paths = backfill.write_inputs(workdir, MODEL, [n_small, n_big])
    runners = {"direct_runner": [], "flink": flink.pipeline_args(streaming=False)}
    samples: dict = {name: {"small": [], "big": []} for name in runners}
    for r in range(repeats):
        for name, extra in runners.items():
            for kind, n in (("small", n_small), ("big", n_big)):
                if name == "flink":
                    fresh_taskmanager_if_needed(flink, restarts if restarts is not None else [])
                one = backfill.run_once(MODEL, paths[n], n, model_dir, workdir, f"flink-backfill-{name}-{n}-r{r}",
                                        extra, timeout=900)
                samples[name][kind].append(one)
                log(f"backfill {name} N={n:,} repeat {r + 1}/{repeats}: run+wait {one['run_wait_secs']:.1f}s "
                    f"({one['events_per_sec']:,.0f} events/s end to end), outputs verified")
    result: dict = {"n_small": n_small, "n_big": n_big, "repeats": repeats}
    for name in runners:
        t_small = median([s["run_wait_secs"] for s in samples[name]["small"]])
        t_big = median([s["run_wait_secs"] for s in samples[name]["big"]])
        steady, fixed = backfill.steady_state(n_small, t_small, n_big, t_big)
        result[name] = {
            "extra_args": runners[name], "samples": samples[name], "median_secs_small": t_small,
            "median_secs_big": t_big, "end_to_end_events_per_sec": n_big / t_big, "steady_events_per_sec": steady,
            "fixed_secs": fixed,
        }
    if variants:
        extra = [*runners["flink"], "--parallelism=2", "--sdk_worker_parallelism=2"]
        fresh_taskmanager_if_needed(flink, restarts if restarts is not None else [])
        one = backfill.run_once(MODEL, paths[n_big], n_big, model_dir, workdir, f"flink-backfill-p2-{n_big}", extra,
                                timeout=900)
        result["flink_parallelism_2"] = {"extra_args": extra, "run": one, "end_to_end_events_per_sec": one["events_per_sec"]}
        log(f"backfill flink --parallelism=2 N={n_big:,}: run+wait {one['run_wait_secs']:.1f}s "
            f"({one['events_per_sec']:,.0f} events/s end to end), outputs verified")
    result["flink_over_direct_runner_end_to_end"] = ratio(
        result["flink"]["end_to_end_events_per_sec"], result["direct_runner"]["end_to_end_events_per_sec"])
    result["flink_over_direct_runner_steady"] = ratio(
        result["flink"]["steady_events_per_sec"], result["direct_runner"]["steady_events_per_sec"])
    return result


# --- the pieces alone --------------------------------------------------------------------------------------------
def pieces_alone(emulator, n: int, workdir: Path, model_dir: str, ceiling: dict | None) -> dict:
    """Each piece of the streaming path alone, on this machine: the emulator's synchronous pull (as PullFromPubSub
    pulls: up to 1,000 a call), publishing (as WriteToPubSub does: 100, then wait for them; and free-running), and
    the project's per-event work outside Beam (benchmarks.ceiling's stage costs)."""
    from google.cloud import pubsub_v1

    traffic = make_traffic(MODELS[MODEL], n, malformed_fraction=0.0, seed=77)
    # Prediction-sized messages for the publish test: the real outputs are a small JSON body plus ~8 attributes.
    body = json.dumps({"event_id": "e" * 36, "model": MODEL, "model_version": "1", "fraud_probability": 0.123456,
                       "is_fraud": False}).encode()
    attrs = {"source": "localdev.traffic", "seq": "12345", "published_at": "1700000000000", "event_id": "e" * 36,
             "model": MODEL, "model_version": "1", "scored_at": "2026-01-01T00:00:00.000Z"}
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
                    subscriber.acknowledge(request={"subscription": sub,
                                                    "ack_ids": [m.ack_id for m in response.received_messages]})
            secs = time.perf_counter() - t0
        result[kind] = {"messages": got, "calls": calls, "secs": secs, "events_per_sec": got / secs}
        log(f"alone: emulator {kind.replace('_', ' + ')} (1,000 a call): {got / secs:,.0f} messages/s")
    topic = emulator.create_topic("alone-publish")
    for kind, wait_every in (("publish_wait_per_100", 100), ("publish_free_running", n)):
        t0 = time.perf_counter()
        for start in range(0, n, wait_every):
            futures = [publisher.publish(topic, body, **attrs) for _ in range(min(wait_every, n - start))]
            for future in futures:
                future.result(timeout=120)
        secs = time.perf_counter() - t0
        result[kind] = {"messages": n, "secs": secs, "events_per_sec": n / secs}
        log(f"alone: {kind.replace('_', ' ')}: {n / secs:,.0f} messages/s")
    publisher.stop()
    if not ceiling:
        ceiling = run_json_child(
            python_module("benchmarks.ceiling", f"--model_dir={model_dir}", f"--json_out={workdir / 'flink-ceiling.json'}",
                          f"--models={MODEL}", "--batch_sizes=256", "--min_secs=0.5", "--min_calls=30"),
            workdir / "logs" / "flink-ceiling.log", workdir / "flink-ceiling.json", timeout=300,
        )
    fraud = ceiling.get(MODEL, {})
    result["model_us_per_event"] = fraud.get("stages", {}).get("us_per_event")
    result["signature_b256_events_per_sec"] = fraud.get("by_batch", {}).get("256", {}).get("events_per_sec")
    us = result["model_us_per_event"] or {}
    if us.get("total_outside_beam"):
        log(f"alone: the project's per-event work outside Beam (parse, predict at batch 256, format): "
            f"{us['total_outside_beam']:.0f} us/event = {1e6 / us['total_outside_beam']:,.0f} events/s on one core")
    return result


# --- the whole section -------------------------------------------------------------------------------------------
def run(
    model_dir: str, workdir: Path, profile: dict, setup: FlinkSetup, results: dict, configs: Sequence[str] | None = None,
    ceiling: dict | None = None,
) -> dict:
    """Everything above against one emulator and one local cluster; fills `results` as it goes (an interruption
    keeps what was measured) and stops everything it started on the way out.

    profile keys: flink_backlog_events, flink_plain_events, flink_latency_secs, flink_repeats, flink_configs,
    flink_backfill_n_small, flink_backfill_n_big, flink_backfill_repeats, flink_variants, flink_pyspy_secs."""
    from localdev.flink import BEAM_JAVA_VERSION, FLINK_VERSION

    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    configs = list(configs if configs is not None else profile["flink_configs"])
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown Flink settings {unknown}; choose from {list(CONFIGS)}")
    n_backlog, latency_secs, repeats = profile["flink_backlog_events"], profile["flink_latency_secs"], profile["flink_repeats"]
    traffic = make_traffic(MODELS[MODEL], max(n_backlog, profile["flink_plain_events"]), malformed_fraction=0.03, seed=21)
    backlog = traffic[:n_backlog]
    results.update(
        model=MODEL, inference="in_process", flink_version=FLINK_VERSION, beam_java_runner_version=BEAM_JAVA_VERSION,
        backlog_events=n_backlog, latency_secs=latency_secs, default_config=DEFAULT, beam_defaults=BEAM_DEFAULTS,
        configs={name: {**DEFAULT, **CONFIGS[name]} for name in configs}, streaming={}, notes=NOTES,
        taskmanager_restarts=[],
    )
    with PubsubEmulator(project="bench-project", log_path=str(logs / "flink-emulator.log")) as emulator:
        log(f"Pub/Sub emulator up at {emulator.host}")
        flink = setup.cluster()
        results["cluster"] = {"state_dir": str(flink.state_dir), "ports": dataclasses.asdict(flink.ports),
                              "slots": flink.slots, "logs": str(flink.logs_dir)}
        log(f"local Flink {FLINK_VERSION} + Beam {BEAM_JAVA_VERSION} job server + SDK worker pool starting "
            f"({flink.state_dir}, REST port {flink.ports.rest})")
        t0 = time.monotonic()
        flink.start()  # the emulator's address travels with each pipeline's options
        results["cluster"]["start_secs"] = time.monotonic() - t0
        log(f"local Flink up in {results['cluster']['start_secs']:.0f}s")
        try:
            # The default setting first and last (and between, with more repeats), the others in between: slow
            # drifts of a shared machine spread over all of them.
            order = ["default"] + [c for c in configs if c != "default"]
            order += ["default"] * (repeats - 1)
            for i, name in enumerate(order):
                secs = latency_secs if name == "default" else latency_secs / 2
                log(f"Flink streaming {i + 1}/{len(order)}: setting {name!r}")
                one = run_flink_config(flink, emulator, model_dir, logs, name, CONFIGS[name], backlog, secs,
                                       seed=100 + 10 * i, restarts=results["taskmanager_restarts"])
                if name != "default" and one.get("latency"):
                    one["latency"].pop("latencies_ms", None)  # the raw samples of the default setting only
                results["streaming"].setdefault(name, []).append(one)
            log("plain consumer on the same emulator")
            results["plain_consumer"] = run_plain(emulator, model_dir, logs, backlog,
                                                  traffic[:profile["flink_plain_events"]], latency_secs)
            log("where the time goes: the pieces alone")
            results["pieces_alone"] = pieces_alone(emulator, min(n_backlog, 10_000), workdir, model_dir, ceiling)
            if profile.get("flink_pyspy_secs"):
                log("where the time goes: py-spy on the SDK worker during one more drain (default setting, not "
                    "counted in the medians)")
                results["pyspy_run"] = run_flink_config(
                    flink, emulator, model_dir, logs, "pyspy", CONFIGS["default"], backlog, 0, seed=900,
                    pyspy_secs=profile["flink_pyspy_secs"], restarts=results["taskmanager_restarts"])
            log(f"backfill: N={profile['flink_backfill_n_small']:,} and N={profile['flink_backfill_n_big']:,}, "
                f"DirectRunner and Flink, {profile['flink_backfill_repeats']} repeat(s), each a fresh process")
            results["backfill"] = run_backfill(
                flink, model_dir, workdir, profile["flink_backfill_n_small"], profile["flink_backfill_n_big"],
                profile["flink_backfill_repeats"], profile["flink_variants"], results["taskmanager_restarts"])
        finally:
            with contextlib.suppress(Exception):
                flink.cancel_all_jobs(timeout=30)
            flink.stop()
            log("local Flink stopped")
    return results


NOTES = [
    "the benchmark's collectors (a streaming pull each, as StreamingRun's) receive at most about 2,000 messages/s "
    "on this machine: throughput is timed by the emulator's publish stamps of the outputs, not by when they were "
    "received; at half the drain rate they keep up, but near their limit 'received' latency includes their queue",
    "drain: a backlog published into the input subscription before the job reads it; throughput = (outputs - 1) "
    "/ (last output - first output) as the benchmark's collectors receive them; middle_80pct: the same between the "
    "10th and 90th percentile output; scored_at: from the pipeline's own scoring stamps (collectors left out)",
    "latency: publish -> prediction received, from the published_at attribute, events paced at half the setting's "
    "drain rate (the default setting for latency_secs, the others for half as long)",
    "plain consumer: as_streaming_section = benchmarks.streaming.measure (publish as fast as possible while it "
    "consumes, throughput = outputs / (first publish -> last output)); drain = the same backlog drain as Flink",
    "backfill: run(argv) + wait_until_finish() in a fresh process (benchmarks.backfill_worker), JSON Lines in and "
    "out, outputs counted; on Flink this includes job submission (staging the job server jar) and SDK worker start",
    "cpu_during_drain: utime + stime of each process group over the drain window (first to last output), in cores",
    "pyspy: one SDK worker's bundle thread sampled at 50 Hz, idle included (wall time), by innermost matching frame",
    "one machine runs everything (emulator, Flink JVMs, job server, SDK workers, publisher, collectors); "
    "other work on a shared machine shows up as noise",
]


def _median_of(runs: Sequence[dict], *keys) -> float | None:
    values = []
    for one in runs:
        value = one
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return median(values)


def _us_per_event(cpu: dict | None, events: int | None) -> dict | None:
    if not cpu or not events:
        return None
    return {name: secs / events * 1e6 for name, secs in cpu["cpu_secs"].items()}


def summarize(flink: dict, direct_streaming: dict | None = None) -> dict:
    """Headline figures (medians over repeats), ratios, the targets and the profile breakdown."""
    runs = flink.get("streaming", {})
    per_config = {}
    for name, samples in runs.items():
        per_config[name] = {
            "runs": len(samples),
            "drain_events_per_sec": _median_of(samples, "drain", "events_per_sec"),
            "drain_events_per_sec_samples": [s.get("drain", {}).get("events_per_sec") for s in samples],
            "drain_middle_80pct_events_per_sec": _median_of(samples, "drain", "events_per_sec_middle_80pct"),
            "drain_scored_at_events_per_sec": _median_of(samples, "drain", "scored_at_events_per_sec"),
            "latency_rate_per_sec": _median_of(samples, "latency", "rate_per_sec"),
            "p50_ms": _median_of(samples, "latency", "p50_ms"),
            "p99_ms": _median_of(samples, "latency", "p99_ms"),
            "p50_ms_to_output_publish": _median_of(samples, "latency", "to_output_publish", "p50_ms"),
            "p99_ms_to_output_publish": _median_of(samples, "latency", "to_output_publish", "p99_ms"),
            "cores_busy_during_drain": _median_of(samples, "cpu_during_drain", "cores_busy_total"),
        }
    default = per_config.get("default", {})
    plain = flink.get("plain_consumer", {})
    plain_drain = plain.get("drain", {}).get("events_per_sec")
    plain_sustained = plain.get("as_streaming_section", {}).get("sustained", {}).get("events_per_sec")
    bf = flink.get("backfill", {})
    figures = {
        "flink_drain_events_per_sec": default.get("drain_events_per_sec"),
        "flink_drain_events_per_sec_samples": default.get("drain_events_per_sec_samples"),
        "flink_latency_rate_per_sec": default.get("latency_rate_per_sec"),
        "flink_p50_ms": default.get("p50_ms"),
        "flink_p99_ms": default.get("p99_ms"),
        "flink_p50_ms_to_output_publish": default.get("p50_ms_to_output_publish"),
        "flink_p99_ms_to_output_publish": default.get("p99_ms_to_output_publish"),
        "plain_drain_events_per_sec": plain_drain,
        "plain_sustained_events_per_sec": plain_sustained,
        "plain_latency_rate_per_sec": plain.get("latency", {}).get("rate_per_sec"),
        "plain_p50_ms": plain.get("latency", {}).get("p50_ms"),
        "plain_p99_ms": plain.get("latency", {}).get("p99_ms"),
        "plain_p50_ms_to_output_publish": plain.get("latency", {}).get("to_output_publish", {}).get("p50_ms"),
        "plain_p99_ms_to_output_publish": plain.get("latency", {}).get("to_output_publish", {}).get("p99_ms"),
        "plain_as_streaming_section_latency_rate_per_sec": plain.get("as_streaming_section", {}).get("latency", {}).get(
            "rate_per_sec"),
        "plain_as_streaming_section_p50_ms": plain.get("as_streaming_section", {}).get("latency", {}).get("p50_ms"),
        "plain_as_streaming_section_p99_ms": plain.get("as_streaming_section", {}).get("latency", {}).get("p99_ms"),
        "direct_runner_streaming_events_per_sec": (direct_streaming or {}).get("events_per_sec"),
        "direct_runner_streaming_p50_ms": (direct_streaming or {}).get("p50_ms"),
        "direct_runner_streaming_p99_ms": (direct_streaming or {}).get("p99_ms"),
        "direct_runner_streaming_from": (direct_streaming or {}).get("from"),
        "backfill_n": bf.get("n_big"),
        "backfill_flink_end_to_end_events_per_sec": bf.get("flink", {}).get("end_to_end_events_per_sec"),
        "backfill_direct_end_to_end_events_per_sec": bf.get("direct_runner", {}).get("end_to_end_events_per_sec"),
        "backfill_flink_steady_events_per_sec": bf.get("flink", {}).get("steady_events_per_sec"),
        "backfill_direct_steady_events_per_sec": bf.get("direct_runner", {}).get("steady_events_per_sec"),
        "backfill_flink_fixed_secs": bf.get("flink", {}).get("fixed_secs"),
        "backfill_direct_fixed_secs": bf.get("direct_runner", {}).get("fixed_secs"),
        "backfill_flink_parallelism_2_end_to_end_events_per_sec": bf.get("flink_parallelism_2", {}).get(
            "end_to_end_events_per_sec"),
    }
    ratios = {
        "flink_over_plain_drain": ratio(figures["flink_drain_events_per_sec"], plain_drain),
        "flink_over_plain_as_streaming_section": ratio(figures["flink_drain_events_per_sec"], plain_sustained),
        "flink_over_direct_runner_streaming": ratio(figures["flink_drain_events_per_sec"],
                                                    figures["direct_runner_streaming_events_per_sec"]),
        "backfill_flink_over_direct_end_to_end": bf.get("flink_over_direct_runner_end_to_end"),
        "backfill_flink_over_direct_steady": bf.get("flink_over_direct_runner_steady"),
    }
    best_throughput = max((n for n in per_config if per_config[n]["drain_events_per_sec"]),
                          key=lambda n: per_config[n]["drain_events_per_sec"], default=None)
    within_latency = [n for n in per_config if per_config[n]["p99_ms"] is not None and per_config[n]["p99_ms"] < 1000]
    best_within = max(within_latency, key=lambda n: per_config[n]["drain_events_per_sec"] or 0, default=None)
    met_throughput = None if ratios["flink_over_plain_drain"] is None else ratios["flink_over_plain_drain"] >= 3
    met_latency = None if figures["flink_p99_ms"] is None else figures["flink_p99_ms"] < 1000
    to_publish = figures["flink_p99_ms_to_output_publish"]
    target = {
        "what": "Flink streaming throughput >= 3x the plain consumer's; p99 latency < 1 s at half the max sustained rate",
        "throughput_3x_plain_met": met_throughput,
        "throughput_3x_plain_met_vs_as_streaming_section": (
            None if ratios["flink_over_plain_as_streaming_section"] is None
            else ratios["flink_over_plain_as_streaming_section"] >= 3),
        "p99_under_1s_met": met_latency,
        "p99_under_1s_met_to_output_publish": None if to_publish is None else to_publish < 1000,
        "best_throughput_setting": best_throughput,
        "best_throughput_setting_events_per_sec": per_config.get(best_throughput, {}).get("drain_events_per_sec"),
        "best_throughput_setting_p99_ms": per_config.get(best_throughput, {}).get("p99_ms"),
        "best_setting_with_p99_under_1s": best_within,
    }
    return {"figures": figures, "ratios": ratios, "per_config": per_config, "target": target,
            "breakdown": breakdown(flink)}


def breakdown(flink: dict) -> dict:
    """Where the time goes in a drain, from the measurements: CPU per event per process, the pieces alone, and the
    SDK worker's bundle thread (py-spy); plus sentences that say what they mean."""
    runs = flink.get("streaming", {}).get("default", [])
    last = runs[-1] if runs else None
    out: dict = {"note": []}
    if last and last.get("cpu_during_drain"):
        events = max(1, (last["drain"].get("outputs") or 1) - 1)
        per_event = _us_per_event(last["cpu_during_drain"], events)
        out["flink_cpu_us_per_event"] = per_event
        total = sum(per_event.values())
        out["flink_cpu_us_per_event_total"] = total
        out["flink_cores_busy"] = last["cpu_during_drain"]["cores_busy_total"]
        own = sum(v for k, v in per_event.items() if k.startswith("benchmark"))
        out["flink_cpu_us_per_event_system_under_test"] = total - own
        nproc = os.cpu_count() or 1
        out["note"].append(
            f"Flink drain: {total:,.0f} us of CPU per event over all processes ("
            + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(per_event.items(), key=lambda kv: -kv[1]) if v >= 1)
            + f"); {out['flink_cores_busy']:.2f} of {nproc} cores busy over the window the outputs were received in. "
            f"Without the benchmark's own share, {total - own:,.0f} us/event: {nproc} cores carry about "
            f"{nproc * 1e6 / (total - own):,.0f} events/s at that cost, the machine's limit for this path.")
    plain_drain = flink.get("plain_consumer", {}).get("drain", {})
    if plain_drain.get("cpu_during_drain"):
        events = max(1, (plain_drain.get("outputs") or 1) - 1)
        per_event = _us_per_event(plain_drain["cpu_during_drain"], events)
        out["plain_cpu_us_per_event"] = per_event
        out["plain_cpu_us_per_event_total"] = sum(per_event.values())
        out["note"].append(
            f"plain consumer drain: {out['plain_cpu_us_per_event_total']:,.0f} us of CPU per event ("
            + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(per_event.items(), key=lambda kv: -kv[1]) if v >= 1)
            + f"); {plain_drain['cpu_during_drain']['cores_busy_total']:.2f} cores busy.")
    alone = flink.get("pieces_alone", {})
    if alone.get("pull"):
        pull, publish = alone["pull"], alone.get("publish_wait_per_100", {})
        per_call = pull["messages"] / max(1, pull["calls"])
        us = alone.get("model_us_per_event") or {}
        out["alone"] = {
            "emulator_pull_events_per_sec": pull["events_per_sec"],
            "emulator_messages_per_pull": per_call,
            "publish_wait_per_100_events_per_sec": publish.get("events_per_sec"),
            "publish_free_running_events_per_sec": alone.get("publish_free_running", {}).get("events_per_sec"),
            "project_work_us_per_event": us.get("total_outside_beam"),
        }
        serial_us = 1e6 / pull["events_per_sec"] + 1e6 / (publish.get("events_per_sec") or float("inf")) + (
            us.get("total_outside_beam") or 0)
        out["alone"]["serial_sum_us_per_event"] = serial_us
        out["note"].append(
            f"the pieces alone: the emulator answers a pull with at most {per_call:.0f} messages ({pull['events_per_sec']:,.0f}/s "
            f"pulling alone); publishing as WriteToPubSub does (100, then wait) {publish.get('events_per_sec') or 0:,.0f}/s; "
            f"the project's parse + predict + format {us.get('total_outside_beam') or 0:.0f} us/event. One after the "
            f"other, as one bundle thread does them: {serial_us:.0f} us/event = {1e6 / serial_us:,.0f} events/s "
            "before any harness cost.")
    spy = (flink.get("pyspy_run") or {}).get("pyspy") or {}
    shares = [w for w in spy.values() if isinstance(w, dict) and w.get("share")]
    if shares:
        merged: dict = {}
        for worker in shares:
            for k, v in worker["share"].items():
                merged[k] = merged.get(k, 0) + v / len(shares)
        out["sdk_worker_bundle_thread_share"] = merged
        out["note"].append(
            "SDK worker, bundle thread (wall time, py-spy): "
            + ", ".join(f"{k} {v:.0%}" for k, v in sorted(merged.items(), key=lambda kv: -kv[1]) if v >= 0.005) + ".")
    return out


# --- output ------------------------------------------------------------------------------------------------------
def direct_streaming_figures(results: dict, out: Path) -> dict | None:
    """The DirectRunner streaming figures: from this run's `streaming` section, else from the results.json a
    previous full run left in `out` (labelled with its date), else None."""
    def pick(streaming: dict | None) -> dict | None:
        beam = (streaming or {}).get("beam_direct_runner") or {}
        rate = beam.get("sustained", {}).get("events_per_sec")
        if not rate:
            return None
        latency = beam.get("latency") or {}
        return {"events_per_sec": rate, "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
                "latency_rate_per_sec": latency.get("rate_per_sec")}

    here = pick(results.get("streaming"))
    if here:
        return {**here, "from": "this run"}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((out / "results.json").read_text())
        found = pick(previous.get("streaming"))
        if found:
            return {**found, "from": f"{out / 'results.json'} of {previous.get('machine', {}).get('date')}"}
    return None


def without_samples(value):
    """`value` with every `latencies_ms` list (one entry per event) left out; the percentiles stay."""
    if isinstance(value, dict):
        return {k: without_samples(v) for k, v in value.items() if k != "latencies_ms"}
    if isinstance(value, list):
        return [without_samples(v) for v in value]
    return value


def write(flink: dict, results: dict, out: Path) -> None:
    """OUT/flink.json (the section with the run's machine facts and command), OUT/flink-summary.json (the same
    without per-event samples) and OUT/flink.png."""
    doc = {"command": results.get("command"), "quick": results.get("quick"), "machine": results.get("machine"),
           "flink": flink}
    (out / "flink.json").write_text(json.dumps(doc, indent=1, default=str))
    # The same without the per-event latency samples (megabytes): the copy that goes into docs/benchmarks/.
    (out / "flink-summary.json").write_text(json.dumps(without_samples(doc), indent=1, default=str))
    try:
        plot(flink, results.get("machine", {}), out / "flink.png", quick=bool(results.get("quick")))
    except Exception as error:  # pylint: disable=broad-except
        log(f"could not draw flink.png: {error}")


def _f(value, spec: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{format(value, spec)}{unit}"


def table(flink: dict) -> str:
    summary = flink.get("summary") or {}
    s, r, t = summary.get("figures", {}), summary.get("ratios", {}), summary.get("target", {})
    rows = [("Flink (fraud, in_process)", "")]
    samples = ", ".join(_f(x) for x in s.get("flink_drain_events_per_sec_samples") or [])
    rows.append(("streaming drain, default setting, median (events/s)",
                 f"{_f(s.get('flink_drain_events_per_sec'))}  [{samples}]"))
    rows.append((f"latency p50 / p99 at {_f(s.get('flink_latency_rate_per_sec'))}/s, prediction received (ms)",
                 f"{_f(s.get('flink_p50_ms'))} / {_f(s.get('flink_p99_ms'))}"))
    rows.append(("  ... to the prediction's publish (the emulator's stamp) (ms)",
                 f"{_f(s.get('flink_p50_ms_to_output_publish'))} / {_f(s.get('flink_p99_ms_to_output_publish'))}"))
    rows.append(("plain consumer, same backlog drain (events/s)", _f(s.get("plain_drain_events_per_sec"))))
    rows.append(("plain consumer, as the streaming section measures it (events/s)",
                 _f(s.get("plain_sustained_events_per_sec"))))
    rows.append((f"plain consumer p50 / p99 at {_f(s.get('plain_latency_rate_per_sec'))}/s, received (ms)",
                 f"{_f(s.get('plain_p50_ms'))} / {_f(s.get('plain_p99_ms'))}"))
    rows.append(("  ... to the prediction's publish (ms)",
                 f"{_f(s.get('plain_p50_ms_to_output_publish'))} / {_f(s.get('plain_p99_ms_to_output_publish'))}"))
    rows.append((f"plain consumer p50 / p99 at {_f(s.get('plain_as_streaming_section_latency_rate_per_sec'))}/s, "
                 f"as the streaming section measures it (ms)",
                 f"{_f(s.get('plain_as_streaming_section_p50_ms'))} / {_f(s.get('plain_as_streaming_section_p99_ms'))}"))
    if s.get("direct_runner_streaming_events_per_sec"):
        rows.append((f"DirectRunner streaming ({s.get('direct_runner_streaming_from')}) (events/s)",
                     _f(s.get("direct_runner_streaming_events_per_sec"))))
    rows.append(("Flink / plain consumer (drain; as streaming section)",
                 f"{_f(r.get('flink_over_plain_drain'), '.2f', 'x')}; "
                 f"{_f(r.get('flink_over_plain_as_streaming_section'), '.2f', 'x')}"))
    rows.append((f"backfill N={_f(s.get('backfill_n'))} end to end: Flink / DirectRunner (events/s)",
                 f"{_f(s.get('backfill_flink_end_to_end_events_per_sec'))} / "
                 f"{_f(s.get('backfill_direct_end_to_end_events_per_sec'))} = "
                 f"{_f(r.get('backfill_flink_over_direct_end_to_end'), '.2f', 'x')}"))
    rows.append(("backfill steady state: Flink / DirectRunner (events/s)",
                 f"{_f(s.get('backfill_flink_steady_events_per_sec'))} / "
                 f"{_f(s.get('backfill_direct_steady_events_per_sec'))}"))
    rows.append(("backfill fixed cost: Flink / DirectRunner (s)",
                 f"{_f(s.get('backfill_flink_fixed_secs'), '.1f')} / {_f(s.get('backfill_direct_fixed_secs'), '.1f')}"))
    if s.get("backfill_flink_parallelism_2_end_to_end_events_per_sec"):
        rows.append(("backfill on Flink, --parallelism=2, end to end (events/s)",
                     _f(s.get("backfill_flink_parallelism_2_end_to_end_events_per_sec"))))
    rows.append(("target: throughput >= 3x plain consumer (drain; as streaming section)",
                 f"{_f(t.get('throughput_3x_plain_met'))}; {_f(t.get('throughput_3x_plain_met_vs_as_streaming_section'))}"))
    rows.append(("target: p99 < 1 s at half the max rate (received; to the prediction's publish)",
                 f"{_f(t.get('p99_under_1s_met'))}; {_f(t.get('p99_under_1s_met_to_output_publish'))}"))
    width = max(len(a) for a, _ in rows)
    lines = [f"{a:<{width}}  {b}" for a, b in rows]
    per_config = summary.get("per_config", {})
    if per_config:
        lines += ["", "per setting (p50/p99: prediction received; pub: to its publish)",
                  f"{'setting':<16} {'runs':>4} {'drain/s':>8} {'mid80%/s':>9} {'scored/s':>9} {'cores':>6} "
                  f"{'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'pub p99':>8}  knobs"]
        for name, c in per_config.items():
            knobs = {k: v for k, v in {**DEFAULT, **CONFIGS.get(name, {})}.items() if DEFAULT.get(k) != v}
            lines.append(
                f"{name:<16} {c['runs']:>4} {_f(c['drain_events_per_sec']):>8} "
                f"{_f(c['drain_middle_80pct_events_per_sec']):>9} {_f(c['drain_scored_at_events_per_sec']):>9} "
                f"{_f(c['cores_busy_during_drain'], '.2f'):>6} {_f(c['latency_rate_per_sec']):>7} "
                f"{_f(c['p50_ms']):>7} {_f(c['p99_ms']):>7} {_f(c.get('p99_ms_to_output_publish')):>8}  "
                f"{knobs or 'default'}")
        lines.append(f"default: {DEFAULT}")
    notes = summary.get("breakdown", {}).get("note") or []
    if notes:
        lines += ["", "where the time goes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def plot(flink: dict, machine: dict, path: Path, quick: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = flink.get("summary") or {}
    s, per_config, bd = summary.get("figures", {}), summary.get("per_config", {}), summary.get("breakdown", {})
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    (ax_tp, ax_lat, ax_bf), (ax_cfg, ax_cpu, ax_spy) = axes

    def bars(ax, items, title, ylabel, log_scale=False):
        items = [(label, value, color) for label, value, color in items if value]
        xs = range(len(items))
        ax.bar(xs, [v for _, v, _ in items], color=[c for _, _, c in items])
        for x, (_, value, _) in zip(xs, items):
            ax.text(x, value * (1.05 if log_scale else 1.01), f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [label for label, _, _ in items], fontsize=8)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)

    plain = s.get("plain_drain_events_per_sec")
    bars(ax_tp, [
        ("Flink streaming\n(drain, median)", s.get("flink_drain_events_per_sec"), "#c44e52"),
        ("plain consumer\n(drain)", plain, "#8172b2"),
        ("plain consumer\n(as streaming\nsection)", s.get("plain_sustained_events_per_sec"), "#b3a9d4"),
        ("DirectRunner\nstreaming" + ("\n(earlier run)" if s.get("direct_runner_streaming_from") not in (None, "this run") else ""),
         s.get("direct_runner_streaming_events_per_sec"), "#dd8452"),
    ], "Streaming throughput, fraud (events/s)", "events/s")
    if plain:
        ax_tp.axhline(3 * plain, color="black", linestyle="--", linewidth=1, label="target: 3x plain consumer (drain)")
        ax_tp.legend(fontsize=8, loc="upper right")
        ax_tp.set_ylim(0, max(3 * plain, s.get("flink_drain_events_per_sec") or 0) * 1.2)

    systems = [
        ("Flink\nreceived", s.get("flink_p50_ms"), s.get("flink_p99_ms")),
        ("Flink\nto publish", s.get("flink_p50_ms_to_output_publish"), s.get("flink_p99_ms_to_output_publish")),
        ("plain\nreceived", s.get("plain_p50_ms"), s.get("plain_p99_ms")),
        ("plain\nto publish", s.get("plain_p50_ms_to_output_publish"), s.get("plain_p99_ms_to_output_publish")),
    ]
    if s.get("direct_runner_streaming_p50_ms"):
        systems.append(("DirectRunner\nreceived", s.get("direct_runner_streaming_p50_ms"),
                        s.get("direct_runner_streaming_p99_ms")))
    systems = [x for x in systems if x[1] is not None]
    width = 0.38
    for i, (name, color) in enumerate((("p50", "#4c72b0"), ("p99", "#dd8452"))):
        xs = [j + (i - 0.5) * width for j in range(len(systems))]
        values = [x[1 + i] for x in systems]
        ax_lat.bar(xs, values, width, label=name, color=color)
        for x, value in zip(xs, values):
            ax_lat.text(x, value * 1.01, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    ax_lat.axhline(1000, color="black", linestyle="--", linewidth=1, label="target p99 < 1 s")
    ax_lat.set_xticks(range(len(systems)), [x[0] for x in systems], fontsize=8)
    ax_lat.set_ylabel("publish -> prediction, ms")
    ax_lat.set_title(f"Publish -> prediction latency, each at half its max rate (Flink "
                     f"{_f(s.get('flink_latency_rate_per_sec'))}/s, plain {_f(s.get('plain_latency_rate_per_sec'))}/s)",
                     fontsize=9)
    ax_lat.legend(fontsize=8)

    bars(ax_bf, [
        ("Flink\nend to end", s.get("backfill_flink_end_to_end_events_per_sec"), "#c44e52"),
        ("DirectRunner\nend to end", s.get("backfill_direct_end_to_end_events_per_sec"), "#55a868"),
        ("Flink\nsteady", s.get("backfill_flink_steady_events_per_sec"), "#e8a0a2"),
        ("DirectRunner\nsteady", s.get("backfill_direct_steady_events_per_sec"), "#8fd19e"),
        ("Flink p=2\nend to end", s.get("backfill_flink_parallelism_2_end_to_end_events_per_sec"), "#8c2d30"),
    ], f"Backfill, fraud, N={_f(s.get('backfill_n'))} (events/s, medians)", "events/s")

    names = [n for n in per_config if per_config[n]["drain_events_per_sec"]]
    if names:
        xs = range(len(names))
        ax_cfg.bar(xs, [per_config[n]["drain_events_per_sec"] for n in names], color="#c44e52", label="drain events/s")
        ax_cfg.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax_cfg.set_ylabel("drain events/s")
        twin = ax_cfg.twinx()
        twin.plot(list(xs), [per_config[n]["p99_ms"] for n in names], "o", color="#dd8452", label="p99 ms")
        twin.plot(list(xs), [per_config[n]["p50_ms"] for n in names], "s", color="#4c72b0", label="p50 ms")
        twin.axhline(1000, color="black", linestyle=":", linewidth=1)
        twin.set_ylabel("latency at half its rate, ms")
        twin.legend(fontsize=8, loc="upper right")
        ax_cfg.set_title("Flink settings: drain throughput and latency", fontsize=10)

    for label, key, offset, color in (("Flink", "flink_cpu_us_per_event", -0.2, "#c44e52"),
                                      ("plain consumer", "plain_cpu_us_per_event", 0.2, "#8172b2")):
        per_event = bd.get(key) or {}
        if per_event:
            keys = sorted(set((bd.get("flink_cpu_us_per_event") or {}) | (bd.get("plain_cpu_us_per_event") or {})))
            ax_cpu.barh([i + offset for i in range(len(keys))], [per_event.get(k, 0) for k in keys], 0.4,
                        label=f"{label} ({sum(per_event.values()):,.0f} us/event)", color=color)
            ax_cpu.set_yticks(range(len(keys)), keys, fontsize=8)
    ax_cpu.set_xlabel("CPU us per event during a drain")
    ax_cpu.set_title("Where the CPU goes (per process group)", fontsize=10)
    if bd.get("flink_cpu_us_per_event"):
        ax_cpu.legend(fontsize=8)

    share = bd.get("sdk_worker_bundle_thread_share") or {}
    if share:
        keys = list(share)
        ax_spy.barh(range(len(keys)), [share[k] * 100 for k in keys], color="#4c72b0")
        ax_spy.set_yticks(range(len(keys)), [k.replace(" (", "\n(") for k in keys], fontsize=7)
        ax_spy.invert_yaxis()
        ax_spy.set_xlabel("% of the SDK worker's bundle thread (wall time, py-spy)")
    ax_spy.set_title("SDK worker: where a drain's wall time goes", fontsize=10)
    fig.suptitle(
        f"Beam {machine.get('apache_beam')} on a local Flink {flink.get('flink_version')} ({flink.get('beam_java_runner_version')} "
        f"job server) vs the plain consumer; {machine.get('nproc')} cores ({machine.get('cpu_model')}), shared with the "
        f"emulator and the benchmark, {machine.get('date')}" + ("  [--quick]" if quick else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    """Summary, table and plot again from a saved flink.json (e.g. after a change to the summary or the plot)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.flink", description=main.__doc__)
    parser.add_argument("flink_json", help="OUT/flink.json of an earlier run")
    parser.add_argument("--out", help="where flink.json and flink.png go (default: beside the input)")
    args = parser.parse_args(argv)
    path = Path(args.flink_json)
    doc = json.loads(path.read_text())
    out = Path(args.out) if args.out else path.parent
    doc["flink"]["summary"] = summarize(doc["flink"], direct_streaming_figures({}, path.parent))
    write(doc["flink"], doc, out)
    print(table(doc["flink"]))


if __name__ == "__main__":
    main()
