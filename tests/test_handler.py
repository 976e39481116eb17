"""The in-process SavedModel handler: answers, versions, warm-up, batching knobs, failure isolation, sharing."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from apache_beam.ml.inference.base import PredictionResult
from reference import assert_close, direct_outputs

from model_handlers.base import InferenceFailure
from model_handlers.errors import ModelNotFoundError, SignatureMismatchError
from model_handlers.interface import FRAUD, PRICE, Feature
from model_handlers.saved_model import SavedModelHandler
from training.data import generate
from transforms.messages import ErrorType


def features_of(event):
    return {k: v for k, v in event.items() if k != "event_id"}


@pytest.mark.parametrize("interface", [FRAUD, PRICE], ids=lambda i: i.name)
def test_handler_scores_equal_a_direct_call_of_the_saved_model(model_dir, interface):
    events, _ = generate(interface, 300, seed=11)
    handler = SavedModelHandler(interface, str(model_dir))
    model = handler.load_model()
    results = list(handler.run_inference([features_of(e) for e in events], model))
    expected = direct_outputs(model_dir, interface, events)
    assert len(results) == len(events)
    for event, result in zip(events, results):
        assert result.model_id == "1"
        assert_close(result.inference, expected[event["event_id"]], interface)


def test_newest_version_is_the_default_and_a_pinned_version_is_kept(model_dir, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_dir / "fraud" / "1", repo / "fraud" / "1")
    shutil.copytree(model_dir / "fraud" / "1", repo / "fraud" / "7")
    (repo / "fraud" / "not-a-version").mkdir()
    assert SavedModelHandler(FRAUD, str(repo)).model_version == "7"
    assert SavedModelHandler(FRAUD, str(repo), model_version=1).model_version == "1"
    with pytest.raises(ModelNotFoundError, match=r"no version 3 .* it has \[1, 7\]"):
        SavedModelHandler(FRAUD, str(repo), model_version=3)


def test_missing_model_says_where_it_looked_and_how_to_build_it(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no versions of model 'price' under .*make models"):
        SavedModelHandler(PRICE, str(tmp_path))


def test_signature_that_does_not_match_the_schema_fails_at_load_naming_the_fields(model_dir):
    drifted = dataclasses.replace(
        FRAUD,
        features=FRAUD.features[1:] + (Feature("seller_country", "string", "new", max_length=2),),
    )
    with pytest.raises(SignatureMismatchError) as info:
        SavedModelHandler(drifted, str(model_dir)).load_model()
    assert "inputs the model lacks: ['seller_country']" in str(info.value)
    assert "inputs the schema lacks: ['price']" in str(info.value)


def test_load_replays_the_exported_warm_up_requests(model_dir, caplog):
    caplog.set_level("INFO", logger="model_handlers.saved_model")
    SavedModelHandler(FRAUD, str(model_dir)).load_model()
    assert "4 warm-up requests" in caplog.text


def test_batching_knobs_and_sharing_are_what_beam_reads(model_dir):
    handler = SavedModelHandler(
        FRAUD,
        str(model_dir),
        min_batch_size=4,
        max_batch_size=64,
        max_batch_duration_secs=2,
        share_across_processes=True,
        model_copies=2,
    )
    assert handler.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 64, "max_batch_duration_secs": 2}
    assert handler.share_model_across_processes() and handler.model_copies() == 2
    plain = SavedModelHandler(FRAUD, str(model_dir))
    assert not plain.share_model_across_processes()
    assert plain.get_metrics_namespace() == "marketplace_fraud"
    assert plain.get_num_bytes([{"title": "abcd", "price": 1.0}]) == 12


class PoisonedHandler(SavedModelHandler):
    """The real handler and model, with a fault injected: any batch holding a poisoned title fails in predict.

    Validated input cannot make the exported graph fail, so this is the one fault the tests inject by hand.
    """

    def predict(self, batch, model):
        if any(row["title"] == "POISON" for row in batch):
            raise RuntimeError("poisoned element in batch")
        return super().predict(batch, model)


def test_failing_batch_is_retried_one_by_one_and_only_the_bad_element_fails(model_dir):
    events, _ = generate(FRAUD, 8, seed=3)
    batch = [features_of(e) for e in events]
    batch[5]["title"] = "POISON"
    handler = PoisonedHandler(FRAUD, str(model_dir))
    results = list(handler.run_inference(batch, handler.load_model()))
    expected = direct_outputs(model_dir, FRAUD, events)
    assert [isinstance(r.inference, InferenceFailure) for r in results] == [False] * 5 + [True] + [False] * 2
    assert results[5].inference == InferenceFailure("RuntimeError: poisoned element in batch", ErrorType.PERMANENT)
    for i in (0, 1, 2, 3, 4, 6, 7):
        assert_close(results[i].inference, expected[events[i]["event_id"]], FRAUD)
    assert all(isinstance(r, PredictionResult) and r.example is batch[i] for i, r in enumerate(results))


_SHARING_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from apache_beam.utils.multi_process_shared import MultiProcessShared
    from model_handlers.interface import FRAUD
    from model_handlers.saved_model import SavedModelHandler
    from training.data import generate

    model_dir, tag, share, done_file = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    handler = SavedModelHandler(FRAUD, model_dir, share_across_processes=share)
    # What RunInference does in its DoFn setup (apache_beam/ml/inference/base.py, _RunInferenceDoFn._load_model).
    if handler.share_model_across_processes():
        model = MultiProcessShared(handler.load_model, tag=tag, always_proxy=True).acquire()
    else:
        model = handler.load_model()
    events, _ = generate(FRAUD, 4, seed=5)
    results = list(handler.run_inference([{k: v for k, v in e.items() if k != "event_id"} for e in events], model))
    print(json.dumps({"worker_pid": os.getpid(), "model_pid": model.pid(),
                      "scores": [r.inference["fraud_probability"] for r in results]}), flush=True)
    # Stay alive until both workers have scored: the shared copy lives as long as a process that uses it.
    deadline = time.time() + 120
    while not os.path.exists(done_file) and time.time() < deadline:
        time.sleep(0.1)
    """
)


def _run_two_workers(model_dir, tmp_path, share: bool) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(_SHARING_WORKER)
    done_file = tmp_path / "done"
    tag = f"test-sharing-{os.getpid()}-{share}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(model_dir), tag, "1" if share else "0", str(done_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        reports = [json.loads(worker.stdout.readline()) for worker in workers]
    finally:
        done_file.touch()
        for worker in workers:
            worker.wait(timeout=60)
    return reports


def test_with_cross_process_sharing_two_worker_processes_hold_one_model_copy(model_dir, tmp_path):
    reports = _run_two_workers(model_dir, tmp_path, share=True)
    model_pids = {r["model_pid"] for r in reports}
    worker_pids = {r["worker_pid"] for r in reports}
    assert len(model_pids) == 1, f"expected one shared copy, got copies in processes {model_pids}"
    # Beam hosts the shared copy in the first process that asks for it; the other reaches it through a proxy.
    assert model_pids <= worker_pids
    assert sum(r["model_pid"] != r["worker_pid"] for r in reports) == 1
    assert reports[0]["scores"] == reports[1]["scores"]


def test_without_sharing_each_worker_process_loads_its_own_copy(model_dir, tmp_path):
    reports = _run_two_workers(model_dir, tmp_path, share=False)
    assert [r["model_pid"] for r in reports] == [r["worker_pid"] for r in reports]
    assert reports[0]["model_pid"] != reports[1]["model_pid"]
