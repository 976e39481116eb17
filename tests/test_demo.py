"""The README's first command keeps working: the demo, small, against the real emulator and both pipelines."""

import re
import subprocess
import sys

import pytest


def run_demo(model_dir, tmp_path, events: int, *args) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "localdev.demo",
            f"--model_dir={model_dir}",
            f"--events={events}",
            "--rate=60",
            f"--log_dir={tmp_path}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = re.findall(r"accounted for\s+(\d+)/(\d+)", result.stdout)
    assert counts == [(str(events), str(events))] * 2, result.stdout
    return result.stdout


def test_demo_accounts_for_every_event_of_both_models_and_stops_what_it_started(model_dir, tmp_path):
    out = run_demo(model_dir, tmp_path, 120, "--runner=direct", "--malformed_fraction=0.1")
    assert "latency p50 / p99" in out and "parse: not_json" in out and "validate: out_of_bounds" in out
    assert out.rstrip().endswith("stopped the pipelines, the emulator")


def test_demo_through_tf_serving_accounts_for_every_event(model_dir, tmp_path):
    out = run_demo(model_dir, tmp_path, 80, "--runner=direct", "--inference=tf_serving")
    assert "TF Serving stand-in on 127.0.0.1:" in out
    assert out.rstrip().endswith("stopped the pipelines, the emulator and the model server")


@pytest.mark.flink
def test_the_default_demo_runs_on_flink_plays_the_lifecycle_act_and_stops_the_cluster(model_dir, tmp_path):
    """`make demo` as it is, no runner named: both pipelines on the local Flink cluster, the lifecycle act's roll
    forward showing in fraud's predictions, and the shadow's comparisons. (40 s of traffic: on a busy machine each
    rollout command takes up to 20 s to load TensorFlow and check the version, so the rollback may come after the
    stream; the DirectRunner's lifecycle test below checks both moves.)"""
    from localdev.flink import LocalFlink

    out = run_demo(model_dir, tmp_path, 2400, "--malformed_fraction=0.1")
    assert "started the streaming pipelines on a local Flink cluster" in out
    assert re.search(r"roll forward: stable -> 2 +first v2 prediction [\d.]+s after the move", out), out
    assert "shadow (v2, 50%)" in out
    # A challenger that falls more than 10 s behind sheds events, by design; a busy CI machine can make it. Any other
    # failure of the challenger fails the test.
    failures = re.search(r"shadow failures +\d+: (.*)", out)
    assert failures is None or re.fullmatch(r"\d+ shed", failures.group(1)), out
    # No event waited for a redelivery: a pull given up on strands its messages until the ack deadline (60 s).
    p99s = [int(ms) for ms in re.findall(r"latency p50 / p99 +\d+ ms / (\d+) ms", out)]
    assert len(p99s) == 2 and max(p99s) < 30_000, out
    assert out.rstrip().endswith("stopped the pipelines, the emulator and the Flink cluster")
    assert not any(component.up for component in LocalFlink(verbose=False).status().components)


def test_the_lifecycle_act_rolls_forward_and_back_mid_stream_while_a_shadow_compares(model_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "localdev.demo",
            f"--model_dir={model_dir}",
            "--models=fraud",
            "--runner=direct",
            # 40 s at 60/s: both moves show before the stream ends, even on a busy machine, where each rollout
            # command takes several seconds to load TensorFlow and check the version.
            "--events=2400",
            "--rate=60",
            "--malformed_fraction=0",
            f"--log_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "accounted for       2400/2400" in out
    versions = dict(re.findall(r"v(\d): (\d+)", re.search(r"predictions by +(.*)", out).group(1)))
    assert set(versions) == {"1", "2"} and sum(map(int, versions.values())) == 2400, out
    assert re.search(r"roll forward: stable -> 2 +first v2 prediction [\d.]+s after the move", out), out
    assert re.search(r"roll back: stable -> 1 +first v1 prediction [\d.]+s after the move", out), out
    from localdev.traffic import make_traffic
    from model_handlers.interface import FRAUD
    from transforms.routing import SHADOW, in_share

    sampled = sum(in_share(m.event_id, 50, SHADOW) for m in make_traffic(FRAUD, 2400, 0.0, seed=7))
    assert re.search(rf"shadow \(v2, 50%\) +{sampled} comparisons: is_fraud agrees on", out), out
    assert "v2 vs v2: 100.0% agree" in out and "shadow failures" not in out
