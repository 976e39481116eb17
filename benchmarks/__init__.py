"""Benchmarks: signature ceiling, backfill on the DirectRunner, streaming through the Pub/Sub emulator, and a
hand-written google-cloud-pubsub consumer as the baseline. Entry point: `python -m benchmarks.run --model_dir=DIR`.
"""
