"""How the pipelines reach a model: its interface (features, outputs), where its versions live, and the Beam
ModelHandlers that score batches with it."""
