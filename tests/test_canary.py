"""Canary: a share of events, picked by a stable hash of event_id, scored by the canary label's version; the rest by
stable's. The hash is checked over its whole input space (Hypothesis); the split through the real pipeline."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from lifecycle_checks import check_versions
from test_backfill import read_json_lines

from localdev.traffic import make_traffic
from model_handlers import labels
from model_handlers.interface import FRAUD
from pipelines import fraud_detection
from transforms.routing import CANARY, SHADOW, in_share

PERCENTS = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(st.text(max_size=200), PERCENTS, PERCENTS)
def test_an_event_id_is_in_every_larger_share_and_never_in_none(event_id, low, high):
    low, high = sorted((low, high))
    assert in_share(event_id, low, CANARY) == in_share(event_id, low, CANARY)  # the same answer every time
    assert not in_share(event_id, 0, CANARY) and in_share(event_id, 100, CANARY)
    if in_share(event_id, low, CANARY):
        assert in_share(event_id, high, CANARY)  # growing a canary only adds events to it


def within_binomial(count: int, n: int, percent: float, sigmas: float = 4) -> bool:
    p = percent / 100
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@given(st.integers(min_value=0, max_value=2**31), st.sampled_from([1, 10, 25, 50, 90]))
def test_shares_stay_within_binomial_tolerance_and_the_canary_and_shadow_shares_are_independent(salt, percent):
    ids = [f"event-{salt}-{i}" for i in range(4000)]
    canary = [in_share(i, percent, CANARY) for i in ids]
    shadow = [in_share(i, 50, SHADOW) for i in ids]
    assert within_binomial(sum(canary), len(ids), percent)
    both = sum(c and s for c, s in zip(canary, shadow))
    assert within_binomial(both, sum(canary), 50), "the shadow's share of the canary's events is not half"


def test_a_backfill_sends_the_canary_share_to_the_canary_version(lifecycle_repo, tmp_path):
    labels.write(str(lifecycle_repo), "fraud", {"stable": 1, "canary": 2}, expected={"stable": 1})
    messages = make_traffic(FRAUD, 1000, malformed_fraction=0.0, seed=61)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    fraud_detection.run(
        [
            f"--input={events_file}",
            f"--output={tmp_path}/out/predictions",
            f"--dead_letter_output={tmp_path}/out/dead",
            f"--model_dir={lifecycle_repo}",
            "--canary_percent=20",
        ]
    ).wait_until_finish()
    predictions = read_json_lines(f"{tmp_path}/out/predictions")

    stages = [([m], {"2" if in_share(m.event_id, 20, CANARY) else "1"}) for m in messages]
    per_version = check_versions(predictions, stages, lifecycle_repo, FRAUD)
    assert within_binomial(per_version["2"], len(messages), 20), per_version
