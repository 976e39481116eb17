"""The TF Serving handler against real server processes: same answers as in-process, and real faults."""

import dataclasses
import datetime
import glob
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
from outage import through_an_outage
from reference import assert_close, direct_outputs

from localdev.model_server import ModelServerProcess
from localdev.pubsub_emulator import free_port
from localdev.traffic import make_traffic
from model_handlers.base import InferenceFailure
from model_handlers.errors import SignatureMismatchError
from model_handlers.interface import FRAUD, PRICE, Feature
from model_handlers.tf_serving import TFServingClient, TFServingHandler
from pipelines import fraud_detection, price_suggestion
from training.data import generate
from transforms.messages import ErrorType

PIPELINES = {"fraud": (FRAUD, fraud_detection), "price": (PRICE, price_suggestion)}


def features_of(events):
    return [{k: v for k, v in e.items() if k != "event_id"} for e in events]


def read_lines(prefix):
    return [json.loads(line) for path in sorted(glob.glob(f"{prefix}-*.jsonl")) for line in open(path)]


@pytest.mark.parametrize("model", sorted(PIPELINES))
def test_tf_serving_and_in_process_give_the_same_predictions_and_dead_letters(model, model_dir, model_server, tmp_path):
    interface, pipeline = PIPELINES[model]
    messages = make_traffic(interface, 400, malformed_fraction=0.05, seed=61)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    outputs = {}
    for name, args in {
        "in_process": [f"--model_dir={model_dir}"],
        "tf_serving": ["--inference=tf_serving", f"--tf_serving_target={model_server.target}", "--model_version=1"],
    }.items():
        pipeline.run(
            [
                f"--input={events_file}",
                f"--output={tmp_path}/{name}/p",
                f"--dead_letter_output={tmp_path}/{name}/d",
                *args,
            ]
        ).wait_until_finish()
        outputs[name] = (
            {p["event_id"]: p for p in read_lines(f"{tmp_path}/{name}/p")},
            sorted((d["payload"], d["stage"], d["error"]) for d in read_lines(f"{tmp_path}/{name}/d")),
        )
    (local, local_dead), (remote, remote_dead) = outputs["in_process"], outputs["tf_serving"]
    assert set(local) == set(remote) and len(local) == sum(m.malformed is None for m in messages)
    for event_id, prediction in local.items():
        assert_close(remote[event_id], prediction, interface)
        assert remote[event_id]["model_version"] == prediction["model_version"] == "1"
    assert remote_dead == local_dead and len(local_dead) == sum(m.malformed is not None for m in messages)


def test_predictions_carry_the_version_tf_serving_reports_for_a_label(model_server):
    events, _ = generate(FRAUD, 3, seed=62)
    for label, version in (("stable", "1"), ("canary", "2")):
        handler = TFServingHandler(FRAUD, model_server.target, version_label=label)
        results = list(handler.run_inference(features_of(events), handler.load_model()))
        assert {r.model_id for r in results} == {version}


def test_a_signature_that_does_not_match_the_schema_fails_fast_naming_the_fields(model_server):
    drifted = dataclasses.replace(
        FRAUD, features=FRAUD.features + (Feature("seller_country", "string", "x", max_length=2),)
    )
    with pytest.raises(SignatureMismatchError, match=r"inputs the model lacks: \['seller_country'\]"):
        TFServingHandler(drifted, model_server.target).load_model()


def test_server_absent_at_start_is_retried_then_the_pipeline_refuses_to_start(tmp_path):
    target = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.fraud_detection",
            "--input=x.jsonl",
            f"--output={tmp_path}/p",
            f"--dead_letter_output={tmp_path}/d",
            "--inference=tf_serving",
            f"--tf_serving_target={target}",
            "--tf_serving_retry_budget_secs=3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"error: TF Serving did not answer GetModelMetadata for model 'fraud' (latest version) at {target} "
        "within a retry budget of 3s: UNAVAILABLE" in result.stderr
    )
    assert result.stderr.count("GetModelMetadata to " + target + ": retrying in") >= 2
    assert "Traceback" not in result.stderr.split("error: TF Serving")[-1]
    assert time.monotonic() - started < 120


