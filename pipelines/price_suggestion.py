"""Price suggestion: suggests a price for second-hand marketplace listings with the price regressor.

    python -m pipelines.price_suggestion --input_subscription=... --output_topic=... --dead_letter_topic=...
    python -m pipelines.price_suggestion --input=listings*.jsonl --output=out/predictions --dead_letter_output=out/dead

Predictions carry `suggested_price` (EUR).
"""

from __future__ import annotations

from model_handlers.interface import PRICE
from pipelines import build


def run(argv=None, test_pipeline=None):
    return build.run(PRICE, argv, test_pipeline)


if __name__ == "__main__":
    build.main(PRICE, "python -m pipelines.price_suggestion", __doc__)
