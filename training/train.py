"""Train the two demo models on synthetic data and export them in TF Serving's layout.

    python -m training.train --model_dir=DIR [--models=fraud,price] [--version=1] [--force] [--seed=0]

Each model lands in `DIR/<name>/<version>/`: a TF SavedModel whose `serving_default` signature takes exactly the
interface's features (rank-1 tensors named by feature) and returns exactly its outputs (float32, rank 1); beside it
TF Serving's tf.Example signature, `classify` (fraud: `scores` and `classes`, [batch, 2]) or `regress` (price:
`outputs`, [batch]), taking serialized `tf.train.Example`s as `inputs` and parsing them with the interface's
`example_feature_spec()` into the same graph; plus `assets.extra/tf_serving_warmup_requests` (TF Serving's warm-up
format, requests for both signatures) and `assets.extra/quality.json` (held-out
metrics and training parameters). All preprocessing (string normalisation, hashing, word flags, numeric scaling
with constants from the training data) is inside the graph, so a client sends raw features. The model is a plain
`tf.Module` trained in a plain TF loop with Keras' Adam optimizer: loading it needs `tf.saved_model.load` only, no Keras
(Beam's stock TF handler loads through Keras, which cannot read SavedModels under Keras 3).

An export is written to a hidden temporary directory next to its final place and renamed into place, so a
half-written version never appears (TF Serving ignores non-numeric directory names).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from model_handlers import interface as mi
from model_handlers import repository
from training import data, metrics

DEFAULT_N = {"fraud": 100_000, "price": 100_000}
HOLDOUT = 0.2
WARMUP_BATCH_SIZES = (1, 32, 1, 32)
QUALITY_FILE = "quality.json"

_tf = None


def _tensorflow(threads: int = 2):
    """Import TensorFlow once, pinned to `threads` cores when the runtime is not initialised yet."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime was already initialised by the caller; keep its settings
            pass
        _tf = tf
    return _tf


# ----------------------------------------------------------------------------------------------------------------
# Graph building blocks
# ----------------------------------------------------------------------------------------------------------------


def _any_match(tf, text, pattern: str):
    """1.0 where `pattern` occurs anywhere in `text` (RE2, case already folded), else 0.0."""
    return tf.cast(tf.strings.regex_full_match(text, f"(?s).*(?:{pattern}).*"), tf.float32)


def _normalise_text(tf, text):
    """Lowercase (UTF-8 aware) and turn every run of non letters/digits into one space."""
    return tf.strings.regex_replace(tf.strings.lower(text, encoding="utf-8"), r"[^\p{L}\p{N}]+", " ")


def _log1p_length(tf, text):
    return tf.math.log1p(tf.cast(tf.strings.length(text), tf.float32))


