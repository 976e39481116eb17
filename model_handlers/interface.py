"""The one source of truth for each model's interface.

A `ModelInterface` declares, once, the features an event carries (name, type, bounds, default), the model's
outputs, and the name of its directory in the model repository. Everything else reads it:

- `transforms.events` validates incoming JSON against it;
- the model handlers build tensors (`to_columns`) and TF Serving tensor protos from it;
- `training` generates data for it and exports a serving signature whose inputs are exactly these features;
- `json_schema()` renders the published JSON Schema documents in `schemas/` (a test keeps them in step);
- `example_feature_spec()` and `to_example` give the same features as a `tf.train.Example` (TF Serving's Classify
  and Regress, tfx-bsl's RunInference, TFRecord backfills), and `rows_from_example_results` reads the answer back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EVENT_ID = "event_id"
EVENT_ID_MAX_LENGTH = 128

STRING = "string"
FLOAT = "float"
INT = "int"


@dataclasses.dataclass(frozen=True)
class FeatureType:
    """What one feature type is in each format it travels in. Floats are float32 on the wire (TF Serving's
    DT_FLOAT, a tf.train.Example's float_list) and ints int64."""

    numpy_dtype: Any  # the numpy column the serving signatures take
    tf_name: str  # TensorFlow's name (tf.dtypes.DType.name), as a signature declares its inputs
    tensor_dtype: str  # the DataType enum in a TensorProto (tensorflow/core/framework/types.proto)
    json_type: str  # JSON Schema's type
    described: str  # in an error message: "must be {described}"
    example_kind: str  # the tf.train.Example list the feature travels in


# The one table of feature types: every place that maps a type to a dtype reads it.
FEATURE_TYPES = {
    STRING: FeatureType(object, "string", "DT_STRING", "string", "a string", "bytes_list"),
    FLOAT: FeatureType(np.float32, "float32", "DT_FLOAT", "number", "a number", "float_list"),
    INT: FeatureType(np.int64, "int64", "DT_INT64", "integer", "an integer", "int64_list"),
}

# TF Serving's signatures over serialized tf.train.Examples: one DT_STRING input, `inputs`, and the method name
# TF Serving's Classify and Regress insist on (tensorflow/serving/apis; tf.saved_model.CLASSIFY_METHOD_NAME, ...).
CLASSIFY = "classify"
REGRESS = "regress"
EXAMPLE_INPUTS = "inputs"
EXAMPLE_METHOD_NAMES = {CLASSIFY: "tensorflow/serving/classify", REGRESS: "tensorflow/serving/regress"}
CLASSIFY_SCORES, CLASSIFY_CLASSES, REGRESS_OUTPUTS = "scores", "classes", "outputs"


@dataclasses.dataclass(frozen=True)
class Feature:
    """One raw feature of an event, as the serving signature takes it (a rank-1 tensor, one value per event)."""

    name: str
    dtype: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    # A feature with a default is optional in events; the default is what the model sees when it is absent.
    default: Any = None

    def __post_init__(self):
        if self.dtype not in FEATURE_TYPES:
            raise ValueError(f"feature {self.name!r}: dtype must be one of {sorted(FEATURE_TYPES)}, got {self.dtype!r}")
        if self.dtype == STRING and self.max_length is None:
            raise ValueError(f"string feature {self.name!r} needs a max_length: inputs are size-bounded")
        if self.dtype != STRING and (self.minimum is None or self.maximum is None):
            raise ValueError(f"numeric feature {self.name!r} needs a minimum and a maximum: inputs are bounded")

    @property
    def required(self) -> bool:
        return self.default is None

    def json_schema(self) -> dict:
        schema: dict[str, Any] = {"type": FEATURE_TYPES[self.dtype].json_type, "description": self.description}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclasses.dataclass(frozen=True)
class Output:
    """One output of the serving signature: a rank-1 float tensor, one value per event."""

    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class ModelInterface:
    """What a model takes and gives, and where it lives (`<model_dir>/<name>/<version>/`)."""

    name: str
    title: str
    description: str
    features: tuple[Feature, ...]
    outputs: tuple[Output, ...]
    signature_name: str = "serving_default"
    # The tf.Example signature beside `signature_name`, named after its TF Serving method: CLASSIFY (the one
    # output is the score of the last of `class_labels`) or REGRESS (the one output is the regression value).
    example_signature_name: str = REGRESS
    class_labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.example_signature_name not in EXAMPLE_METHOD_NAMES:
            raise ValueError(
                f"model {self.name!r}: example_signature_name must be one of "
                f"{sorted(EXAMPLE_METHOD_NAMES)}, got {self.example_signature_name!r}"
            )
        if len(self.outputs) != 1:
            raise ValueError(
                f"model {self.name!r}: classify and regress signatures carry one output, "
                f"got {[o.name for o in self.outputs]}"
            )
        if (self.example_signature_name == CLASSIFY) != (len(self.class_labels) == 2):
            raise ValueError(
                f"model {self.name!r}: a classify model needs two class_labels (negative, positive) "
                f"and a regress model none, got {self.class_labels}"
            )

    @property
    def example_method_name(self) -> str:
        return EXAMPLE_METHOD_NAMES[self.example_signature_name]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"model {self.name!r} has no feature {name!r}; it has {[f.name for f in self.features]}")

    def to_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Validated feature dicts -> one numpy column per feature, typed as the signature takes them."""
        columns = {}
        for feature in self.features:
            values = [row.get(feature.name, feature.default) for row in rows]
            if feature.dtype == STRING:
                columns[feature.name] = np.array([v.encode("utf-8") for v in values], dtype=object)
            else:
                columns[feature.name] = np.array(values, dtype=FEATURE_TYPES[feature.dtype].numpy_dtype)
        return columns

    def rows_from_outputs(self, outputs: Mapping[str, Any], batch_size: int) -> list[dict[str, float]]:
        """The model's output columns -> one {output: value} dict per element, checking every output is there."""
        names = [output.name for output in self.outputs]
        columns = []
        for name in names:
            if name not in outputs:
                raise ValueError(f"the {self.name!r} model returned {sorted(outputs)}, without {name!r}")
            values = np.asarray(outputs[name]).reshape(-1).tolist()
            if len(values) != batch_size:
                raise ValueError(f"output {name!r} has {len(values)} values for a batch of {batch_size}")
            columns.append(values)
        return [dict(zip(names, row)) for row in zip(*columns)]

    def signature_problems(self, inputs: Mapping[str, str], outputs: Sequence[str]) -> list[str]:
        """What keeps a signature (input name -> TF dtype name, output names) from serving this interface."""
        expected = {f.name: FEATURE_TYPES[f.dtype].tf_name for f in self.features}
        problems = []
        missing, extra = sorted(set(expected) - set(inputs)), sorted(set(inputs) - set(expected))
        if missing:
            problems.append(f"inputs the model lacks: {missing}")
        if extra:
            problems.append(f"inputs the schema lacks: {extra}")
        for name in sorted(set(expected) & set(inputs)):
            if expected[name] != inputs[name]:
                problems.append(f"input {name!r} is {inputs[name]} in the model, {expected[name]} in the schema")
        missing_outputs = sorted({o.name for o in self.outputs} - set(outputs))
        if missing_outputs:
            problems.append(f"outputs the model lacks: {missing_outputs}")
        return problems

    # --- tf.train.Example: the same features in TF Serving's Classify/Regress and TFX's format -------------------
    def example_feature_spec(self) -> dict:
        """The `tf.io.parse_example` spec of the features: scalars, with each optional feature's default, so that
        an Example without it is scored as a JSON event without it (and as `to_columns` fills it)."""
        import tensorflow as tf

        return {
            f.name: tf.io.FixedLenFeature([], tf.as_dtype(FEATURE_TYPES[f.dtype].tf_name), default_value=f.default)
            for f in self.features
        }

    def to_example(self, features: Mapping[str, Any], event_id: str | None = None):
        """A validated feature dict -> tf.train.Example, every feature set (absent ones at their default); with
        `event_id`, an `event_id` bytes feature too, which the model ignores and a PredictionLog keeps."""
        from tensorflow.core.example import example_pb2

        example = example_pb2.Example()
        fields = example.features.feature
        if event_id is not None:
            fields[EVENT_ID].bytes_list.value.append(event_id.encode("utf-8"))
        for feature in self.features:
            value = features.get(feature.name, feature.default)
            kind = getattr(fields[feature.name], FEATURE_TYPES[feature.dtype].example_kind)
            kind.value.append(value.encode("utf-8") if feature.dtype == STRING else value)
        return example

    def rows_from_example_results(self, results: Sequence[Any]) -> list[dict[str, float]]:
        """Classify/Regress answers -> one {output: value} dict per element. `results` are the elements'
        `Classifications` (classify models) or `Regression`s (regress models), as TF Serving's ClassificationResult
        / RegressionResult and tfx-bsl's PredictionLogs carry them."""
        (output,) = self.outputs
        if self.example_signature_name == REGRESS:
            return [{output.name: float(regression.value)} for regression in results]
        positive, rows = self.class_labels[1], []
        for classification in results:
            scores = {c.label: c.score for c in classification.classes}
            if positive not in scores:
                raise ValueError(
                    f"the {self.name!r} model classified into {sorted(scores)}, without the positive class {positive!r}"
                )
            rows.append({output.name: float(scores[positive])})
        return rows

    def example_result(self, row: Mapping[str, float]):
        """One {output: value} dict -> the ClassificationResult / RegressionResult TF Serving would answer with
        (classes negative then positive, scores summing to 1), as a PredictionLog records it."""
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        value = float(row[self.outputs[0].name])
        if self.example_signature_name == CLASSIFY:
            negative, positive = self.class_labels
            result = classification_pb2.ClassificationResult()
            result.classifications.add().classes.extend(
                [
                    classification_pb2.Class(label=negative, score=1.0 - value),
                    classification_pb2.Class(label=positive, score=value),
                ]
            )
            return result
        result = regression_pb2.RegressionResult()
        result.regressions.add(value=value)
        return result

    def example_signature_problems(
        self, inputs: Mapping[str, str], outputs: Sequence[str], method_name: str
    ) -> list[str]:
        """What keeps a signature (input name -> TF dtype name, output names, method) from being this model's
        TF Serving classify or regress signature."""
        problems = []
        if dict(inputs) != {EXAMPLE_INPUTS: "string"}:
            problems.append(
                f"inputs are {dict(sorted(inputs.items()))}, expected {{'{EXAMPLE_INPUTS}': 'string'}} "
                "(serialized tf.train.Examples)"
            )
        if method_name != self.example_method_name:
            problems.append(f"method_name is {method_name!r}, expected {self.example_method_name!r}")
        wanted = (CLASSIFY_SCORES, CLASSIFY_CLASSES) if self.example_signature_name == CLASSIFY else (REGRESS_OUTPUTS,)
        missing = sorted(set(wanted) - set(outputs))
        if missing:
            problems.append(f"outputs the model lacks: {missing}")
        return problems

    def json_schema(self) -> dict:
        """The JSON Schema (draft 2020-12) of one event for this model, as published in `schemas/`."""
        properties = {
            EVENT_ID: {
                "type": "string",
                "minLength": 1,
                "maxLength": EVENT_ID_MAX_LENGTH,
                "description": "Caller-chosen unique id of the event; predictions and dead letters carry it.",
            }
        }
        properties.update({f.name: f.json_schema() for f in self.features})
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{self.name}_event.schema.json",
            "title": self.title,
            "description": self.description
            + " Unknown fields are ignored. Numbers must be finite; integers must be JSON integers.",
            "type": "object",
            "properties": properties,
            "required": [EVENT_ID] + [f.name for f in self.features if f.required],
            "additionalProperties": True,
        }


