"""TFX interop: the tf.Example signatures, TFRecord backfills with PredictionLog output, tfx-bsl's RunInference,
and TF Serving's Classify/Regress, all agreeing with the raw-feature path on the same events."""

import base64
import dataclasses
import glob
import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from reference import direct_outputs
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from model_handlers import interface as mi
from model_handlers.errors import SignatureMismatchError
from model_handlers.interface import FRAUD, PRICE
from model_handlers.saved_model import SavedModelHandler
from model_handlers.tf_serving import TFServingHandler
from model_handlers.tf_serving_protocol import CLASSIFY_REGRESS, PREDICT
from model_handlers.tfx_bsl_inference import TfxBslHandler
from pipelines import fraud_detection, price_suggestion
from pipelines.options import InferenceOptions
from training.data import generate
from transforms.events import InvalidEvent, parse_event, parse_example_event
from transforms.messages import RawEvent

PIPELINES = {"fraud": (FRAUD, fraud_detection), "price": (PRICE, price_suggestion)}
TF_DTYPES = {"string": tf.string, "number": tf.float32, "integer": tf.int64}
TOLERANCE = 1e-5


def serialized_example(interface, event) -> bytes:
    return interface.to_example(event, event["event_id"]).SerializeToString()


def signature_defs(model_dir, interface):
    saved_model = saved_model_pb2.SavedModel.FromString(
        (model_dir / interface.name / "1" / "saved_model.pb").read_bytes()
    )
    return saved_model.meta_graphs[0].signature_def


def read_prediction_logs(prefix):
    files = glob.glob(f"{prefix}-*-of-*.tfrecord")
    assert files, f"no PredictionLog files at {prefix}-*.tfrecord"
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def read_json_lines(prefix):
    return [json.loads(line) for path in glob.glob(f"{prefix}-*-of-*.jsonl") for line in open(path, encoding="utf-8")]


def logged_event(interface, log):
    """A PredictionLog -> (event_id, {output: value}, model_version), reading the event back from its request."""
    kind = f"{interface.example_signature_name}_log"
    assert log.WhichOneof("log_type") == kind
    entry = getattr(log, kind)
    (example,) = entry.request.input.example_list.examples
    result = entry.response.result
    answers = result.classifications if interface.example_signature_name == mi.CLASSIFY else result.regressions
    (row,) = interface.rows_from_example_results(answers)
    event_id = example.features.feature["event_id"].bytes_list.value[0].decode()
    return event_id, row, entry.response.model_spec.version.value


# ---------------------------------------------------------------------------------------------------------------
# One interface, two renderings; the exported tf.Example signatures
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", [FRAUD, PRICE], ids=lambda m: m.name)
def test_example_feature_spec_and_json_schema_are_rendered_from_the_same_declaration(interface):
    schema, spec = interface.json_schema(), interface.example_feature_spec()
    properties = {k: v for k, v in schema["properties"].items() if k != mi.EVENT_ID}
    assert set(spec) == set(properties)
    for name, feature_spec in spec.items():
        assert feature_spec.shape == []
        assert feature_spec.dtype == TF_DTYPES[properties[name]["type"]], name
        assert feature_spec.default_value == properties[name].get("default"), name
        assert (feature_spec.default_value is None) == (name in schema["required"]), name


@pytest.mark.parametrize("interface", [FRAUD, PRICE], ids=lambda m: m.name)
def test_export_has_tf_servings_classify_or_regress_signature_beside_serving_default(model_dir, interface):
    signatures = signature_defs(model_dir, interface)
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"
    signature = signatures[interface.example_signature_name]
    assert signature.method_name == f"tensorflow/serving/{interface.example_signature_name}"
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.inputs.items()} == {
        "inputs": (tf.string.as_datatype_enum, [-1])
    }
    outputs = {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.outputs.items()}
    if interface is FRAUD:
        assert outputs == {
            "scores": (tf.float32.as_datatype_enum, [-1, 2]),
            "classes": (tf.string.as_datatype_enum, [-1, 2]),
        }
    else:
        assert outputs == {"outputs": (tf.float32.as_datatype_enum, [-1])}
    # The rewrite of saved_model.pb left a fingerprint that matches it.
    fingerprint = tf.saved_model.experimental.read_fingerprint(str(model_dir / interface.name / "1"))
    assert fingerprint.saved_model_checksum != 0


