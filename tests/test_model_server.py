"""The TF Serving stand-in, checked the way a real client talks to TF Serving: the official stubs and protos."""

import grpc
import pytest
import tensorflow as tf
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
from model_handlers.interface import FRAUD
from reference import direct_outputs
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
        dtype = {"string": tf.string, "float": tf.float32, "int": tf.int64}[feature.dtype]
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
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE), (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_version_labels_from_the_config_file_pick_their_versions(prediction):
    events, _ = generate(FRAUD, 2, seed=53)
    for label, number in (("stable", 1), ("canary", 2)):
        response = prediction.Predict(fraud_request(events, version_label=label), timeout=30)
        assert response.model_spec.version.value == number


def test_unknown_label_is_invalid_argument_and_unknown_model_or_version_not_found(prediction, models):
    events, _ = generate(FRAUD, 1, seed=54)
    assert code_of(lambda: prediction.Predict(fraud_request(events, version_label="nope"), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope")
    assert code_of(lambda: prediction.Predict(fraud_request(events, version={"value": 9}), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(fraud, 9)")
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
        assert prediction.Predict(fraud_request(events, version_label="stable"), timeout=30).model_spec.version.value == 2
        config.model_config_list.config[0].version_labels["stable"] = 7
        code, details = code_of(lambda: models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "version 7, which is not available" in details
    finally:
        models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=read_config(serving_repo / "models.config")), timeout=10
        )
