"""The main job (`make demo`): real Pub/Sub emulator traffic through both streaming pipelines, on a real local Flink
cluster started for the run (localdev.flink), the production runner; or (`--runner=direct`, `make demo
RUNNER=direct`) on the DirectRunner.

It starts the emulator, creates the topics and subscriptions, starts `pipelines.fraud_detection` and
`pipelines.price_suggestion` as streaming processes, publishes synthetic events for both (a few percent malformed),
prints progress as predictions and dead letters come back, and ends with a summary: events in, predictions out,
dead letters by reason, throughput, and publish-to-prediction latency p50/p99. With in-process inference it also
plays the lifecycle act on fraud (localdev.lifecycle): a roll forward and a rollback mid-stream, without a restart,
while a shadow compares the challenger. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import threading
import time
from pathlib import Path

import numpy as np

from localdev.flink import LocalFlink
from localdev.lifecycle import LifecycleAct
from localdev.model_server import ModelServerProcess
from localdev.pubsub_emulator import PubsubEmulator, free_port
from localdev.streaming import PipelineDied, StreamingRun
from localdev.traffic import make_traffic
from model_handlers import repository
from model_handlers.interface import MODELS
from plumbing import cli
from plumbing.polling import PollTimeout, poll_until


def reason_label(dead_letter: dict) -> str:
    """A dead letter's group in the summary: its stage and reason code (transforms.messages.Reason)."""
    return f"{dead_letter['stage']}: {dead_letter['reason']}"


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Demo:
    def __init__(self, args):
        self.args = args
        self.models = args.models.split(",")
        self.published = collections.Counter()
        self.runs: dict[str, StreamingRun] = {}
        self.act = None
        if args.lifecycle and "fraud" in self.models and args.inference == "in_process":
            self.act = LifecycleAct(args.model_dir, args.log_dir, self.say)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, started: float) -> None:
        parts = []
        for model, run in self.runs.items():
            parts.append(
                f"{model}: {self.published[model]:>5} published, {len(run.predictions):>5} predicted, "
                f"{len(run.dead_letters):>3} dead-lettered"
            )
        self.say(f"  {time.monotonic() - started:5.0f}s  " + " | ".join(parts))

    def run(self) -> int:
        args = self.args
        log_dir = Path(args.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        versions = {m: repository.resolve_version(args.model_dir, m) for m in self.models}
        self.say(f"[1/5] models in {args.model_dir}: " + ", ".join(f"{m} v{v}" for m, v in versions.items()))
        traffic = {
            m: make_traffic(MODELS[m], args.events, args.malformed_fraction, seed=args.seed) for m in self.models
        }
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(
                PubsubEmulator(project="demo-project", log_path=str(log_dir / "emulator.log"))
            )
            self.say(f"[2/5] Pub/Sub emulator on {emulator.host} (log {log_dir / 'emulator.log'})")
            model_dir, pipeline_args = args.model_dir, []
            if args.inference == "tf_serving":
                server = stack.enter_context(
                    ModelServerProcess(args.model_dir, free_port(), log_dir / "model-server.log")
                )
                self.say(f"      TF Serving stand-in on {server.target} (log {log_dir / 'model-server.log'})")
                model_dir, pipeline_args = None, ["--inference=tf_serving", f"--tf_serving_target={server.target}"]
            if args.runner == "flink":
                pipeline_args += self._start_flink(stack, emulator)
            if self.act is not None:
                self.act.prepare()
                self.say(
                    f"      lifecycle act: fraud follows `stable` (v1) in {self.act.repo}, shadowed by v2 on "
                    f"{self.act.SHADOW_PERCENT}% of events; "
                    "mid-stream stable rolls forward to v2, then back"
                )
            started = time.monotonic()
            for model in self.models:
                if model == "fraud" and self.act is not None:
                    run = StreamingRun(
                        emulator, model, None, log_dir, pipeline_args + self.act.pipeline_args(), comparisons=True
                    )
                else:
                    run = StreamingRun(emulator, model, model_dir, log_dir, pipeline_args)
                stack.callback(run.stop)
                self.runs[model] = run.start()
            try:
                return self._stream(traffic, started)
            finally:
                stack.close()
                self.say(
                    "stopped the pipelines, the emulator"
                    + (" and the model server" if args.inference == "tf_serving" else "")
                    + (" and the Flink cluster" if args.runner == "flink" else "")
                )

    def _start_flink(self, stack: contextlib.ExitStack, emulator: PubsubEmulator) -> list[str]:
        flink = LocalFlink()
        self.say(
            "      starting a local Flink 1.20 cluster, Beam's job server and an SDK worker pool "
            "(the first time also installs them: about a minute)"
        )
        # The SDK workers pull and publish themselves: the emulator's address reaches them with the pipeline's
        # options (--pubsub_emulator_host, from the launcher's PUBSUB_EMULATOR_HOST).
        flink.start()
        stack.callback(flink.stop)  # after the launchers (last in, first out); the jobs end with the cluster
        self.say(f"      Flink on http://localhost:{flink.ports.rest} (logs in {flink.logs_dir})")
        return flink.pipeline_args(streaming=True, checkpointing_interval_ms=2000)

    def _stream(self, traffic, started: float) -> int:
        args = self.args
        runner = "a local Flink cluster" if args.runner == "flink" else "the DirectRunner"
        self.say(
            f"[3/5] started the streaming pipelines on {runner}, inference {self.args.inference}: "
            + ", ".join(f"{m} (log {r.log_path})" for m, r in self.runs.items())
        )
        # One probe event each: the stream starts once every pipeline has answered, so start-up is not latency.
        for model, run in self.runs.items():
            run.publish(traffic[model][:1])
            self.published[model] += 1
        for model, run in self.runs.items():
            if not run.wait_for_outputs(1, args.startup_timeout, lambda: self.progress(started)):
                self.say(f"error: the {model} pipeline produced nothing in {args.startup_timeout}s; see {run.log_path}")
                return 1
        self.say(f"      ready after {time.monotonic() - started:.0f}s")

        self.say(
            f"[4/5] publishing {args.events} events per model at {args.rate:g}/s each "
            f"({args.malformed_fraction:.0%} malformed)"
        )
        stream_start, stream_start_wall = time.monotonic(), time.time()
        publishers = [
            threading.Thread(target=self._publish, args=(model, traffic[model][1:]), daemon=True) for model in self.runs
        ]
        for publisher in publishers:
            publisher.start()
        if self.act is not None:
            self.act.start(args.events / args.rate)

        def all_accounted_for() -> bool | None:
            if all(run.outputs() >= len(traffic[m]) for m, run in self.runs.items()):
                return True
            for run in self.runs.values():
                run.check_alive()
            return None

        # The summary says what is missing when the wait gives up.
        with contextlib.suppress(PollTimeout):
            poll_until(
                all_accounted_for,
                timeout=args.events / args.rate + args.drain_timeout,
                interval=0.2,
                what="every event's outcome",
                report=lambda: self.progress(stream_start),
            )
        if self.act is not None:
            self.act.wait()
            fraud = self.runs["fraud"]
            sampled = self.act.sampled(p.body["event_id"] for p in fraud.predictions)
            # The challenger scores in a stage of its own, a little behind the predictions.
            with contextlib.suppress(PollTimeout):
                poll_until(
                    lambda: len(fraud.comparisons) >= sampled or None,
                    timeout=30,
                    interval=0.2,
                    what="the shadow's comparisons",
                )
        self.progress(stream_start)
        return self._summary(traffic, stream_start_wall)

    def _publish(self, model: str, messages) -> None:
        run, chunk = self.runs[model], max(1, int(self.args.rate))
        start = time.monotonic()
        for i in range(0, len(messages), chunk):
            # Paced one second's worth at a time, so the counters in the progress lines move as it goes.
            delay = start + i / self.args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.published[model] += run.publish(messages[i : i + chunk], rate_per_sec=self.args.rate)

    def _summary(self, traffic, stream_start_wall: float) -> int:
        self.say("[5/5] summary")
        complete = True
        for model, run in self.runs.items():
            predictions, dead_letters = run.predictions, run.dead_letters
            sent = len(traffic[model])
            out = len(predictions) + len(dead_letters)
            expected_bad = sum(m.malformed is not None for m in traffic[model])
            stream_outputs = [r.received_at for r in predictions + dead_letters if r.attributes.get("seq") != "0"]
            elapsed = max(stream_outputs) - stream_start_wall if stream_outputs else 0
            latencies = [r.latency_secs for r in predictions if r.attributes.get("seq") != "0"]
            reasons = collections.Counter(reason_label(d.body) for d in dead_letters)
            complete &= out == sent
            self.say(f"  {model}")
            self.say(f"    events in           {sent}  ({expected_bad} malformed on purpose)")
            self.say(f"    predictions out     {len(predictions)}")
            self.say(f"    dead letters        {len(dead_letters)}")
            for reason, count in sorted(reasons.items()):
                self.say(f"      {count:>5}  {reason}")
            self.say(f"    accounted for       {out}/{sent}" + ("" if out == sent else "  <- INCOMPLETE"))
            if elapsed > 0:
                self.say(
                    f"    throughput          {len(stream_outputs) / elapsed:.1f} events/s "
                    f"(offered {self.args.rate:g}/s)"
                )
            if latencies:
                self.say(
                    f"    latency p50 / p99   {percentile(latencies, 50) * 1000:.0f} ms / "
                    f"{percentile(latencies, 99) * 1000:.0f} ms  (publish to prediction received)"
                )
            if model == "fraud" and self.act is not None:
                for line in self.act.summary(predictions, run.comparisons):
                    self.say(line)
                complete &= self.act.failed is None
        if self.args.runner == "direct":
            self.say(
                "  note: the DirectRunner reads Pub/Sub through Beam's bundled reader (at most 10 messages a bundle, "
                "about 60 events/s here) and runs one step at a time; the default runner is the local Flink cluster."
            )
        return 0 if complete else 1


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="models")
    parser.add_argument("--models", default="fraud,price", help="comma-separated: fraud, price")
    parser.add_argument(
        "--inference",
        default="in_process",
        choices=["in_process", "tf_serving"],
        help="tf_serving: also start the local TF Serving stand-in and score through it over gRPC",
    )
    parser.add_argument(
        "--runner",
        default="flink",
        choices=["flink", "direct"],
        help="flink: start a local Flink cluster (localdev.flink) for the run and run both pipelines on it; "
        "direct: the DirectRunner",
    )
    parser.add_argument("--events", type=int, default=1200, help="events per model")
    parser.add_argument("--rate", type=float, default=40.0, help="events per second per model")
    parser.add_argument("--malformed_fraction", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log_dir", default=".demo")
    parser.add_argument(
        "--no_lifecycle",
        dest="lifecycle",
        action="store_false",
        help="skip the lifecycle act (fraud, in process: a roll forward, a rollback and a shadow mid-stream)",
    )
    parser.add_argument("--startup_timeout", type=float, default=180.0)
    parser.add_argument("--drain_timeout", type=float, default=120.0, help="seconds to wait after publishing ends")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {sorted(MODELS)}")
    try:
        return Demo(args).run()
    except (repository.ModelNotFoundError, PipelineDied) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    cli.run(main)
