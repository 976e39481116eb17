"""Entry points: `python -m pipelines.fraud_detection` and `python -m pipelines.price_suggestion`."""
