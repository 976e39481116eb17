"""Backfill on files: the same guarantees as streaming, JSON Lines in and out, through the real pipeline."""

import glob
import json

import pytest
from reference import check_every_event_accounted_for

from localdev.traffic import MALFORMED_KINDS, make_traffic
from model_handlers.interface import FRAUD, PRICE
from pipelines import fraud_detection, price_suggestion

PIPELINES = {"fraud": (FRAUD, fraud_detection), "price": (PRICE, price_suggestion)}


def read_json_lines(prefix):
    files = glob.glob(f"{prefix}-*-of-*.jsonl")
    assert files, f"no output files at {prefix}-*.jsonl"
    return [json.loads(line) for path in files for line in open(path, encoding="utf-8")]


@pytest.mark.parametrize("model", sorted(PIPELINES))
def test_backfill_predicts_every_valid_event_once_and_dead_letters_every_malformed_one(model, model_dir, tmp_path):
    interface, pipeline = PIPELINES[model]
    messages = make_traffic(interface, 500, malformed_fraction=0.05, seed=31)
    assert {m.malformed for m in messages} >= set(MALFORMED_KINDS)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(m.payload + b"\n" for m in messages))

    pipeline.run(
        [
            f"--input={events_file}",
            f"--output={tmp_path}/out/predictions",
            f"--dead_letter_output={tmp_path}/out/dead",
            f"--model_dir={model_dir}",
            "--max_batch_size=64",
        ]
    ).wait_until_finish()

    predictions = read_json_lines(f"{tmp_path}/out/predictions")
    dead_letters = read_json_lines(f"{tmp_path}/out/dead")
    n_pred, n_dead = check_every_event_accounted_for(messages, predictions, dead_letters, interface, model_dir)
    assert n_pred + n_dead == len(messages)
    if model == "fraud":
        assert all(p["is_fraud"] == (p["fraud_probability"] >= 0.5) for p in predictions)


def test_backfill_reads_a_glob_of_files(model_dir, tmp_path):
    messages = make_traffic(FRAUD, 60, malformed_fraction=0, seed=32)
    for part in range(3):
        (tmp_path / f"part-{part}.jsonl").write_bytes(b"".join(m.payload + b"\n" for m in messages[part::3]))
    fraud_detection.run(
        [
            f"--input={tmp_path}/part-*.jsonl",
            f"--output={tmp_path}/out/p",
            f"--dead_letter_output={tmp_path}/out/d",
            f"--model_dir={model_dir}",
        ]
    ).wait_until_finish()
    assert sorted(p["event_id"] for p in read_json_lines(f"{tmp_path}/out/p")) == sorted(m.event_id for m in messages)