FRAUD = ModelInterface(
    name="fraud",
    title="Fraud detection event",
    description="A marketplace listing or transaction to score for fraud.",
    features=(
        Feature("price", FLOAT, "Listed price in EUR.", minimum=0, maximum=1_000_000),
        Feature("seller_account_age_days", INT, "Days since the seller's account was created.", 0, 36_500),
        Feature("seller_num_sales", INT, "Completed sales by the seller so far.", 0, 1_000_000),
        Feature("seller_rating", FLOAT, "Seller's mean rating, 0 when unrated.", 0, 5),
        Feature("category", STRING, "Top-level category, e.g. electronics, fashion, home.", max_length=64),
        Feature("shipping_method", STRING, "standard, express, pickup or international.", max_length=32),
        Feature("payment_method", STRING, "card, wallet, bank_transfer, crypto or gift_card.", max_length=32),
        Feature("title", STRING, "Listing title as typed by the seller.", max_length=200),
        Feature("description", STRING, "Listing description.", max_length=5_000, default=""),
        Feature("num_images", INT, "Photos attached to the listing.", 0, 100, default=0),
        Feature("buyer_seller_distance_km", FLOAT, "Distance between buyer and seller.", 0, 40_000, default=0.0),
    ),
    outputs=(Output("fraud_probability", "Probability that the listing or transaction is fraudulent."),),
    example_signature_name=CLASSIFY,
    class_labels=("legit", "fraud"),
)

PRICE = ModelInterface(
    name="price",
    title="Price suggestion event",
    description="A second-hand marketplace listing to suggest a price for.",
    features=(
        Feature("name", STRING, "Listing title.", max_length=200),
        Feature("brand_name", STRING, "Brand, empty when unknown.", max_length=100, default=""),
        Feature("category_name", STRING, "Category path, e.g. Women/Tops & Blouses/T-Shirts.", max_length=200),
        Feature("item_condition_id", INT, "Condition from 1 (new) to 5 (poor).", minimum=1, maximum=5),
        Feature("shipping", INT, "1 when the seller pays shipping, else 0.", minimum=0, maximum=1),
        Feature("item_description", STRING, "Free-text description.", max_length=5_000, default=""),
    ),
    outputs=(Output("suggested_price", "Suggested listing price in EUR."),),
    example_signature_name=REGRESS,
)

MODELS = {m.name: m for m in (FRAUD, PRICE)}
