"""The fraud pipeline on a real local Flink 1.20 cluster (localdev.flink), in one run, against the baselines.

    python -m benchmarks.run --model_dir=models --only=flink [--quick]
        [--flink_state_dir=build/flink-bench --flink_port_offset=10000]    # beside another cluster (the tests)
    python -m benchmarks.flink OUT/flink.json                              # summary, table and plot again

1. Streaming on Flink (fraud, in_process), one fresh job per knob setting (CONFIGS): a backlog of N events is
   published into the input subscription before the job reads it, so the job drains it as fast as it can:
   drain throughput = (outputs - 1) / (last output - first output), outputs = predictions + dead letters, timed
   by when they reached Pub/Sub (the emulator's publish stamp; also the middle 80 %, as the collectors received
   them, and from the pipeline's own `scored_at` stamps). Then events paced at half that rate for a while:
   publish-to-prediction latency p50/p99 from the `published_at` attribute, prediction as received (as the
   `streaming` section), and to the prediction's publish. The default setting runs `repeats` times (medians),
   each also at light load (40 events/s, the demo's rate); the others once each. Each job gets a fresh
   TaskManager.
2. The plain google-cloud-pubsub consumer (benchmarks/plain_consumer.py) on the same emulator: measured exactly as
   the `streaming` section does (publish as fast as possible while it consumes), and drained from the same
   backlog as Flink, so the ratio compares like with like; then at half its drain rate and at light load.
3. Backfill: the same JSON Lines file through the fraud backfill on Flink (batch) and on the DirectRunner, each
   run a fresh `benchmarks.backfill_worker` process (run + wait_until_finish timed, outputs counted); a small
   and a big input give fixed cost and steady state, as the `backfill` section computes them.
4. Where the time goes (always measured, so the figures explain themselves): CPU seconds per process between the
   drain's first and last output (emulator, Flink JVMs, job server, SDK workers, launcher, the benchmark's own
   publisher/collectors); the
   pieces alone (emulator pull rate, publish rate the way the sink publishes, the model's per-event cost
   from benchmarks.ceiling); and a py-spy profile of the SDK worker's bundle thread during a drain.
5. Scale-out: a second TaskManager joins, and the backlog is drained at parallelism 1, 2 and 4.

Everything it starts (emulator, cluster, jobs, launchers, consumers) stops on the way out. The machine is small
and shared; the benchmark's own publisher and collectors share its cores with the system under test.

One job a module:

    knobs      the runner settings measured (CONFIGS) and the pipeline flags of each
    cluster    which local cluster; its process groups; a fresh TaskManager for each job
    cpu        CPU seconds per process group over a window
    profiler   py-spy on the SDK workers, and where their bundle thread's time goes
    backlog    backlog drains: the backlog published before the reader starts, stamped outputs, drain figures
    streaming  one Flink job per setting: drain, then latency (1)
    baseline   the plain consumer on the same emulator (2); the pieces of the path alone (4)
    backfill   backfill on Flink against the DirectRunner (3)
    section    all of it against one emulator and one cluster: `run`
    records    typed records of the raw runs the summary reads, and of the summary
    summary    figures, ratios, targets and where the time goes, from the raw runs
    output     flink.json, flink-summary.json and the table
    plot       flink.png
"""

from benchmarks.flink.cluster import FlinkSetup
from benchmarks.flink.knobs import BEAM_DEFAULTS, CONFIGS, DEFAULT
from benchmarks.flink.output import table, write
from benchmarks.flink.plot import plot
from benchmarks.flink.profiler import categorize_pyspy
from benchmarks.flink.section import run
from benchmarks.flink.summary import direct_streaming_figures, summarize

__all__ = [
    "BEAM_DEFAULTS",
    "CONFIGS",
    "DEFAULT",
    "FlinkSetup",
    "categorize_pyspy",
    "direct_streaming_figures",
    "plot",
    "run",
    "summarize",
    "table",
    "write",
]