class _Net:
    """Mixin: glorot-initialised dense layers and embedding tables from a numpy RNG (deterministic for a seed)."""

    def _init_rng(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def _table(self, tf, buckets: int, dim: int, name: str):
        return tf.Variable(self._rng.normal(0.0, 0.05, (buckets, dim)).astype(np.float32), name=name)

    def _dense(self, tf, sizes: Sequence[int], out_bias: float, name: str):
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w = self._rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
            b = np.full((fan_out,), out_bias if i == len(sizes) - 2 else 0.0, dtype=np.float32)
            layers.append((tf.Variable(w, name=f"{name}_w{i}"), tf.Variable(b, name=f"{name}_b{i}")))
        return layers

    @staticmethod
    def _mlp(tf, layers, x):
        for i, (w, b) in enumerate(layers):
            x = tf.matmul(x, w) + b
            if i < len(layers) - 1:
                x = tf.nn.relu(x)
        return tf.squeeze(x, axis=1)

    @staticmethod
    def _bag(tf, table, text, max_tokens: int):
        """Mean-by-sqrt(n) of hashed token embeddings of normalised text (first `max_tokens` tokens)."""
        tokens = tf.strings.split(text)[:, :max_tokens]
        ids = tf.strings.to_hash_bucket_fast(tokens.flat_values, table.shape[0])
        summed = tf.math.unsorted_segment_sum(tf.gather(table, ids), tokens.value_rowids(), tokens.nrows())
        counts = tf.cast(tokens.row_lengths(), tf.float32)
        return summed / tf.sqrt(tf.maximum(counts, 1.0))[:, None]

    def _scaled(self, tf, raw):
        return (raw - self.numeric_mean) / self.numeric_std

    def set_numeric_stats(self, raw: np.ndarray):
        tf = _tensorflow()
        std = raw.std(axis=0)
        self.numeric_mean = tf.constant(raw.mean(axis=0).astype(np.float32))
        self.numeric_std = tf.constant(np.where(std < 1e-6, 1.0, std).astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Fraud
# ----------------------------------------------------------------------------------------------------------------

FRAUD_PATTERNS = {
    "off_platform_payment": r"wire transfer|western union|moneygram|gift ?cards?|bitcoin|crypto|deposit first",
    "contact_outside": r"whatsapp|telegram|e-?mail me|not through the app|text me",
    "pressure": r"urgent|asap|today only|must sell|need the money|abroad",
    "counterfeit": r"replica|1:1|aaa quality|\bcopy\b|looks original|\bfake\b",
    "hype": r"!!!|\bcheap\b",
}
FRAUD_CATEGORY_BUCKETS = 1024


def _fraud_module_class(tf):
    class FraudModel(tf.Module, _Net):
        """Listing/transaction -> fraud logit; `serve` maps raw features to `fraud_probability`."""

        def __init__(self, seed: int, base_rate: float, category_log_price: np.ndarray, n_numeric: int):
            super().__init__(name="fraud_model")
            self._init_rng(seed)
            self.category_log_price = tf.constant(category_log_price.astype(np.float32))
            self.category_embedding = self._table(tf, 256, 4, "category_embedding")
            self.shipping_embedding = self._table(tf, 64, 4, "shipping_embedding")
            self.payment_embedding = self._table(tf, 64, 4, "payment_embedding")
            self.text_embedding = self._table(tf, 4096, 8, "text_embedding")
            width = n_numeric + 4 + 4 + 4 + 8
            self.layers = self._dense(tf, [width, 32, 16, 1], float(np.log(base_rate / (1 - base_rate))), "mlp")

        def raw_numeric(self, x):
            price = tf.math.log1p(tf.maximum(x["price"], 0.0))
            category = tf.strings.lower(tf.strings.strip(x["category"]), encoding="utf-8")
            expected = tf.gather(self.category_log_price, tf.strings.to_hash_bucket_fast(category, FRAUD_CATEGORY_BUCKETS))
            age = tf.cast(x["seller_account_age_days"], tf.float32)
            sales = tf.cast(x["seller_num_sales"], tf.float32)
            images = tf.cast(x["num_images"], tf.float32)
            rating = x["seller_rating"]
            title = tf.strings.lower(x["title"], encoding="utf-8")
            description = tf.strings.lower(x["description"], encoding="utf-8")
            text = tf.strings.join([title, description], separator=" \n ")
            columns = [
                price,
                price - expected,
                tf.math.log1p(tf.maximum(age, 0.0)),
                tf.cast(age < 30, tf.float32),
                tf.math.log1p(tf.maximum(sales, 0.0)),
                tf.cast(sales <= 0, tf.float32),
                rating,
                tf.cast(rating <= 0, tf.float32),
                tf.math.log1p(tf.maximum(images, 0.0)),
                tf.cast(images <= 1, tf.float32),
                tf.math.log1p(tf.maximum(x["buyer_seller_distance_km"], 0.0)),
                _log1p_length(tf, x["title"]),
                _log1p_length(tf, x["description"]),
            ] + [_any_match(tf, text, pattern) for pattern in FRAUD_PATTERNS.values()]
            return tf.stack(columns, axis=1)

        def logits(self, x):
            def lookup(table, value):
                key = tf.strings.lower(tf.strings.strip(value), encoding="utf-8")
                return tf.gather(table, tf.strings.to_hash_bucket_fast(key, table.shape[0]))

            text = _normalise_text(tf, tf.strings.join([x["title"], x["description"]], separator=" "))
            features = tf.concat(
                [
                    self._scaled(tf, self.raw_numeric(x)),
                    lookup(self.category_embedding, x["category"]),
                    lookup(self.shipping_embedding, x["shipping_method"]),
                    lookup(self.payment_embedding, x["payment_method"]),
                    self._bag(tf, self.text_embedding, text, 48),
                ],
                axis=1,
            )
            return self._mlp(tf, self.layers, features)

        def serve(self, x):
            return {"fraud_probability": tf.sigmoid(self.logits(x))}

    return FraudModel


def _build_fraud(tf, columns: dict, labels: np.ndarray, seed: int):
    lp = np.log1p(np.maximum(columns["price"].astype(np.float64), 0))
    keys = np.array([c.decode("utf-8").strip().lower().encode("utf-8") for c in columns["category"]], dtype=object)
    buckets = tf.strings.to_hash_bucket_fast(keys, FRAUD_CATEGORY_BUCKETS).numpy()
    table = np.full(FRAUD_CATEGORY_BUCKETS, np.median(lp))
    for bucket in np.unique(buckets):
        table[bucket] = np.median(lp[buckets == bucket])
    base_rate = float(np.clip(labels.mean(), 1e-4, 0.5))
    model = _fraud_module_class(tf)(seed, base_rate, table, n_numeric=13 + len(FRAUD_PATTERNS))

    def loss(batch, y):
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(y, tf.float32), logits=model.logits(batch)))

    return model, loss


