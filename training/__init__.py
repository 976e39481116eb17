"""Builds the two demo models (fraud, price) from seeded synthetic data and exports them for serving.

- `train`: the entry point (`python -m training.train`, `make models`): which models to build, skip or rebuild.
- `trainer`: the steps every model goes through, and the registry of recipes by model name.
- `recipe`: what a recipe is; `fraud` and `price`: one recipe each (model, loss, data size, how it is judged).
- `layers`: the TensorFlow pieces both models are built from; `fit`: the training loop.
- `export`: the SavedModel, its signatures and warm-up file, put in place atomically.
- `evaluate`: scoring through an exported signature, the quality record, latency; `metrics`: the metrics.
- `data`: the seeded event generator; `schemas`: the published JSON Schemas; `runtime`: TensorFlow's set-up.
"""