@pytest.mark.parametrize("interface", [FRAUD, PRICE], ids=lambda m: m.name)
def test_example_signature_answers_as_serving_default_including_left_out_optional_features(model_dir, interface):
    events, _ = generate(interface, 300, seed=71)
    optional = [f.name for f in interface.features if not f.required]
    events[::2] = [{k: v for k, v in e.items() if k not in optional} for e in events[::2]]
    expected = direct_outputs(model_dir, interface, events)
    loaded = tf.saved_model.load(str(model_dir / interface.name / "1"))
    outputs = loaded.signatures[interface.example_signature_name](
        inputs=tf.constant([serialized_example(interface, e) for e in events])
    )
    if interface is FRAUD:
        scores, classes = outputs["scores"].numpy(), outputs["classes"].numpy()
        assert (classes == np.array([[b"legit", b"fraud"]])).all()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=TOLERANCE)
        got = scores[:, 1]
    else:
        got = outputs["outputs"].numpy()
    want = [expected[e["event_id"]][interface.outputs[0].name] for e in events]
    np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)


# ---------------------------------------------------------------------------------------------------------------
# Four ways to score, one answer
# ---------------------------------------------------------------------------------------------------------------


def _score_with_handler(handler, features, batch_size=256):
    model = handler.load_model()
    rows = []
    for start in range(0, len(features), batch_size):
        results = list(handler.run_inference(features[start : start + batch_size], model))
        assert all(isinstance(r.inference, dict) for r in results), [r.inference for r in results][:3]
        rows += [r.inference for r in results]
    return rows


def _score_with_tfx_bsl_run_inference(model_dir, interface, examples, tmp_path):
    """tfx-bsl's own RunInference PTransform, keyed by event_id, its PredictionLogs written out and read back."""
    from tfx_bsl.public.beam.run_inference import RunInference
    from tfx_bsl.public.proto import model_spec_pb2

    spec = model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(
            model_path=str(model_dir / interface.name / "1"), signature_name=[interface.example_signature_name]
        )
    )
    out = tmp_path / "tfx_bsl" / "logs"
    with beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create(list(examples.items()))
            | RunInference(spec)
            | beam.Map(lambda keyed: json.dumps([keyed[0], base64.b64encode(keyed[1].SerializeToString()).decode()]))
            | beam.io.WriteToText(str(out))
        )
    rows = {}
    for line in (line for path in glob.glob(f"{out}*") for line in open(path)):
        event_id, log = json.loads(line)
        log = prediction_log_pb2.PredictionLog.FromString(base64.b64decode(log))
        logged_id, row, _version = logged_event(interface, log)
        assert logged_id == event_id
        rows[event_id] = row
    return rows


@pytest.mark.parametrize("interface", [FRAUD, PRICE], ids=lambda m: m.name)
def test_handler_tfx_bsl_predict_and_classify_regress_agree_on_2000_events(
    model_dir, model_server, interface, tmp_path
):
    events, _ = generate(interface, 2000, seed=72)
    ids = [e["event_id"] for e in events]
    # The same events twice: as JSON, and as the equivalent tf.Examples; each parsed by its own parser.
    from_json = [parse_event(RawEvent(json.dumps(e).encode(), {}), interface) for e in events]
    from_examples = [parse_example_event(RawEvent(serialized_example(interface, e), {}), interface) for e in events]
    assert [event_id for event_id, _ in from_examples] == [event_id for event_id, _ in from_json] == ids
    json_features = [features for _, features in from_json]
    example_features = [features for _, features in from_examples]

    output = interface.outputs[0].name
    paths = {
        "in-process handler, serving_default (JSON)": _score_with_handler(
            SavedModelHandler(interface, str(model_dir)), json_features
        ),
        "gRPC Predict (JSON)": _score_with_handler(
            TFServingHandler(interface, model_server.target, model_version=1, api=PREDICT), json_features
        ),
        f"gRPC {interface.example_signature_name.title()} (tf.Example)": _score_with_handler(
            TFServingHandler(interface, model_server.target, model_version=1, api=CLASSIFY_REGRESS), example_features
        ),
        "tfx-bsl handler adapter (tf.Example)": _score_with_handler(
            TfxBslHandler(interface, str(model_dir)), example_features
        ),
    }
    paths = {name: dict(zip(ids, (row[output] for row in rows))) for name, rows in paths.items()}
    tfx_rows = _score_with_tfx_bsl_run_inference(
        model_dir, interface, {e["event_id"]: interface.to_example(e, e["event_id"]) for e in events}, tmp_path
    )
    paths[f"tfx-bsl RunInference, {interface.example_signature_name} signature"] = {
        event_id: row[output] for event_id, row in tfx_rows.items()
    }

    reference_name = "in-process handler, serving_default (JSON)"
    reference = paths[reference_name]
    disagreements = []
    for name, values in paths.items():
        assert set(values) == set(ids), f"{name} scored {len(values)} of {len(ids)} events"
        for event_id in ids:
            if not np.isclose(values[event_id], reference[event_id], rtol=TOLERANCE, atol=TOLERANCE):
                disagreements.append(
                    f"{event_id}: {name} says {values[event_id]!r}, {reference_name} says {reference[event_id]!r}"
                )
    assert not disagreements, f"{len(disagreements)} disagreements on {output}:\n" + "\n".join(disagreements[:20])