# ----------------------------------------------------------------------------------------------------------------
# Price
# ----------------------------------------------------------------------------------------------------------------

PRICE_PATTERNS = {
    "new_with_tags": r"\bnwt\b|\bbnwt\b|new with tags",
    "brand_new": r"brand new|never used|never worn|new in (?:box|package)|\bnib\b",
    "vintage": r"vintage|retro|\b[5-9]0s\b",
    "bundle": r"bundle|\blot of\b|\bset of\b",
    "authentic": r"authentic|genuine",
    "for_parts": r"for parts|broken|not working|repair",
    "sealed": r"sealed",
    "worn": r"stain|damage|heavily used|pilling|visible wear|as is",
}


def _price_module_class(tf):
    class PriceModel(tf.Module, _Net):
        """Listing -> log1p(price); `serve` maps raw features to `suggested_price` in EUR."""

        def __init__(self, seed: int, mean_log_price: float, n_numeric: int):
            super().__init__(name="price_model")
            self._init_rng(seed)
            self.category1_embedding = self._table(tf, 256, 8, "category1_embedding")
            self.category2_embedding = self._table(tf, 1024, 8, "category2_embedding")
            self.category3_embedding = self._table(tf, 4096, 16, "category3_embedding")
            self.brand_embedding = self._table(tf, 4096, 16, "brand_embedding")
            self.name_embedding = self._table(tf, 16384, 16, "name_embedding")
            self.description_embedding = self._table(tf, 16384, 16, "description_embedding")
            width = n_numeric + 5 + 8 + 8 + 16 + 16 + 16 + 16
            self.layers = self._dense(tf, [width, 64, 32, 1], mean_log_price, "mlp")

        @staticmethod
        def _description(x):
            description = tf.strings.lower(tf.strings.strip(x["item_description"]), encoding="utf-8")
            return tf.where(tf.equal(description, "no description yet"), "", description)

        def raw_numeric(self, x):
            name = tf.strings.lower(x["name"], encoding="utf-8")
            description = self._description(x)
            text = tf.strings.join([name, description], separator=" \n ")
            columns = [
                tf.cast(tf.equal(x["shipping"], 1), tf.float32),
                _log1p_length(tf, name),
                _log1p_length(tf, description),
                tf.cast(tf.equal(description, ""), tf.float32),
                tf.cast(tf.equal(tf.strings.strip(x["brand_name"]), ""), tf.float32),
            ] + [_any_match(tf, text, pattern) for pattern in PRICE_PATTERNS.values()]
            return tf.stack(columns, axis=1)

        def logits(self, x):
            def lookup(table, key):
                return tf.gather(table, tf.strings.to_hash_bucket_fast(key, table.shape[0]))

            category = tf.strings.lower(tf.strings.strip(x["category_name"]), encoding="utf-8")
            level1 = tf.strings.regex_replace(category, r"/.*", "")
            level2 = tf.strings.regex_replace(category, r"^([^/]*/[^/]*).*$", r"\1")
            brand = tf.strings.lower(tf.strings.strip(x["brand_name"]), encoding="utf-8")
            condition = tf.one_hot(tf.clip_by_value(x["item_condition_id"], 1, 5) - 1, 5, dtype=tf.float32)
            features = tf.concat(
                [
                    self._scaled(tf, self.raw_numeric(x)),
                    condition,
                    lookup(self.category1_embedding, level1),
                    lookup(self.category2_embedding, level2),
                    lookup(self.category3_embedding, category),
                    lookup(self.brand_embedding, brand),
                    self._bag(tf, self.name_embedding, _normalise_text(tf, x["name"]), 32),
                    self._bag(tf, self.description_embedding, _normalise_text(tf, self._description(x)), 64),
                ],
                axis=1,
            )
            return self._mlp(tf, self.layers, features)

        def serve(self, x):
            log_price = tf.clip_by_value(self.logits(x), 0.0, float(np.log1p(1_000_000.0)))
            return {"suggested_price": tf.math.expm1(log_price)}

    return PriceModel


