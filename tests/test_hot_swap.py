"""Hot swap in process: a handler following a version label moves to the version the label names without a restart,
loading it beside the serving one; a version that cannot serve is refused, counted and logged; the old copy is
released. Real SavedModels (fraud 1 and 2 genuinely differ; 3 is price's model under fraud's name)."""

from __future__ import annotations

import gc
import logging
import time
import uuid
import weakref

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from reference import assert_close, direct_outputs

from model_handlers import labels
from model_handlers.errors import SignatureMismatchError
from model_handlers.following import REFUSED, SWAPPED, FollowedModel
from model_handlers.interface import FRAUD
from model_handlers.saved_model import SavedModelHandler
from model_handlers.tfx_bsl_inference import TfxBslHandler
from training.data import generate


def features_of(events):
    return [{k: v for k, v in e.items() if k != "event_id"} for e in events]


def move(repo, **new):
    labels.write(str(repo), "fraud", new, expected=labels.read(str(repo), "fraud"))


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def scored_by(handler, model, events) -> set[str]:
    """Scores `events` in one batch and checks every answer against a direct call of the version it names;
    returns the versions named."""
    results = list(handler.run_inference(features_of(events), model))
    versions = {r.model_id for r in results}
    for version in versions:
        expected = direct_outputs(handler_repo(handler), FRAUD, events, version=int(version))
        for event, result in zip(events, results):
            if result.model_id == version:
                assert_close(result.inference, expected[event["event_id"]], FRAUD)
    return versions


def handler_repo(handler):
    return handler._model_dir  # pylint: disable=protected-access


def test_versions_one_and_two_answer_differently(fraud_versions):
    events, _ = generate(FRAUD, 50, seed=3)
    one, two = (direct_outputs(fraud_versions, FRAUD, events, version=v) for v in (1, 2))
    pairs = [(one[e]["fraud_probability"], two[e]["fraud_probability"]) for e in one]
    differing = [(a, b) for a, b in pairs if abs(a - b) > 0.01 * max(a, b)]  # by more than 1%
    assert len(differing) > 40, "version 2 must be a genuinely different model for the lifecycle tests to mean much"


@pytest.mark.parametrize("handler_class", [SavedModelHandler, TfxBslHandler], ids=["in_process", "tfx_bsl"])
def test_a_followed_label_moves_the_serving_version_without_a_restart(handler_class, lifecycle_repo, caplog):
    caplog.set_level(logging.INFO)
    events, _ = generate(FRAUD, 64, seed=5)
    handler = handler_class(FRAUD, str(lifecycle_repo), version_label="stable", refresh_secs=0.2)
    model = handler.load_model()
    assert scored_by(handler, model, events) == {"1"}

    move(lifecycle_repo, stable=2, previous=1)
    assert wait_for(lambda: model.serving_version() == 2), "the label moved, the serving version did not"
    assert scored_by(handler, model, events) == {"2"}

    # A version that cannot serve is refused: the serving one stays, and the log says why.
    move(lifecycle_repo, stable=3, previous=2)
    assert wait_for(lambda: "refused version 3" in caplog.text)
    time.sleep(0.5)  # a few more checks: a refused version is not loaded again and again
    assert caplog.text.count("refused version 3") == 1
    assert "does not match the 'fraud' schema" in caplog.text or "SignatureMismatch" in caplog.text
    assert scored_by(handler, model, events) == {"2"}

    move(lifecycle_repo, stable=1)  # the rollback
    assert wait_for(lambda: model.serving_version() == 1)
    assert scored_by(handler, model, events) == {"1"}
    model.close()


def test_a_worker_that_starts_while_its_label_names_a_broken_version_serves_the_version_before(lifecycle_repo, caplog):
    caplog.set_level(logging.INFO)
    move(lifecycle_repo, stable=3, previous=1)
    handler = SavedModelHandler(FRAUD, str(lifecycle_repo), version_label="stable", refresh_secs=0.2)
    model = handler.load_model()
    assert model.serving_version() == 1
    assert "refused version 3, so version 1 serves (its fallback)" in caplog.text
    events, _ = generate(FRAUD, 16, seed=4)
    assert scored_by(handler, model, events) == {"1"}
    time.sleep(0.6)  # a few checks: the refused version is not loaded again
    assert caplog.text.count("refused version 3") == 1
    move(lifecycle_repo, stable=2, previous=1)
    assert wait_for(lambda: model.serving_version() == 2)
    model.close()

    move(lifecycle_repo, stable=3)  # nothing to fall back on: a worker without a model cannot score
    with pytest.raises(SignatureMismatchError, match="does not match the 'fraud' schema"):
        SavedModelHandler(FRAUD, str(lifecycle_repo), version_label="stable").load_model()


