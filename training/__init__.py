"""Builds the two demo models (fraud, price) from seeded synthetic data and exports them for serving."""