def _build_price(tf, columns: dict, labels: np.ndarray, seed: int):
    model = _price_module_class(tf)(seed, float(np.mean(np.log1p(labels))), n_numeric=5 + len(PRICE_PATTERNS))
    log_price = np.log1p(labels)

    def loss(batch, y):
        return tf.reduce_mean(tf.square(model.logits(batch) - y))

    return model, loss, log_price


# ----------------------------------------------------------------------------------------------------------------
# Training loop, evaluation, export
# ----------------------------------------------------------------------------------------------------------------

HYPERPARAMETERS = {
    "fraud": {"epochs": 6, "batch_size": 512, "learning_rate": 3e-3},
    "price": {"epochs": 6, "batch_size": 512, "learning_rate": 3e-3},
}


def _input_signature(tf, interface: mi.ModelInterface):
    dtypes = {mi.STRING: tf.string, mi.FLOAT: tf.float32, mi.INT: tf.int64}
    return [{f.name: tf.TensorSpec([None], dtypes[f.dtype], name=f.name) for f in interface.features}]


def _example_signature(tf, model, interface: mi.ModelInterface):
    """TF Serving's classify or regress signature: serialized tf.Examples in, parsed with the interface's spec, and
    the serving function's answer in the method's output keys."""
    spec = interface.example_feature_spec()
    (output,) = interface.outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=mi.EXAMPLE_INPUTS)])
    def from_examples(inputs):
        value = model.serve(tf.io.parse_example(inputs, spec))[output.name]
        if interface.example_signature_name == mi.REGRESS:
            return {mi.REGRESS_OUTPUTS: value}
        classes = tf.tile(tf.constant([list(interface.class_labels)]), [tf.shape(value)[0], 1])
        return {mi.CLASSIFY_SCORES: tf.stack([1.0 - value, value], axis=1), mi.CLASSIFY_CLASSES: classes}

    return from_examples.get_concrete_function()


def _set_example_method_name(tf, export_dir: Path, interface: mi.ModelInterface) -> None:
    """Marks the tf.Example signature as TF Serving's classify or regress method in `saved_model.pb`.

    Why a rewrite: TF2's `tf.saved_model.save` writes every signature with method_name tensorflow/serving/predict
    and has no way to ask for another, while TF Serving's Classify/Regress and tfx-bsl's RunInference look for
    the classify/regress method. The alternative, tf.compat.v1's SavedModelBuilder with
    `classification_signature_def`, would mean rebuilding the trained tf.Module as a TF1 graph and session. The
    method name is only a label on the SignatureDef (inputs, outputs and graph stay as TF2 wrote them), so it is
    set with the protos, and the fingerprint, a checksum of saved_model.pb, is written again to match.
    """
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils  # no public API rewrites the fingerprint

    path = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[interface.example_signature_name].method_name = interface.example_method_name
    path.write_bytes(saved_model.SerializeToString())
    fingerprinting_utils.write_fingerprint(str(export_dir))


def _fit(tf, model, loss_fn, columns: dict, targets: np.ndarray, params: dict, seed: int, log: Callable):
    all_columns = {name: tf.constant(col) for name, col in columns.items()}
    all_targets = tf.constant(targets.astype(np.float32))
    import keras  # training only: the exported module is plain TF, loadable without Keras

    variables = list(model.trainable_variables)
    optimizer = keras.optimizers.Adam(params["learning_rate"])
    optimizer.build(variables)  # create the slots now: variables cannot be created inside the traced step

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def step(index):
        batch = {name: tf.gather(col, index) for name, col in all_columns.items()}
        with tf.GradientTape() as tape:
            loss = loss_fn(batch, tf.gather(all_targets, index))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(seed)
    n, size = len(targets), params["batch_size"]
    for epoch in range(params["epochs"]):
        started, order, losses = time.perf_counter(), rng.permutation(n), []
        for start in range(0, n, size):
            losses.append(float(step(tf.constant(order[start : start + size], dtype=tf.int64))))
        log(f"  epoch {epoch + 1}/{params['epochs']}: loss {np.mean(losses):.4f} ({time.perf_counter() - started:.1f}s)")


