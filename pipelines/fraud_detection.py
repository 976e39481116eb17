"""Fraud detection: scores marketplace listings and transactions with the fraud classifier.

    python -m pipelines.fraud_detection --input_subscription=... --output_topic=... --dead_letter_topic=...
    python -m pipelines.fraud_detection --input=events*.jsonl --output=out/predictions --dead_letter_output=out/dead

Predictions carry `fraud_probability` and `is_fraud` (probability >= --fraud_threshold).
"""

from __future__ import annotations

import functools

from apache_beam.options.pipeline_options import PipelineOptions

from model_handlers.interface import FRAUD
from pipelines import build
from pipelines.options import InvalidOptions


class FraudOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--fraud_threshold", type=float, default=0.5, help="is_fraud is true when fraud_probability >= this"
        )


def is_fraud(outputs, threshold: float) -> dict:
    return {"is_fraud": outputs["fraud_probability"] >= threshold}


def _decorate(settings):
    threshold = settings.fraud_threshold
    if not 0.0 <= threshold <= 1.0:
        raise InvalidOptions(f"--fraud_threshold must be within [0, 1], got {threshold}")
    return functools.partial(is_fraud, threshold=threshold)


def run(argv=None, test_pipeline=None):
    return build.run(FRAUD, argv, test_pipeline, extra_options=[FraudOptions], decorate_from=_decorate)


if __name__ == "__main__":
    build.main(FRAUD, "python -m pipelines.fraud_detection", __doc__, [FraudOptions], _decorate)