# ---------------------------------------------------------------------------------------------------------------
# TFRecord in, PredictionLog out
# ---------------------------------------------------------------------------------------------------------------


def _example_with(interface, event, **changes):
    example = interface.to_example(event, event["event_id"])
    fields = example.features.feature
    for name, change in changes.items():
        if change is None:
            del fields[name]
        else:
            fields[name].Clear()
            getattr(fields[name], change[0]).value.extend(change[1])
    return example.SerializeToString()


def bad_fraud_records(event):
    """(record, stage, what the error must mention) for each kind of record the TFRecord backfill refuses."""
    return [
        (b"\xff\xfe not a protocol buffer \x00\x01", "parse", "not a tf.train.Example"),
        (_example_with(FRAUD, event, event_id=None), "validate", "'event_id' is missing"),
        (
            _example_with(FRAUD, event, event_id=("int64_list", [7])),
            "validate",
            "'event_id' must be a string, got an int64_list",
        ),
        (_example_with(FRAUD, event, price=None), "validate", "required feature 'price' is missing"),
        (
            _example_with(FRAUD, event, num_images=("float_list", [3.0])),
            "validate",
            "feature 'num_images' must be an integer, got a float_list",
        ),
        (
            _example_with(FRAUD, event, title=("bytes_list", [b"a", b"b"])),
            "validate",
            "feature 'title' must be a string, got a bytes_list of 2 values",
        ),
        (
            _example_with(FRAUD, event, seller_rating=("float_list", [9.5])),
            "validate",
            "feature 'seller_rating' is 9.5, above the maximum 5",
        ),
        (
            _example_with(FRAUD, event, category=("bytes_list", [b"\xff\xfe"])),
            "validate",
            "feature 'category' must be a string, got bytes that are not UTF-8",
        ),
    ]


def test_example_parser_reports_what_was_expected_and_what_arrived():
    events, _ = generate(FRAUD, 1, seed=73)
    for record, stage, message in bad_fraud_records(events[0]):
        with pytest.raises(InvalidEvent) as info:
            parse_example_event(RawEvent(record, {}), FRAUD)
        assert info.value.stage == stage and message in info.value.reason, (info.value.stage, info.value.reason)


def _write_tfrecords(path, records, compress: bool):
    with tf.io.TFRecordWriter(str(path), options="GZIP" if compress else None) as writer:
        for record in records:
            writer.write(record)


@pytest.mark.parametrize(
    "compress,inference", [(False, "tfx_bsl"), (True, "in_process")], ids=["plain-tfx_bsl", "gzip-in_process"]
)
def test_tfrecord_backfill_writes_prediction_logs_and_dead_letters_bad_records_with_their_bytes(
    model_dir, tmp_path, compress, inference
):
    events, _ = generate(FRAUD, 300, seed=74)
    good = [serialized_example(FRAUD, e) for e in events]
    bad = bad_fraud_records(events[0])
    records = good[:150] + [record for record, _, _ in bad] + good[150:]
    events_file = tmp_path / ("events.tfrecord.gz" if compress else "events.tfrecord")
    _write_tfrecords(events_file, records, compress)
    if compress:
        assert events_file.read_bytes()[:2] == b"\x1f\x8b"  # gzip's magic number: really compressed

    fraud_detection.run(
        [
            f"--input={events_file}",
            "--input_format=tfrecord",
            "--output_format=prediction_log",
            f"--output={tmp_path}/out/predictions",
            f"--dead_letter_output={tmp_path}/out/dead",
            f"--inference={inference}",
            f"--model_dir={model_dir}",
            "--max_batch_size=64",
        ]
    ).wait_until_finish()

    expected = direct_outputs(model_dir, FRAUD, events)
    logs = read_prediction_logs(f"{tmp_path}/out/predictions")
    got = {}
    for log in logs:
        event_id, row, version = logged_event(FRAUD, log)
        assert event_id not in got, f"{event_id} predicted twice"
        assert version == 1 and log.classify_log.request.model_spec.signature_name == "classify"
        got[event_id] = row["fraud_probability"]
    assert set(got) == set(expected)
    for event_id, value in got.items():
        assert value == pytest.approx(expected[event_id]["fraud_probability"], abs=TOLERANCE), event_id

    dead = read_json_lines(f"{tmp_path}/out/dead")
    assert sorted((base64.b64decode(d["payload"]), d["stage"]) for d in dead) == sorted(
        (record, stage) for record, stage, _ in bad
    )
    for record, _stage, message in bad:
        (letter,) = [d for d in dead if base64.b64decode(d["payload"]) == record]
        assert message in letter["error"] and letter["error_type"] == "permanent" and letter["model"] == "fraud"


