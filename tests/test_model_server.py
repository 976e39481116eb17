"""The TF Serving stand-in, checked the way a real client talks to TF Serving: the official stubs and protos."""

import grpc
import pytest
import tensorflow as tf
from reference import direct_outputs
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from localdev.model_server import read_config
from model_handlers.interface import FEATURE_TYPES, FRAUD
from training.data import generate


@pytest.fixture(scope="module")
def channel(model_server):
    with grpc.insecure_channel(model_server.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def fraud_request(events, **spec):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="fraud", **spec))
    for feature in FRAUD.features:
        values = [e[feature.name] for e in events]
        dtype = tf.as_dtype(FEATURE_TYPES[feature.dtype].tf_name)
        request.inputs[feature.name].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
    return request


def code_of(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_predict_answers_as_the_saved_model_does_and_names_the_version(prediction, model_dir):
    events, _ = generate(FRAUD, 20, seed=51)
    response = prediction.Predict(fraud_request(events, signature_name="serving_default"), timeout=30)
    scores = tf.make_ndarray(response.outputs["fraud_probability"])
    expected = direct_outputs(model_dir, FRAUD, events)
    assert scores.tolist() == pytest.approx([expected[e["event_id"]]["fraud_probability"] for e in events], abs=1e-6)
    assert (response.model_spec.name, response.model_spec.version.value) == ("fraud", 2)  # latest
    assert response.model_spec.signature_name == "serving_default"


def test_every_version_is_served_and_reported_available(prediction, models):
    events, _ = generate(FRAUD, 2, seed=52)
    for number in (1, 2):
        spec = {"version": {"value": number}}
        assert prediction.Predict(fraud_request(events, **spec), timeout=30).model_spec.version.value == number
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fraud"}), timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]


def test_version_labels_from_the_config_file_pick_their_versions(prediction):
    events, _ = generate(FRAUD, 2, seed=53)
    for label, number in (("stable", 1), ("canary", 2)):
        response = prediction.Predict(fraud_request(events, version_label=label), timeout=30)
        assert response.model_spec.version.value == number


def test_unknown_label_is_invalid_argument_and_unknown_model_or_version_not_found(prediction, models):
    events, _ = generate(FRAUD, 1, seed=54)
    assert code_of(lambda: prediction.Predict(fraud_request(events, version_label="nope"), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    )
    assert code_of(lambda: prediction.Predict(fraud_request(events, version={"value": 9}), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(fraud, 9)",
    )
    unknown = predict_pb2.PredictRequest(model_spec={"name": "churn"})
    assert code_of(lambda: prediction.Predict(unknown, timeout=10))[0] == grpc.StatusCode.NOT_FOUND
    missing = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "churn"})
    assert code_of(lambda: models.GetModelStatus(missing, timeout=10))[0] == grpc.StatusCode.NOT_FOUND


def test_wrong_inputs_are_invalid_argument_with_the_reason(prediction):
    events, _ = generate(FRAUD, 2, seed=55)
    missing = fraud_request(events)
    del missing.inputs["price"]
    code, details = code_of(lambda: prediction.Predict(missing, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Missing but required: {price}" in details

    extra = fraud_request(events)
    extra.inputs["colour"].CopyFrom(tf.make_tensor_proto(["red", "blue"]))
    code, details = code_of(lambda: prediction.Predict(extra, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input tensor alias not found in signature: colour" in details

    wrong_type = fraud_request(events)
    wrong_type.inputs["price"].CopyFrom(tf.make_tensor_proto(["1", "2"]))
    code, details = code_of(lambda: prediction.Predict(wrong_type, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Expects arg[price] to be float32 but string" in details


def test_model_metadata_describes_the_serving_signature(prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "fraud", "version_label": "stable"}, metadata_field=["signature_def"]
    )
    response = prediction.GetModelMetadata(request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert set(signature.inputs) == {f.name for f in FRAUD.features}
    assert set(signature.outputs) == {"fraud_probability"}
    assert signature.method_name == "tensorflow/serving/predict"
    assert response.model_spec.version.value == 1


def test_classify_on_a_predict_signature_is_refused_as_tf_serving_does(prediction):
    request = classification_pb2.ClassificationRequest(model_spec={"name": "fraud"})
    request.input.example_list.examples.add()
    code, details = code_of(lambda: prediction.Classify(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )


def test_reload_config_moves_a_version_label(prediction, models, serving_repo):
    config = read_config(serving_repo / "models.config")
    config.model_config_list.config[0].version_labels["stable"] = 2
    models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=10)
    try:
        events, _ = generate(FRAUD, 1, seed=56)
        assert (
            prediction.Predict(fraud_request(events, version_label="stable"), timeout=30).model_spec.version.value == 2
        )
        config.model_config_list.config[0].version_labels["stable"] = 7
        code, details = code_of(
            lambda: models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=config), timeout=10
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "version 7, which is not available" in details
    finally:
        models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=read_config(serving_repo / "models.config")), timeout=10
        )


def _export_example_model(path):
    """A tiny SavedModel with TF Serving's classify and regress signatures over serialized tf.Examples."""
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, shape=[None], name="tf_example")
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        positive = tf.sigmoid(x)
        scores = tf.concat([1.0 - positive, positive], axis=1)
        classes = tf.tile(tf.constant([["benign", "fraud"]]), [tf.shape(x)[0], 1])
        value = 2.0 * x + 1.0
        signature_defs = {
            "classify_x": tf.compat.v1.saved_model.classification_signature_def(serialized, classes, scores),
            "regress_x": tf.compat.v1.saved_model.regression_signature_def(serialized, value),
        }
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signature_defs)
            builder.save()


def test_classify_and_regress_answer_for_signatures_of_those_methods(tmp_path):
    from tensorflow_serving.apis import regression_pb2

    from localdev.model_server import ModelServerProcess
    from plumbing.ports import free_port

    _export_example_model(tmp_path / "repo" / "toy" / "3")
    with (
        ModelServerProcess(tmp_path / "repo", free_port(), tmp_path / "server.log") as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        classify = classification_pb2.ClassificationRequest(model_spec={"name": "toy", "signature_name": "classify_x"})
        regress = regression_pb2.RegressionRequest(model_spec={"name": "toy", "signature_name": "regress_x"})
        for x in (0.0, 2.0):
            for request in (classify, regress):
                request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)

        classified = stub.Classify(classify, timeout=30)
        assert classified.model_spec.version.value == 3
        first, second = classified.result.classifications
        assert [c.label for c in first.classes] == ["benign", "fraud"]
        assert [c.score for c in first.classes] == pytest.approx([0.5, 0.5])
        assert second.classes[1].score == pytest.approx(1 / (1 + 2.718281828**-2.0), abs=1e-6)

        regressed = stub.Regress(regress, timeout=30)
        assert [r.value for r in regressed.result.regressions] == pytest.approx([1.0, 5.0])

        wrong_method = regression_pb2.RegressionRequest(model_spec={"name": "toy", "signature_name": "classify_x"})
        wrong_method.input.example_list.examples.add()
        code, details = code_of(lambda: stub.Regress(wrong_method, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "Was: tensorflow/serving/classify" in details


def test_a_second_server_on_a_taken_port_fails_at_once_naming_the_one_serving_there(
    model_server, serving_repo, tmp_path
):
    """gRPC would let both bind (SO_REUSEPORT) and share the connections; the stand-in refuses, before it loads."""
    from localdev.model_server import ModelServerProcess

    second = ModelServerProcess(serving_repo, model_server.port, tmp_path / "second.log")
    with pytest.raises(RuntimeError) as refused:
        second.start(timeout_secs=60)
    assert (
        f"error: port {model_server.port} is taken by pid {model_server.pid} (python -m localdev.model_server "
        in str(refused.value)
    )
    assert "stop it, or choose another port with --port" in str(refused.value)