def test_a_server_slower_than_the_deadline_is_cut_off_at_the_deadline(serving_repo, tmp_path):
    with ModelServerProcess(serving_repo, free_port(), tmp_path / "slow.log", ["--delay_secs=3"]) as slow:
        handler = TFServingHandler(FRAUD, slow.target, timeout_secs=0.5, retry_budget_secs=1)
        # A client made directly: load_model's metadata check would itself be cut off by the same deadline.
        client = TFServingClient(slow.target, tls=False, root_certificates=None, max_in_flight=1)
        events, _ = generate(FRAUD, 4, seed=63)
        started = time.monotonic()
        results = list(handler.run_inference(features_of(events), client))
        elapsed = time.monotonic() - started
    failures = [r.inference for r in results]
    assert all(isinstance(f, InferenceFailure) and f.error_type == ErrorType.RETRYABLE for f in failures)
    assert failures[0].error == "DEADLINE_EXCEEDED: Deadline Exceeded"
    # Attempts cut at their 0.5 s deadline within the 1 s budget rather than waiting out the server's 3 s, and the
    # batch not split.
    assert elapsed < 2.5, f"the call took {elapsed:.1f}s against a 0.5 s deadline and a 1 s budget"


def test_resource_exhausted_is_retried_with_backoff_until_it_succeeds(serving_repo, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="model_handlers.tf_serving")
    args = ["--max_concurrent_requests=1", "--delay_secs=0.3"]
    with ModelServerProcess(serving_repo, free_port(), tmp_path / "busy.log", args) as busy:
        handler = TFServingHandler(FRAUD, busy.target, retry_budget_secs=20, initial_backoff_secs=0.1, max_in_flight=4)
        client = handler.load_model()
        events, _ = generate(FRAUD, 4, seed=64)
        results = [None] * 4

        def score(i):
            results[i] = list(handler.run_inference(features_of(events), client))

        threads = [threading.Thread(target=score, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert all(r is not None and not any(isinstance(x.inference, InferenceFailure) for x in r) for r in results)
    retries = [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage() and "retrying in" in r.getMessage()]
    assert retries, "four concurrent batches against a one-request server must have met RESOURCE_EXHAUSTED"


def _self_signed(tmp_path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_connects_with_the_servers_roots_and_refuses_without_them(serving_repo, model_dir, tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    args = [f"--tls_cert_file={cert_file}", f"--tls_key_file={key_file}"]
    with ModelServerProcess(serving_repo, free_port(), tmp_path / "tls.log", args) as secure:
        events, _ = generate(FRAUD, 5, seed=65)
        handler = TFServingHandler(
            FRAUD, secure.target, tls=True, root_certificates_file=str(cert_file), model_version=1
        )
        results = list(handler.run_inference(features_of(events), handler.load_model()))
        expected = direct_outputs(model_dir, FRAUD, events)
        for event, result in zip(events, results):
            assert_close(result.inference, expected[event["event_id"]], FRAUD)
        plaintext = TFServingHandler(FRAUD, secure.target, retry_budget_secs=0.5)
        with pytest.raises(ConnectionError):
            plaintext.preflight()


# --- streaming, with the server killed for real ---------------------------------------------------------------
def _stream_through_an_outage(emulator, serving_repo, tmp_path, prefix, outage_secs, retry_budget_secs):
    with through_an_outage(
        emulator, serving_repo, tmp_path, prefix, seed=66, outage_secs=outage_secs, retry_budget_secs=retry_budget_secs
    ) as (run, messages):
        time.sleep(3)  # a repeat would come now
        return messages, run.predictions, run.dead_letters


def test_server_killed_and_back_within_the_retry_budget_loses_nothing(emulator, serving_repo, tmp_path):
    messages, predictions, dead_letters = _stream_through_an_outage(
        emulator, serving_repo, tmp_path, "restart-", outage_secs=2, retry_budget_secs=60
    )
    assert dead_letters == []
    ids = [p.body["event_id"] for p in predictions]
    assert sorted(ids) == sorted(m.event_id for m in messages), "every event predicted exactly once"


def test_server_down_longer_than_the_budget_dead_letters_the_affected_events_as_retryable(
    emulator, serving_repo, tmp_path
):
    messages, predictions, dead_letters = _stream_through_an_outage(
        emulator, serving_repo, tmp_path, "outage-", outage_secs=12, retry_budget_secs=2
    )
    predicted = [p.body["event_id"] for p in predictions]
    dead = [d.body["event_id"] for d in dead_letters]
    assert dead, "an outage longer than the budget must dead-letter the events it caught"
    assert predicted, "events before and after the outage are predicted"
    assert sorted(predicted + dead) == sorted(m.event_id for m in messages), "every event accounted for exactly once"
    for dead_letter in dead_letters:
        assert (dead_letter.body["stage"], dead_letter.body["error_type"]) == ("infer", "retryable")
        assert dead_letter.body["error"].startswith(("UNAVAILABLE:", "DEADLINE_EXCEEDED:"))
