"""Shadow: a challenger scores a hashed share of events beside the champion; only the champion's predictions go out,
and each sampled event gets one comparison record pairing the two answers. Backfills through the real pipeline."""

from __future__ import annotations

import json

from apache_beam.metrics.metric import MetricsFilter
from lifecycle_checks import check_versions
from reference import assert_close, direct_outputs
from test_backfill import read_json_lines

from localdev.traffic import make_traffic
from model_handlers import labels
from model_handlers.interface import FRAUD, PRICE
from pipelines import fraud_detection, price_suggestion
from transforms.routing import SHADOW, in_share
from transforms.shadow import REGRESSION_AGREEMENT


def backfill(pipeline, messages, repo, tmp_path, *args):
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    result = pipeline.run(
        [
            f"--input={events_file}",
            f"--output={tmp_path}/out/predictions",
            f"--dead_letter_output={tmp_path}/out/dead",
            f"--shadow_output={tmp_path}/out/shadow",
            f"--model_dir={repo}",
            *args,
        ]
    )
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_name("shadow_compared"))["counters"]
        + result.metrics().query(MetricsFilter().with_name("shadow_agreed"))["counters"]
    }
    return read_json_lines(f"{tmp_path}/out/predictions"), read_json_lines(f"{tmp_path}/out/shadow"), counters


def test_a_challenger_shadows_its_share_and_each_sampled_event_gets_one_comparison(lifecycle_repo, tmp_path):
    labels.write(str(lifecycle_repo), "fraud", {"stable": 2, "previous": 1}, expected={"stable": 1})
    messages = make_traffic(FRAUD, 800, malformed_fraction=0.0, seed=71)
    predictions, records, counters = backfill(
        fraud_detection,
        messages,
        lifecycle_repo,
        tmp_path,
        "--model_version_label=stable",
        "--shadow_label=previous",
        "--shadow_percent=40",
    )
    # The champion's predictions only, every one by stable (2), equal to a direct call of version 2.
    check_versions(predictions, [(messages, {"2"})], lifecycle_repo, FRAUD)

    sampled = {m.event_id for m in messages if in_share(m.event_id, 40, SHADOW)}
    assert sorted(r["event_id"] for r in records) == sorted(sampled), "not one comparison per sampled event"
    events = [json.loads(m.payload) for m in messages if m.event_id in sampled]
    one, two = (direct_outputs(lifecycle_repo, FRAUD, events, version=v) for v in (1, 2))
    for record in records:
        assert (record["model"], record["champion_version"], record["challenger_version"]) == ("fraud", "2", "1")
        assert_close(record["champion"], two[record["event_id"]], FRAUD)
        assert_close(record["challenger"], one[record["event_id"]], FRAUD)
        assert record["agree"] == (record["champion"]["is_fraud"] == record["challenger"]["is_fraud"])
        assert record["champion"]["is_fraud"] == (record["champion"]["fraud_probability"] >= 0.5)
    assert counters == {"shadow_compared": len(records), "shadow_agreed": sum(r["agree"] for r in records)}


def test_a_regressor_is_compared_by_relative_error(model_dir, tmp_path):
    messages = make_traffic(PRICE, 200, malformed_fraction=0.0, seed=72)
    _, records, counters = backfill(price_suggestion, messages, model_dir, tmp_path, "--shadow_version=1")
    assert len(records) == len(messages)
    assert all(r["relative_error"] == 0 and r["agree"] for r in records)  # the same version: no difference at all
    assert counters == {"shadow_compared": 200, "shadow_agreed": 200}
    assert REGRESSION_AGREEMENT > 0


def test_a_challenger_that_cannot_load_fails_its_comparisons_and_no_prediction(lifecycle_repo, tmp_path):
    messages = make_traffic(FRAUD, 300, malformed_fraction=0.0, seed=73)
    predictions, records, counters = backfill(
        fraud_detection, messages, lifecycle_repo, tmp_path, "--model_version=1", "--shadow_version=3"
    )
    check_versions(predictions, [(messages, {"1"})], lifecycle_repo, FRAUD)
    assert sorted(r["event_id"] for r in records) == sorted(m.event_id for m in messages)
    assert all(r["challenger"] is None and "challenger could not be loaded" in r["error"] for r in records)
    assert "does not match the 'fraud' schema" in records[0]["error"]
    assert counters.get("shadow_compared", 0) == 0
