"""TLS and mutual TLS to TF Serving, for real: certificates made here (tests/certificates.py), the stand-in serving
TF Serving's --ssl_config_file, and the pipeline's client presenting its certificate through the new options."""

import concurrent.futures
import json
import types

import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from certificates import make_pki
from reference import assert_close, direct_outputs
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from localdev import model_server
from localdev.model_server import ModelServerProcess
from model_handlers.errors import TFServingUnreachable
from model_handlers.interface import FRAUD
from model_handlers.tf_serving import CredentialsUnreadable, TFServingHandler
from pipelines import fraud_detection
from pipelines.build import make_handler
from pipelines.options import InferenceOptions, InferencePath
from plumbing.ports import free_port
from training.data import generate

BACKFILL = ["--input=in.jsonl", "--output=out/pred", "--dead_letter_output=out/dead"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def ssl_config_file(pki, directory, client_verify: bool):
    path = directory / f"ssl-{client_verify}.config"
    path.write_text(pki.ssl_config(client_verify=client_verify))
    return path


@pytest.fixture(scope="module")
def mtls_server(serving_repo, pki, tmp_path_factory):
    """The stand-in as a process, requiring client certificates signed by the test CA."""
    directory = tmp_path_factory.mktemp("mtls-server")
    args = [f"--ssl_config_file={ssl_config_file(pki, directory, client_verify=True)}"]
    with ModelServerProcess(serving_repo, free_port(), directory / "server.log", args) as server:
        yield server


def model_status(target, credentials=None, timeout=10):
    """GetModelStatus for fraud through a channel of these credentials (None: plaintext); the versions, or the
    status code of the refusal."""
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fraud"})
        try:
            return [s.version for s in stub.GetModelStatus(request, timeout=timeout).model_version_status]
        except grpc.RpcError as error:
            return error.code()


def client_credentials(pki, cert=None, key=None):
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


# --- the stand-in as a process, with TF Serving's --ssl_config_file -----------------------------------------------
def test_mutual_tls_answers_a_client_presenting_a_certificate_of_the_ca(mtls_server, pki):
    credentials = client_credentials(pki, pki.client_cert, pki.client_key)
    assert model_status(mtls_server.target, credentials) == [1, 2]


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_server, pki):
    assert model_status(mtls_server.target, client_credentials(pki)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_certificate_of_another_ca_with_the_same_name(mtls_server, pki):
    credentials = client_credentials(pki, pki.stranger_cert, pki.stranger_key)
    assert model_status(mtls_server.target, credentials) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_plaintext(mtls_server):
    assert model_status(mtls_server.target) == grpc.StatusCode.UNAVAILABLE


def mtls_flags(target, pki, cert=None, key=None):
    flags = [
        "--inference=tf_serving",
        f"--tf_serving_target={target}",
        "--model_version=1",
        "--tf_serving_tls",
        f"--tf_serving_root_certificates={pki.ca}",
    ]
    if cert:
        flags += [f"--tf_serving_client_certificate={cert}", f"--tf_serving_client_key={key}"]
    return flags


def test_the_pipeline_scores_through_mutual_tls_with_the_client_certificate_options(
    mtls_server, pki, model_dir, tmp_path
):
    events, _ = generate(FRAUD, 30, seed=71)
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    fraud_detection.run(
        [
            f"--input={events_file}",
            f"--output={tmp_path}/p",
            f"--dead_letter_output={tmp_path}/d",
            *mtls_flags(mtls_server.target, pki, pki.client_cert, pki.client_key),
        ]
    ).wait_until_finish()
    predictions = {}
    for path in sorted(tmp_path.glob("p-*.jsonl")):
        for line in path.read_text().splitlines():
            prediction = json.loads(line)
            predictions[prediction["event_id"]] = prediction
    dead_letters = [line for path in tmp_path.glob("d-*.jsonl") for line in path.read_text().splitlines()]
    expected = direct_outputs(model_dir, FRAUD, events)
    assert dead_letters == [] and set(predictions) == set(expected)
    for event_id, prediction in predictions.items():
        assert_close(prediction, expected[event_id], FRAUD)


@pytest.mark.parametrize("presented", ["none", "stranger"])
def test_the_pipeline_refuses_to_start_without_a_client_certificate_the_server_trusts(mtls_server, pki, presented):
    cert, key = (pki.stranger_cert, pki.stranger_key) if presented == "stranger" else (None, None)
    flags = mtls_flags(mtls_server.target, pki, cert, key) + ["--tf_serving_retry_budget_secs=1"]
    options = PipelineOptions(BACKFILL + flags).view_as(InferenceOptions)
    options.validate()
    handler = make_handler(FRAUD, options, InferencePath.TF_SERVING)
    with pytest.raises(TFServingUnreachable, match="UNAVAILABLE"):
        handler.preflight()


# --- the same credentials on an in-process gRPC server: TF Serving's two SSLConfig modes, quickly ----------------
@pytest.fixture
def in_process_server(pki, tmp_path):
    """Starts a gRPC server in this process with the stand-in's credentials for an SSLConfig file; its ModelService
    knows no model, so an answer of NOT_FOUND means the call got through."""

    def start(client_verify: bool) -> str:
        config = model_server.read_ssl_config(ssl_config_file(pki, tmp_path, client_verify))
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        servers.append(server)
        service = model_server.ModelService(types.SimpleNamespace(models={}))
        handler = type(
            "Servicer",
            (model_service_pb2_grpc.ModelServiceServicer,),
            {"GetModelStatus": service.GetModelStatus},
        )()
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(handler, server)
        port = server.add_secure_port("127.0.0.1:0", model_server.server_credentials(config))
        server.start()
        return f"127.0.0.1:{port}"

    servers = []
    yield start
    for server in servers:
        server.stop(grace=None)


def test_client_verify_false_serves_tls_to_any_client_and_true_requires_the_cas_certificate(in_process_server, pki):
    through = grpc.StatusCode.NOT_FOUND
    server_only = in_process_server(client_verify=False)
    assert model_status(server_only, client_credentials(pki)) == through
    assert model_status(server_only, client_credentials(pki, pki.stranger_cert, pki.stranger_key)) == through
    mutual = in_process_server(client_verify=True)
    assert model_status(mutual, client_credentials(pki, pki.client_cert, pki.client_key)) == through
    assert model_status(mutual, client_credentials(pki)) == grpc.StatusCode.UNAVAILABLE
    assert model_status(mutual, client_credentials(pki, pki.stranger_cert, pki.stranger_key)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_the_ssl_config_is_tf_servings_text_format_and_incomplete_ones_are_refused(pki, tmp_path):
    config = model_server.read_ssl_config(ssl_config_file(pki, tmp_path, client_verify=True))
    assert config.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    assert config.client_verify and config.server_cert == pki.server_cert.read_text()
    assert config.custom_ca == pki.ca.read_text()
    no_ca = model_server.ssl_config_class()(server_key="k", server_cert="c", client_verify=True)
    with pytest.raises(ValueError, match="client_verify needs custom_ca"):
        model_server.server_credentials(no_ca)
    with pytest.raises(ValueError, match="needs server_key and server_cert"):
        model_server.server_credentials(model_server.ssl_config_class()(server_cert="c"))


def test_the_stand_ins_tls_flags_are_checked_before_it_serves(pki, tmp_path, capsys):
    def refused(*argv):
        with pytest.raises(SystemExit) as info:
            model_server.parse_args(list(argv))
        assert info.value.code == 2
        return capsys.readouterr().err

    garbled = tmp_path / "garbled.config"
    garbled.write_text("server_key: 'k'\nclient_check: true\n")
    assert "is not a text-format SSLConfig" in refused(f"--ssl_config_file={garbled}")
    assert "No such file" in refused(f"--ssl_config_file={tmp_path / 'missing.config'}")
    both = [f"--ssl_config_file={garbled}", f"--tls_cert_file={pki.server_cert}", f"--tls_key_file={pki.server_key}"]
    assert "not both" in refused(*both)
    assert "go together" in refused(f"--tls_cert_file={pki.server_cert}")
    shorthand = model_server.parse_args([f"--tls_cert_file={pki.server_cert}", f"--tls_key_file={pki.server_key}"])
    assert shorthand.ssl_config.server_key == pki.server_key.read_text() and not shorthand.ssl_config.client_verify


# --- the client's options ------------------------------------------------------------------------------------------
def problems(argv) -> str:
    with pytest.raises(ValueError) as info:
        PipelineOptions(BACKFILL + argv).view_as(InferenceOptions).validate()
    return str(info.value)


def test_client_certificate_options_go_together_and_need_tls():
    serving = ["--inference=tf_serving", "--tf_serving_target=serving:8500"]
    text = problems(serving + ["--tf_serving_client_certificate=c.pem"])
    assert "--tf_serving_client_certificate needs --tf_serving_tls" in text
    assert "--tf_serving_client_certificate and --tf_serving_client_key go together" in text
    text = problems(serving + ["--tf_serving_tls", "--tf_serving_client_key=c.key"])
    assert "--tf_serving_client_certificate and --tf_serving_client_key go together" in text
    assert "needs --tf_serving_tls" not in text
    text = problems(["--tf_serving_client_certificate=c.pem", "--tf_serving_client_key=c.key"])
    assert "--tf_serving_client_certificate does not apply to --inference=in_process" in text
    assert "--tf_serving_client_key does not apply to --inference=in_process" in text
    complete = ["--tf_serving_tls", "--tf_serving_client_certificate=c.pem", "--tf_serving_client_key=c.key"]
    PipelineOptions(BACKFILL + serving + complete).view_as(InferenceOptions).validate()


@pytest.mark.parametrize("missing", ["certificate", "key"])
def test_an_unreadable_client_file_is_named_before_any_connection(pki, tmp_path, missing):
    cert = tmp_path / "nope.pem" if missing == "certificate" else pki.client_cert
    key = tmp_path / "nope.key" if missing == "key" else pki.client_key
    options = PipelineOptions(BACKFILL + mtls_flags(f"127.0.0.1:{free_port()}", pki, cert, key))
    handler = make_handler(FRAUD, options.view_as(InferenceOptions), InferencePath.TF_SERVING)
    with pytest.raises(CredentialsUnreadable, match=f"client {missing} file {tmp_path}/nope"):
        handler.preflight()


def test_the_handler_refuses_half_a_client_identity_or_one_without_tls(pki):
    with pytest.raises(ValueError, match="go together"):
        TFServingHandler(FRAUD, "serving:8500", tls=True, client_certificate_file=str(pki.client_cert))
    with pytest.raises(ValueError, match="pass tls=True"):
        TFServingHandler(
            FRAUD, "serving:8500", client_certificate_file=str(pki.client_cert), client_key_file=str(pki.client_key)
        )