def predict(signature, interface: mi.ModelInterface, events: Sequence[dict], batch_size: int = 4096) -> np.ndarray:
    """Run `events` through a serving signature; returns the first output as a numpy array."""
    output = interface.outputs[0].name
    parts = []
    for start in range(0, len(events), batch_size):
        columns = interface.to_columns(events[start : start + batch_size])
        parts.append(signature(**columns)[output].numpy())
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def _category_median_baseline(train_events, train_prices, test_events) -> np.ndarray:
    by_category: dict[str, list[float]] = {}
    for event, price in zip(train_events, train_prices):
        by_category.setdefault(event["category_name"], []).append(price)
    medians = {c: float(np.median(p)) for c, p in by_category.items()}
    fallback = float(np.median(train_prices))
    return np.array([medians.get(e["category_name"], fallback) for e in test_events])


def write_warmup_requests(path: Path, interface: mi.ModelInterface, events: Sequence[dict], batch_sizes=WARMUP_BATCH_SIZES):
    """TF Serving's warm-up file: a TFRecord of PredictionLog records, a PredictRequest for `serving_default` and
    a ClassificationRequest or RegressionRequest for the tf.Example signature per batch size, so that whichever
    API a client uses, its first request does not pay for tracing."""
    tf = _tensorflow()
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, regression_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    start = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in batch_sizes:
            batch = list(events[start : start + size])
            start += size
            request = predict_pb2.PredictRequest()
            request.model_spec.name = interface.name
            request.model_spec.signature_name = interface.signature_name
            for name, column in interface.to_columns(batch).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(column))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())

            # The event's features as a tf.Example (`to_example`, from the same interface), without its event_id.
            spec = dict(name=interface.name, signature_name=interface.example_signature_name)
            examples = dict(example_list=dict(examples=[interface.to_example(event) for event in batch]))
            if interface.example_signature_name == mi.CLASSIFY:
                log = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
                    request=classification_pb2.ClassificationRequest(model_spec=spec, input=examples)))
            else:
                log = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
                    request=regression_pb2.RegressionRequest(model_spec=spec, input=examples)))
            writer.write(log.SerializeToString())


def _train_one(interface: mi.ModelInterface, version: int, seed: int, n: int, final: Path, log: Callable) -> dict:
    tf = _tensorflow()
    tf.random.set_seed(seed)
    started = time.perf_counter()
    events, labels = data.generate(interface, n, seed)
    n_test = int(round(n * HOLDOUT))
    order = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx = np.sort(order[n_test:]), np.sort(order[:n_test])
    train_events = [events[i] for i in train_idx]
    test_events = [events[i] for i in test_idx]
    y_train, y_test = labels[train_idx], labels[test_idx]
    columns = interface.to_columns(train_events)
    log(f"{interface.name}: generated {n} events ({len(train_events)} train, {len(test_events)} held out) "
        f"in {time.perf_counter() - started:.1f}s")

    params = HYPERPARAMETERS[interface.name]
    if interface.name == "fraud":
        model, loss_fn = _build_fraud(tf, columns, y_train, seed)
        targets = y_train
    elif interface.name == "price":
        model, loss_fn, targets = _build_price(tf, columns, y_train, seed)
    else:
        raise ValueError(f"no trainer for model {interface.name!r}")
    model.set_numeric_stats(model.raw_numeric({k: tf.constant(v) for k, v in columns.items()}).numpy())
    _fit(tf, model, loss_fn, columns, targets, params, seed, log)

    serve = tf.function(model.serve, input_signature=_input_signature(tf, interface))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model server may run as another user
        signatures = {
            interface.signature_name: serve.get_concrete_function(),
            interface.example_signature_name: _example_signature(tf, model, interface),
        }
        tf.saved_model.save(model, str(tmp), signatures=signatures)
        _set_example_method_name(tf, tmp, interface)
        # Evaluate the exported graph itself, reloaded as a server would load it.
        signature = tf.saved_model.load(str(tmp)).signatures[interface.signature_name]
        predictions = predict(signature, interface, test_events)
        train_seconds = time.perf_counter() - started
        quality = {
            "model": interface.name,
            "version": version,
            "seed": seed,
            "n": n,
            "n_train": len(train_events),
            "n_test": len(test_events),
            **params,
            "train_seconds": round(train_seconds, 2),
        }
        if interface.name == "fraud":
            quality.update(
                roc_auc=metrics.roc_auc(y_test, predictions),
                log_loss=metrics.log_loss(y_test, predictions),
                positive_rate_test=float(y_test.mean()),
                mean_probability_test=float(predictions.mean()),
            )
            log(f"{interface.name}: held-out ROC AUC {quality['roc_auc']:.4f}, log loss {quality['log_loss']:.4f}, "
                f"positive rate {quality['positive_rate_test']:.4f}")
        else:
            baseline = _category_median_baseline(train_events, y_train, test_events)
            quality.update(
                rmsle=metrics.rmsle(y_test, predictions),
                baseline_rmsle=metrics.rmsle(y_test, baseline),
                baseline="median price of the event's category_name in the training data",
            )
            quality["rmsle_ratio_to_baseline"] = quality["rmsle"] / quality["baseline_rmsle"]
            log(f"{interface.name}: held-out RMSLE {quality['rmsle']:.4f} vs category-median baseline "
                f"{quality['baseline_rmsle']:.4f} (ratio {quality['rmsle_ratio_to_baseline']:.3f})")
        extra = tmp / "assets.extra"
        write_warmup_requests(tmp / repository.WARMUP_FILE, interface, test_events)
        (extra / QUALITY_FILE).write_text(json.dumps(quality, indent=2) + "\n")
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{interface.name}: exported {final} in {train_seconds:.1f}s total")
    return quality


