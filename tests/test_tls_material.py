"""The deploy README's TLS recipe (deploy/flink-on-k8s/tls/make-certs.sh) makes material that does mutual TLS:
a gRPC server holding TF Serving's certificate and trusting the CA accepts the TaskManagers' certificate and
refuses a client without one or with one from another CA; the client certificate names the identity Envoy's RBAC
lets in, and the server certificate the names the pipelines dial.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from deploy import MANIFESTS_DIR
from deploy.site import TF_SERVING_CLIENT_IDENTITY

SCRIPT = MANIFESTS_DIR / "tls" / "make-certs.sh"


def make(directory: Path) -> Path:
    subprocess.run(["bash", str(SCRIPT), str(directory)], check=True, capture_output=True, timeout=60)
    return directory


def echo_server(material: Path):
    read = lambda name: (material / name).read_bytes()  # noqa: E731
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Echo", {"Echo": handler})])
    credentials = grpc.ssl_server_credentials(
        [(read("tf-serving.key"), read("tf-serving.crt"))], root_certificates=read("ca.crt"), require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def call(port: int, root: Path, client: Path | None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        (root / "ca.crt").read_bytes(),
        (client / "flink-taskmanager.key").read_bytes() if client else None,
        (client / "flink-taskmanager.crt").read_bytes() if client else None,
    )
    # The certificate names the Service (tf-serving); the test dials loopback.
    options = [("grpc.ssl_target_name_override", "tf-serving")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        return channel.unary_unary("/t.Echo/Echo")(b"ping", timeout=10)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make(tmp_path_factory.mktemp("tls"))


def test_the_taskmanagers_certificate_is_accepted_and_nothing_else(material, tmp_path):
    server, port = echo_server(material)
    try:
        assert call(port, material, material) == b"ping"
        for client in (None, make(tmp_path / "another-ca")):
            with pytest.raises(grpc.RpcError) as refused:
                call(port, material, client)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    finally:
        server.stop(0)


def test_the_certificates_name_what_envoy_and_the_pipelines_expect(material):
    client = x509.load_pem_x509_certificate((material / "flink-taskmanager.crt").read_bytes())
    uris = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == [TF_SERVING_CLIENT_IDENTITY]
    server = x509.load_pem_x509_certificate((material / "tf-serving.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert {"tf-serving", "tf-serving-pods"} <= set(names)
    assert oct((material / "flink-taskmanager.key").stat().st_mode & 0o777) == "0o600"
