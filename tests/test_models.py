"""The demo models: data generator, held-out quality, exported signature, warm-up file, schemas, layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_handlers import interface as mi
from training import data, evaluate, metrics, runtime, schemas, train, trainer
from training.price import category_median_baseline

REPO = Path(__file__).resolve().parent.parent
TF_DTYPES = {mi.STRING: "string", mi.FLOAT: "float32", mi.INT: "int64"}
NATIVE_TYPES = {mi.STRING: str, mi.FLOAT: float, mi.INT: int}


@pytest.fixture(scope="module")
def tf():
    return runtime.tensorflow()


def _signature(tf, model_dir, interface):
    return tf.saved_model.load(str(model_dir / interface.name / "1")).signatures[interface.signature_name]


def _quality(model_dir, name):
    return json.loads((model_dir / name / "1" / "assets.extra" / "quality.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_roc_auc_matches_hand_computed_values_including_ties():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # pairs (neg, pos): (0.1,0.35) win, (0.1,0.8) win, (0.4,0.35) loss, (0.4,0.8) win -> 3/4
    assert metrics.roc_auc([0, 1, 0, 1], [0.1, 0.35, 0.4, 0.8]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        metrics.roc_auc([1, 1], [0.1, 0.2])


def test_rmsle_matches_formula():
    y, yhat = np.array([10.0, 100.0]), np.array([20.0, 50.0])
    expected = np.sqrt(np.mean((np.log1p(yhat) - np.log1p(y)) ** 2))
    assert metrics.rmsle(y, yhat) == pytest.approx(expected)
    assert metrics.rmsle(y, y) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# (e) Generator
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", [mi.FRAUD, mi.PRICE], ids=lambda m: m.name)
def test_generator_is_deterministic_for_a_seed_and_varies_with_it(interface):
    events_a, labels_a = data.generate(interface, 300, seed=3)
    events_b, labels_b = data.generate(interface, 300, seed=3)
    events_c, labels_c = data.generate(interface, 300, seed=4)
    assert events_a == events_b
    np.testing.assert_array_equal(labels_a, labels_b)
    strip = lambda events: [{k: v for k, v in e.items() if k != "event_id"} for e in events]  # noqa: E731
    assert strip(events_a) != strip(events_c)


@pytest.mark.parametrize("interface", [mi.FRAUD, mi.PRICE], ids=lambda m: m.name)
def test_generated_events_validate_against_the_published_json_schema(interface):
    import jsonschema

    events, labels = data.generate(interface, 5000, seed=11)
    assert len(events) == len(labels) == 5000
    assert len({e["event_id"] for e in events}) == len(events), "event ids are not unique"
    validator = jsonschema.Draft202012Validator(interface.json_schema())
    for event in events:
        errors = list(validator.iter_errors(event))
        assert not errors, f"{event['event_id']}: {[e.message for e in errors]}"
        assert set(event) == {"event_id"} | {f.name for f in interface.features}
        for feature in interface.features:
            value = event[feature.name]
            assert type(value) is NATIVE_TYPES[feature.dtype], f"{feature.name}={value!r} is {type(value).__name__}"
    json.dumps(events)  # JSON-able


def test_fraud_generator_has_a_few_percent_positives():
    _, labels = data.generate(mi.FRAUD, 20000, seed=5)
    assert set(np.unique(labels)) == {0, 1}
    assert 0.015 <= labels.mean() <= 0.05, f"fraud rate {labels.mean():.4f}"


def test_price_generator_is_heavy_tailed_with_some_brandless_listings():
    events, prices = data.generate(mi.PRICE, 20000, seed=5)
    assert np.all(prices > 0)
    assert np.percentile(prices, 99) > 5 * np.median(prices), "prices are not heavy-tailed"
    assert 0.2 < np.mean([e["brand_name"] == "" for e in events]) < 0.7


# ---------------------------------------------------------------------------------------------------------------
# (a) Quality on held-out data
# ---------------------------------------------------------------------------------------------------------------


def test_fraud_model_roc_auc_on_held_out_data_is_at_least_0_90(model_dir, tf):
    recorded = _quality(model_dir, "fraud")["roc_auc"]
    # Also on fresh data the model never saw (another seed), scored through the exported signature.
    events, labels = data.generate(mi.FRAUD, 20000, seed=101)
    fresh = metrics.roc_auc(labels, evaluate.predict(_signature(tf, model_dir, mi.FRAUD), mi.FRAUD, events))
    assert recorded >= 0.90 and fresh >= 0.90, (
        f"fraud ROC AUC: held-out {recorded:.4f}, fresh seed {fresh:.4f}; floor 0.90"
    )


def test_price_model_rmsle_is_at_most_0_85_of_the_category_median_baseline(model_dir, tf):
    quality = _quality(model_dir, "price")
    assert quality["rmsle"] <= 0.85 * quality["baseline_rmsle"], (
        f"price RMSLE {quality['rmsle']:.4f} vs category-median baseline {quality['baseline_rmsle']:.4f} "
        f"(ratio {quality['rmsle'] / quality['baseline_rmsle']:.3f}; must be <= 0.85)"
    )
    # Also on fresh data, with the baseline's medians taken from the (seed 0) data the model was trained on.
    train_events, train_prices = data.generate(mi.PRICE, quality["n"], seed=quality["seed"])
    events, prices = data.generate(mi.PRICE, 20000, seed=101)
    model_rmsle = metrics.rmsle(prices, evaluate.predict(_signature(tf, model_dir, mi.PRICE), mi.PRICE, events))
    baseline_rmsle = metrics.rmsle(prices, category_median_baseline(train_events, train_prices, events))
    assert model_rmsle <= 0.85 * baseline_rmsle, (
        f"price RMSLE on fresh data {model_rmsle:.4f} vs category-median baseline {baseline_rmsle:.4f} "
        f"(ratio {model_rmsle / baseline_rmsle:.3f}; must be <= 0.85)"
    )


def test_quality_file_records_the_training_parameters(model_dir):
    for name in ("fraud", "price"):
        quality = _quality(model_dir, name)
        assert quality["model"] == name and quality["version"] == 1 and quality["seed"] == 0
        assert quality["n_train"] + quality["n_test"] == quality["n"] == trainer.RECIPES[name].default_n


def test_fraud_model_scores_a_textbook_scam_above_an_established_sellers_listing(model_dir, tf):
    honest = {
        "price": 450.0,
        "seller_account_age_days": 2000,
        "seller_num_sales": 150,
        "seller_rating": 4.8,
        "category": "electronics",
        "shipping_method": "standard",
        "payment_method": "card",
        "title": "iPhone 13 with box",
        "description": "Barely used, works perfectly.",
        "num_images": 6,
        "buyer_seller_distance_km": 40.0,
    }
    scam = {
        "price": 60.0,
        "seller_account_age_days": 2,
        "seller_num_sales": 0,
        "seller_rating": 0.0,
        "category": "electronics",
        "shipping_method": "international",
        "payment_method": "gift_card",
        "title": "iPhone 13 URGENT wire transfer only",
        "description": "Contact me on WhatsApp for a better price.",
        "num_images": 0,
        "buyer_seller_distance_km": 3000.0,
    }
    scores = _signature(tf, model_dir, mi.FRAUD)(**mi.FRAUD.to_columns([honest, scam]))["fraud_probability"].numpy()
    assert scores[1] > 0.5 > 0.05 > scores[0], f"honest {scores[0]:.4f}, scam {scores[1]:.4f}"


def test_price_model_prices_a_new_luxury_bag_above_a_worn_phone_case(model_dir, tf):
    bag = {
        "name": "Louis Vuitton shoulder bag NWT",
        "brand_name": "Louis Vuitton",
        "category_name": "Women/Women's Handbags/Shoulder Bag",
        "item_condition_id": 1,
        "shipping": 0,
        "item_description": "New with tags, never worn. Authentic, receipt included.",
    }
    case = {
        "name": "phone case",
        "brand_name": "",
        "category_name": "Electronics/Cell Phones & Accessories/Cases, Covers & Skins",
        "item_condition_id": 4,
        "shipping": 1,
        "item_description": "Visible wear, still works.",
    }
    prices = _signature(tf, model_dir, mi.PRICE)(**mi.PRICE.to_columns([bag, case]))["suggested_price"].numpy()
    assert prices[0] > 10 * prices[1] > 0, f"bag {prices[0]:.2f} EUR, case {prices[1]:.2f} EUR"


# ---------------------------------------------------------------------------------------------------------------
# (b) Signature = interface
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", [mi.FRAUD, mi.PRICE], ids=lambda m: m.name)
def test_serving_signature_inputs_and_outputs_are_exactly_the_interfaces(model_dir, tf, interface):
    signature = _signature(tf, model_dir, interface)
    args, kwargs = signature.structured_input_signature
    assert args == ()
    inputs = {name: (spec.dtype.name, spec.shape.as_list()) for name, spec in kwargs.items()}
    assert inputs == {f.name: (TF_DTYPES[f.dtype], [None]) for f in interface.features}
    outputs = {name: (spec.dtype.name, spec.shape.as_list()) for name, spec in signature.structured_outputs.items()}
    assert outputs == {o.name: ("float32", [None]) for o in interface.outputs}


@pytest.mark.parametrize("interface", [mi.FRAUD, mi.PRICE], ids=lambda m: m.name)
def test_serving_signature_fills_optional_features_with_their_defaults(model_dir, tf, interface):
    events, _ = data.generate(interface, 8, seed=9)
    optional = [f.name for f in interface.features if not f.required]
    assert optional, "the interface has no optional feature to leave out"
    stripped = [{k: v for k, v in e.items() if k not in optional} for e in events]
    output = interface.outputs[0].name
    values = _signature(tf, model_dir, interface)(**interface.to_columns(stripped))[output].numpy()
    assert values.shape == (8,) and np.all(np.isfinite(values))


# ---------------------------------------------------------------------------------------------------------------
# (c) Warm-up requests
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", [mi.FRAUD, mi.PRICE], ids=lambda m: m.name)
def test_warmup_file_holds_predict_requests_with_exactly_the_features_the_signature_accepts(model_dir, tf, interface):
    from tensorflow_serving.apis import prediction_log_pb2

    path = model_dir / interface.name / "1" / "assets.extra" / "tf_serving_warmup_requests"
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert 1 <= len(records) <= 1000  # TF Serving reads at most 1000 warm-up records
    signature = _signature(tf, model_dir, interface)
    example_signature = tf.saved_model.load(str(model_dir / interface.name / "1")).signatures[
        interface.example_signature_name
    ]
    batch_sizes, log_types = set(), []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        log_types.append(log.WhichOneof("log_type"))
        if log_types[-1] != "predict_log":
            # The tf.Example signature's warm-up: a Classify or Regress request the signature answers.
            assert log_types[-1] == f"{interface.example_signature_name}_log"
            request = getattr(log, log_types[-1]).request
            assert request.model_spec.signature_name == interface.example_signature_name
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            assert examples
            result = example_signature(inputs=tf.constant(examples))
            assert all(np.all(np.isfinite(v.numpy())) for v in result.values() if v.dtype != tf.string)
            continue
        request = log.predict_log.request
        assert request.model_spec.name == interface.name
        assert request.model_spec.signature_name == interface.signature_name
        assert set(request.inputs) == {f.name for f in interface.features}
        tensors = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        sizes = {t.shape for t in tensors.values()}
        assert len(sizes) == 1 and len(next(iter(sizes))) == 1, f"inputs are not rank-1 of one length: {sizes}"
        batch_sizes.add(next(iter(sizes))[0])
        result = signature(**{name: tf.constant(t) for name, t in tensors.items()})
        assert set(result) == {o.name for o in interface.outputs}
        assert all(np.all(np.isfinite(v.numpy())) for v in result.values())
    assert 1 in batch_sizes and max(batch_sizes) > 1
    assert log_types.count("predict_log") == log_types.count(f"{interface.example_signature_name}_log")


# ---------------------------------------------------------------------------------------------------------------
# (d) Published schemas
# ---------------------------------------------------------------------------------------------------------------


def test_committed_schemas_match_the_interface():
    problems = schemas.check()
    assert not problems, f"{problems}; run `python -m training.schemas`"
    for model in mi.MODELS.values():
        assert json.loads(schemas.schema_path(model).read_text()) == model.json_schema()


def test_schema_check_fails_on_a_stale_schema(tmp_path, capsys):
    schemas.write(tmp_path)
    assert schemas.main(["--check", f"--schema_dir={tmp_path}"]) == 0
    stale = schemas.schema_path(mi.PRICE, tmp_path)
    document = json.loads(stale.read_text())
    document["properties"]["shipping"]["maximum"] = 2
    stale.write_text(json.dumps(document, indent=2) + "\n")
    assert schemas.main(["--check", f"--schema_dir={tmp_path}"]) == 1
    assert "price_event.schema.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# (f) Layout and reloadability
# ---------------------------------------------------------------------------------------------------------------


def test_export_uses_tf_serving_version_layout_without_leftovers(model_dir):
    for name in ("fraud", "price"):
        version_dir = model_dir / name / "1"
        assert (version_dir / "saved_model.pb").is_file()
        assert (version_dir / "variables").is_dir()
        assert sorted(p.name for p in (model_dir / name).iterdir()) == ["1"], "temporary export directories left over"


def test_export_loads_and_serves_in_a_fresh_process_without_keras(model_dir):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["keras"] = None      # any import of Keras 3 / tf_keras now fails
        sys.modules["tf_keras"] = None
        import numpy as np
        import tensorflow as tf
        from model_handlers import interface as mi
        from training import data
        for model in mi.MODELS.values():
            signature = tf.saved_model.load(sys.argv[1] + "/" + model.name + "/1").signatures["serving_default"]
            events, _ = data.generate(model, 16, seed=1)
            values = signature(**model.to_columns(events))[model.outputs[0].name].numpy()
            assert values.shape == (16,) and np.all(np.isfinite(values)), values
            if model.name == "fraud":
                assert np.all((values >= 0) & (values <= 1)), values
            else:
                assert np.all(values > 0), values
            print(model.name, "ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["fraud", "ok", "price", "ok"]


def test_build_skips_an_existing_version_and_replaces_it_with_force(tmp_path):
    small = {"fraud": 3000}
    logs = []
    first = train.build(tmp_path, ["fraud"], version=2, seed=1, n=small, log=logs.append)["fraud"]
    assert not first.get("skipped") and first["n"] == 3000
    pb = tmp_path / "fraud" / "2" / "saved_model.pb"
    stamp = pb.stat().st_mtime_ns
    again = train.build(tmp_path, ["fraud"], version=2, seed=1, n={"fraud": 4000}, log=logs.append)["fraud"]
    assert again["skipped"] and again["n"] == 3000
    assert pb.stat().st_mtime_ns == stamp
    assert any("skipped" in line for line in logs)
    forced = train.build(tmp_path, ["fraud"], version=2, force=True, seed=1, n={"fraud": 4000}, log=logs.append)[
        "fraud"
    ]
    assert not forced.get("skipped") and forced["n"] == 4000
    assert json.loads((tmp_path / "fraud" / "2" / "assets.extra" / "quality.json").read_text())["n"] == 4000
    assert sorted(p.name for p in (tmp_path / "fraud").iterdir()) == ["2"]