def _move_into_place(tmp: Path, final: Path):
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{time.time_ns()}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(model_dir, names: Sequence[str] = ("fraud", "price"), version: int = 1, force: bool = False, seed: int = 0,
          n: dict | None = None, log: Callable = print) -> dict:
    """Train and export each named model to `<model_dir>/<name>/<version>/`; returns {name: quality dict}.

    A model whose version directory exists is skipped unless `force` (its recorded quality is returned, with
    "skipped": True). `n` overrides the number of generated events per model.
    """
    model_dir = Path(model_dir)
    results = {}
    for name in names:
        if name not in mi.MODELS:
            raise ValueError(f"unknown model {name!r}; known: {sorted(mi.MODELS)}")
        interface = mi.MODELS[name]
        final = model_dir / interface.name / str(int(version))
        if final.exists() and not force:
            log(f"{name}: {final} exists, skipped (use --force to rebuild)")
            quality_file = final / "assets.extra" / QUALITY_FILE
            recorded = json.loads(quality_file.read_text()) if quality_file.exists() else {}
            results[name] = {**recorded, "skipped": True}
            continue
        results[name] = _train_one(interface, int(version), seed, (n or {}).get(name, DEFAULT_N[name]), final, log)
    return results


def measure_latency(path, interface: mi.ModelInterface, batch_sizes=(1, 32, 256), repeats: int = 200) -> dict:
    """Median wall milliseconds of one serving-signature call on numpy columns, per batch size."""
    tf = _tensorflow()
    signature = tf.saved_model.load(str(path)).signatures[interface.signature_name]
    events, _ = data.generate(interface, max(batch_sizes), seed=12345)
    result = {}
    for size in batch_sizes:
        columns = interface.to_columns(events[:size])
        for _ in range(10):
            signature(**columns)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            signature(**columns)
            times.append(time.perf_counter() - start)
        result[size] = float(np.median(times) * 1000)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="model repository root: <model_dir>/<name>/<version>/")
    parser.add_argument("--models", default="fraud,price", help="comma-separated model names")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="rebuild a version that already exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra/inter-op threads")
    parser.add_argument("--no_latency", action="store_true", help="skip the serving latency measurement")
    args = parser.parse_args(argv)
    _tensorflow(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    results = build(args.model_dir, names, args.version, args.force, args.seed)
    print(f"built {', '.join(names)} in {time.perf_counter() - started:.1f}s")
    if not args.no_latency:
        for name in names:
            path = Path(args.model_dir) / name / str(args.version)
            latency = measure_latency(path, mi.MODELS[name])
            print(f"{name}: serving_default median latency " + ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in latency.items()))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
