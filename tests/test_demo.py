"""The README's first command keeps working: the demo, small, against the real emulator and both pipelines."""

import re
import subprocess
import sys


def test_demo_accounts_for_every_event_of_both_models_and_stops_what_it_started(model_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "localdev.demo", f"--model_dir={model_dir}", "--events=120", "--rate=60",
         "--malformed_fraction=0.1", f"--log_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.findall(r"accounted for\s+(\d+)/(\d+)", out) == [("120", "120"), ("120", "120")], out
    assert "latency p50 / p99" in out and "parse: not JSON" in out and "validate: out of bounds" in out
    assert out.rstrip().endswith("stopped the pipelines, the emulator")


def test_demo_through_tf_serving_accounts_for_every_event(model_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "localdev.demo", f"--model_dir={model_dir}", "--events=80", "--rate=60",
         "--inference=tf_serving", f"--log_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.findall(r"accounted for\s+(\d+)/(\d+)", result.stdout) == [("80", "80"), ("80", "80")], result.stdout
    assert "TF Serving stand-in on 127.0.0.1:" in result.stdout
    assert result.stdout.rstrip().endswith("stopped the pipelines, the emulator and the model server")
