"""Reference answers for the tests: the exported SavedModel called directly, without any project code between."""

import numpy as np
import tensorflow as tf

from model_handlers.interface import FEATURE_TYPES, ModelInterface
from transforms.messages import Reason


def direct_outputs(model_dir, interface: ModelInterface, events: list[dict], version: int = 1) -> dict[str, dict]:
    """event_id -> {output name: value}, from tf.saved_model.load + the serving signature."""
    signature = tf.saved_model.load(f"{model_dir}/{interface.name}/{version}").signatures["serving_default"]
    inputs = {}
    for feature in interface.features:
        values = [event.get(feature.name, feature.default) for event in events]
        inputs[feature.name] = tf.constant(values, dtype=tf.as_dtype(FEATURE_TYPES[feature.dtype].tf_name))
    outputs = {name: tensor.numpy() for name, tensor in signature(**inputs).items()}
    return {
        event["event_id"]: {o.name: float(outputs[o.name][i]) for o in interface.outputs}
        for i, event in enumerate(events)
    }


def assert_close(actual: dict, expected: dict, interface: ModelInterface, tol: float = 1e-5) -> None:
    for output in interface.outputs:
        np.testing.assert_allclose(actual[output.name], expected[output.name], rtol=tol, atol=tol, err_msg=output.name)


PARSE_KINDS = {"empty_payload", "not_utf8", "not_json", "not_an_object", "oversized"}


def check_every_event_accounted_for(messages, prediction_bodies, dead_letter_bodies, interface, model_dir):
    """Every valid event has exactly one prediction equal to the SavedModel's answer; every malformed payload has
    exactly one dead letter carrying its original bytes, at the stage its kind belongs to. Returns the counts."""
    import base64
    import collections
    import json

    valid = [json.loads(m.payload) for m in messages if m.malformed is None]
    expected = direct_outputs(model_dir, interface, valid)
    counts = collections.Counter(body["event_id"] for body in prediction_bodies)
    duplicates = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicates, f"events predicted more than once: {duplicates}"
    assert set(counts) == set(expected), (
        f"missing predictions: {sorted(set(expected) - set(counts))[:10]}, "
        f"unexpected: {sorted(set(counts) - set(expected))[:10]}"
    )
    for body in prediction_bodies:
        assert body["model"] == interface.name and body["model_version"] == "1"
        assert_close(body, expected[body["event_id"]], interface)

    malformed = [m for m in messages if m.malformed is not None]
    got = sorted((base64.b64decode(b["payload"]), b["stage"]) for b in dead_letter_bodies)
    want = sorted((m.payload, "parse" if m.malformed in PARSE_KINDS else "validate") for m in malformed)
    assert got == want, "dead letters do not match the malformed payloads one for one"
    assert all(
        b["error"] and b["error_type"] == "permanent" and b["model"] == interface.name for b in dead_letter_bodies
    )
    assert all(b["reason"] in set(Reason) for b in dead_letter_bodies), "a dead letter without a known reason code"
    return len(prediction_bodies), len(dead_letter_bodies)


def publish_and_account(run, messages, interface, model_dir, timeout_secs: float = 240):
    """Publishes `messages` through a running localdev.streaming.StreamingRun, waits for every outcome, and checks
    that each event is accounted for (check_every_event_accounted_for); returns the predictions and dead letters."""
    arrived, predictions, dead_letters = run.publish_and_collect(messages, timeout_secs=timeout_secs)
    assert arrived, (
        f"only {len(predictions)} predictions and {len(dead_letters)} dead letters for {len(messages)} events"
    )
    check_every_event_accounted_for(
        messages, [p.body for p in predictions], [d.body for d in dead_letters], interface, model_dir
    )
    return predictions, dead_letters