def test_a_pinned_version_or_no_refresh_never_moves(lifecycle_repo):
    pinned = SavedModelHandler(FRAUD, str(lifecycle_repo), model_version=1, refresh_secs=0.1)
    once = SavedModelHandler(FRAUD, str(lifecycle_repo), version_label="stable", refresh_secs=0)
    models = [pinned.load_model(), once.load_model()]
    move(lifecycle_repo, stable=2, previous=1)
    time.sleep(1)
    assert [m.serving_version() for m in models] == [1, 1]


def test_the_old_copy_is_released_at_the_swap_or_once_the_batch_that_held_it_ends(lifecycle_repo):
    handler = SavedModelHandler(FRAUD, str(lifecycle_repo), version_label="stable")
    copies = []

    def load(version):
        copy = handler.load_version(version)
        copies.append(weakref.ref(copy))
        return copy

    follower = FollowedModel("fraud", handler._resolve, load)  # pylint: disable=protected-access
    columns = FRAUD.to_columns(features_of(generate(FRAUD, 8, seed=1)[0]))
    assert follower.predict(columns)[0] == 1

    move(lifecycle_repo, stable=2, previous=1)
    news = follower.refresh()
    assert (news.kind, news.version) == (SWAPPED, 2)
    assert copies[0]() is None, "version 1 is still held after the swap"

    held = copies[1]()  # a batch that took version 2 before the next swap and is still scoring
    move(lifecycle_repo, stable=1, previous=2)
    assert follower.refresh().version == 1
    assert held.predict(columns)  # the batch finishes on its copy
    del held
    gc.collect()  # Python's next collection
    assert copies[1]() is None, "version 2 is still held after the swap and its last batch"
    assert copies[2]() is not None and follower.serving_version() == 1


def test_a_shared_copy_across_processes_follows_its_label_too(lifecycle_repo):
    from apache_beam.utils.multi_process_shared import MultiProcessShared

    handler = SavedModelHandler(
        FRAUD, str(lifecycle_repo), version_label="stable", refresh_secs=0.2, share_across_processes=True
    )
    # What RunInference does in its DoFn setup (apache_beam/ml/inference/base.py, _RunInferenceDoFn._load_model):
    # every call goes through the proxy, as from any other SDK worker process (the server lives in the first).
    shared = MultiProcessShared(handler.load_model, tag=f"hot-swap-{uuid.uuid4().hex}", always_proxy=True)
    model = shared.acquire()
    events, _ = generate(FRAUD, 16, seed=9)
    assert scored_by(handler, model, events) == {"1"}
    move(lifecycle_repo, stable=2, previous=1)
    assert wait_for(lambda: model.serving_version() == 2)
    assert scored_by(handler, model, events) == {"2"}
    shared.release(model)


class _RollAndScore(beam.DoFn):
    """Inside a real Beam bundle: a handler follows `stable` while the labels move to a broken version and then to
    version 2, then scores; Beam's metrics must count one refusal and one swap."""

    def __init__(self, repo):
        self._repo = repo

    def process(self, _):
        handler = SavedModelHandler(FRAUD, self._repo, version_label="stable")
        model = handler.load_model()
        move(self._repo, stable=3, previous=1)
        assert model.refresh().kind == REFUSED
        move(self._repo, stable=2, previous=1)
        assert model.refresh().kind == SWAPPED
        for result in handler.run_inference(features_of(generate(FRAUD, 4, seed=2)[0]), model):
            yield result.model_id


def test_swaps_and_refusals_are_counted_in_beams_metrics(lifecycle_repo, tmp_path):
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = (
        pipeline
        | beam.Create([None])
        | beam.ParDo(_RollAndScore(str(lifecycle_repo)))
        | beam.io.WriteToText(str(tmp_path / "versions"))
    )
    result = pipeline.run()
    result.wait_until_finish()
    written = [line.strip() for path in tmp_path.glob("versions*") for line in path.read_text().splitlines()]
    assert written == ["2"] * 4
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("marketplace_fraud"))["counters"]
    }
    assert counters["model_swaps"] == 1 and counters["model_versions_refused"] == 1
    gauges = result.metrics().query(MetricsFilter().with_name("serving_model_version"))["gauges"]
    assert [g.committed.value for g in gauges] == [2]