def test_json_lines_in_prediction_logs_out_for_price(model_dir, tmp_path):
    events, _ = generate(PRICE, 50, seed=75)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    price_suggestion.run(
        [
            f"--input={tmp_path}/events.jsonl",
            "--output_format=prediction_log",
            f"--output={tmp_path}/out/p",
            f"--dead_letter_output={tmp_path}/out/d",
            f"--model_dir={model_dir}",
        ]
    ).wait_until_finish()
    expected = direct_outputs(model_dir, PRICE, events)
    rows = {
        event_id: row
        for event_id, row, _ in (logged_event(PRICE, log) for log in read_prediction_logs(f"{tmp_path}/out/p"))
    }
    assert set(rows) == set(expected)
    for event_id, row in rows.items():
        assert row["suggested_price"] == pytest.approx(expected[event_id]["suggested_price"], rel=TOLERANCE)


# ---------------------------------------------------------------------------------------------------------------
# Signature checks and options
# ---------------------------------------------------------------------------------------------------------------


def test_classify_regress_mode_checks_the_example_signature_and_names_what_is_missing(model_server, model_dir):
    TFServingHandler(FRAUD, model_server.target, model_version=1, api=CLASSIFY_REGRESS).load_model().close()
    as_regression = dataclasses.replace(PRICE, name="fraud")  # asks the fraud model for a regress signature
    with pytest.raises(
        SignatureMismatchError, match=r"has no signature 'regress'; it has \['classify', 'serving_default'\]"
    ):
        TFServingHandler(as_regression, model_server.target, model_version=1, api=CLASSIFY_REGRESS).load_model()
    with pytest.raises(SignatureMismatchError, match="has no signature 'regress'"):
        TfxBslHandler(as_regression, str(model_dir)).load_model()


def test_example_signature_problems_name_inputs_method_and_outputs():
    problems = FRAUD.example_signature_problems(
        {"price": "float32"}, ["fraud_probability"], "tensorflow/serving/predict"
    )
    assert problems == [
        "inputs are {'price': 'float32'}, expected {'inputs': 'string'} (serialized tf.train.Examples)",
        "method_name is 'tensorflow/serving/predict', expected 'tensorflow/serving/classify'",
        "outputs the model lacks: ['classes', 'scores']",
    ]


BACKFILL = ["--input=in.tfrecord", "--output=out/pred", "--dead_letter_output=out/dead"]
STREAMING = [
    "--input_subscription=projects/demo-project/subscriptions/events",
    "--output_topic=projects/demo-project/topics/predictions",
    "--dead_letter_topic=projects/demo-project/topics/dead-letters",
]


def problems(argv) -> str:
    with pytest.raises(ValueError) as info:
        PipelineOptions(argv).view_as(InferenceOptions).validate()
    return str(info.value)


def test_tfrecord_prediction_log_and_tfx_bsl_are_accepted_for_backfill():
    options = PipelineOptions(
        BACKFILL + ["--input_format=tfrecord", "--output_format=prediction_log", "--inference=tfx_bsl", "--model_dir=m"]
    ).view_as(InferenceOptions)
    options.validate()
    assert (options.input_format, options.output_format, options.inference) == ("tfrecord", "prediction_log", "tfx_bsl")
    serving = PipelineOptions(
        BACKFILL + ["--inference=tf_serving", "--tf_serving_target=h:8500", "--tf_serving_api=classify_regress"]
    ).view_as(InferenceOptions)
    serving.validate()


def test_tfrecord_and_prediction_log_are_rejected_for_streaming():
    text = problems(STREAMING + ["--input_format=tfrecord", "--output_format=prediction_log"])
    assert "--input_format applies to backfill only: streaming reads and writes JSON messages" in text
    assert "--output_format applies to backfill only" in text


def test_flags_of_other_inference_paths_are_rejected_for_tfx_bsl_and_tf_serving_api_elsewhere():
    text = problems(BACKFILL + ["--inference=tfx_bsl", "--share_model_across_processes", "--tf_serving_target=h:1"])
    assert "--share_model_across_processes does not apply to --inference=tfx_bsl" in text
    assert "--tf_serving_target does not apply to --inference=tfx_bsl" in text
    assert "--tf_serving_api does not apply to --inference=in_process" in problems(
        BACKFILL + ["--tf_serving_api=classify_regress"]
    )
