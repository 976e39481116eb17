"""Version labels in a model repository: the moves (shared with TF Serving's models.config), the label file (any
content either parses or is refused with the reason; replaced whole, so a reader never sees half of it), the
rollout command on a repository (a version that does not load is refused and nothing moves), and a pipeline
scoring in process with the version a label names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy import rollout
from model_handlers import labels
from model_handlers.errors import ModelNotFoundError
from model_handlers.interface import MODELS
from model_handlers.saved_model import SavedModelHandler

# --- the moves -----------------------------------------------------------------------------------------------------


def test_moving_stable_keeps_the_old_one_as_previous_and_promoting_the_canary_withdraws_it():
    labels_now = labels.moved({}, "stable", 1)
    assert labels_now == {"stable": 1}
    labels_now = labels.moved(labels_now, "canary", 2)
    assert labels_now == {"stable": 1, "canary": 2}
    labels_now = labels.moved(labels_now, "stable", 2)
    assert labels_now == {"stable": 2, "previous": 1}
    assert labels.rolled_back(labels_now) == {"stable": 1}


@pytest.mark.parametrize(
    "move, message",
    [
        (lambda: labels.moved({"stable": 1}, "stable", 1), "stable is already version 1"),
        (lambda: labels.moved({}, "previous", 1), "the label must be one of"),
        (lambda: labels.moved({}, "stable", 0), "positive integers"),
        (lambda: labels.rolled_back({"stable": 1}), "nothing to roll back to"),
        (lambda: labels.rolled_back({"stable": 1}, "canary"), "no canary to withdraw"),
    ],
)
def test_impossible_moves_are_refused_with_the_reason(move, message):
    with pytest.raises(labels.LabelError, match=message):
        move()


moves = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(labels.LABELS), st.integers(1, 5)),
        st.tuples(st.just("rollback"), st.sampled_from(labels.LABELS)),
    ),
    max_size=20,
)


@given(moves)
def test_any_sequence_of_moves_keeps_the_labels_valid_and_a_rollback_restores_stable(sequence):
    current: dict[str, int] = {}
    for first, second in sequence:
        before = dict(current)
        try:
            if first == "rollback":
                current = labels.rolled_back(current, second)
            else:
                current = labels.moved(current, first, second)
        except labels.LabelError:
            assert current == before  # a refused move changes nothing
            continue
        # What is written parses back to itself.
        assert labels.parse(json.dumps(current), "labels.json") == current
        if first == "stable" and "stable" in before:
            assert labels.rolled_back(current)["stable"] == before["stable"]


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_label_file_content_parses_or_is_refused_with_the_reason(text):
    try:
        parsed = labels.parse(text, "labels.json")
    except labels.LabelError as error:
        assert "labels.json" in str(error)
        return
    assert all(label in (*labels.LABELS, labels.PREVIOUS) and version >= 1 for label, version in parsed.items())


@given(
    st.dictionaries(
        st.text(max_size=10) | st.sampled_from(["stable", "canary", "previous"]),
        st.integers(-3, 10) | st.booleans() | st.text(max_size=3) | st.none(),
        max_size=4,
    )
)
def test_label_files_with_unknown_labels_or_versions_that_are_not_positive_integers_are_refused(data):
    valid = all(
        k in ("stable", "canary", "previous") and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in data.items()
    )
    if valid:
        assert labels.parse(json.dumps(data), "x") == data
    else:
        with pytest.raises(labels.LabelError):
            labels.parse(json.dumps(data), "x")


# --- the file --------------------------------------------------------------------------------------------------------


def test_a_reader_never_sees_half_a_label_file(tmp_path):
    (tmp_path / "fraud").mkdir()
    written = [{"stable": v, "previous": v + 1, "canary": v + 2} for v in range(1, 200)]
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        while not stop.is_set():
            try:
                seen.append(labels.read(str(tmp_path), "fraud"))
            except Exception as error:  # noqa: BLE001 - any failure to read is the finding
                errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    expected = {}
    for content in written:
        labels.write(str(tmp_path), "fraud", content, expected=expected)
        expected = content
    stop.set()
    thread.join()
    assert not errors
    assert seen and all(s == {} or s in written for s in seen)
    assert not [p.name for p in (tmp_path / "fraud").iterdir() if p.name != labels.LABELS_FILE]  # no leftovers


def test_a_write_that_finds_the_file_changed_since_it_was_read_is_refused(tmp_path):
    (tmp_path / "fraud").mkdir()
    labels.write(str(tmp_path), "fraud", {"stable": 1}, expected={})
    with pytest.raises(labels.LabelError, match="changed while this rollout ran"):
        labels.write(str(tmp_path), "fraud", {"stable": 2}, expected={})
    assert labels.read(str(tmp_path), "fraud") == {"stable": 1}


def test_after_a_cluster_rollout_the_repository_takes_models_configs_labels(tmp_path):
    (tmp_path / "fraud").mkdir()
    text = 'model_config_list { config { name: "fraud" base_path: "/models/fraud" model_platform: "tensorflow" '
    text += "model_version_policy { specific { versions: 1 versions: 2 } } "
    text += 'version_labels { key: "stable" value: 2 } version_labels { key: "previous" value: 1 } } }'
    assert rollout.repository_in_step(str(tmp_path), "fraud", text, log=lambda m: None) == {"stable": 2, "previous": 1}
    assert labels.read(str(tmp_path), "fraud") == {"stable": 2, "previous": 1}


# --- the repository rollout, on real SavedModels -----------------------------------------------------------------------


@pytest.fixture
def repository(model_dir, tmp_path):
    """fraud at versions 1 and 2 (the same SavedModel twice) and a broken 3 (price's model under fraud's name)."""
    root = tmp_path / "repo"
    for version in (1, 2):
        shutil.copytree(model_dir / "fraud" / "1", root / "fraud" / str(version))
    shutil.copytree(model_dir / "price" / "1", root / "fraud" / "3")
    return root


def deploy_rollout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy", "rollout-model", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_rollout_forward_and_back_in_a_repository_and_a_broken_version_refused(repository):
    where = f"--model_dir={repository}"
    for args, expected in [
        (("--version", "1"), {"stable": 1}),
        (("--version", "2", "--label", "canary"), {"stable": 1, "canary": 2}),
        (("--version", "2"), {"stable": 2, "previous": 1}),
        (("--rollback",), {"stable": 1}),
    ]:
        done = deploy_rollout(where, "--model", "fraud", *args)
        assert done.returncode == 0, done.stderr
        assert labels.read(str(repository), "fraud") == expected

    broken = deploy_rollout(where, "--model", "fraud", "--version", "3")
    assert broken.returncode == 1
    assert "fraud version 3 cannot serve" in broken.stderr and "does not match" in broken.stderr
    missing = deploy_rollout(where, "--model", "fraud", "--version", "9")
    assert missing.returncode == 1 and "has no version 9" in missing.stderr
    assert labels.read(str(repository), "fraud") == {"stable": 1}  # nothing moved


def test_a_pipeline_in_process_scores_with_the_version_its_label_names(repository):
    labels.write(str(repository), "fraud", {"stable": 2, "previous": 1}, expected={})
    handler = SavedModelHandler(MODELS["fraud"], str(repository), version_label="stable")
    assert handler.model_version == "2"
    assert "(label 'stable')" in handler.describe()
    assert SavedModelHandler(MODELS["fraud"], str(repository), version_label="previous").model_version == "1"
    with pytest.raises(ModelNotFoundError, match="has no label 'canary'"):
        SavedModelHandler(MODELS["fraud"], str(repository), version_label="canary")


def test_a_cluster_rollout_checks_the_repositorys_version_before_it_touches_the_cluster(repository, tmp_path):
    """TF Serving's AVAILABLE says a version loads, not that it matches the interface: with --model_dir, the
    cluster rollout refuses a broken version first, with no cluster contacted (none is configured here)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "rollout-model",
            f"--model_dir={repository}",
            "--cluster",
            "--model",
            "fraud",
            "--version",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")},
    )
    assert done.returncode == 1, done.stderr
    assert "fraud version 3 cannot serve" in done.stderr and "does not match" in done.stderr
